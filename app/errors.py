"""Errors the gateway's parts raise for a client to see, free of HTTP: the edge (app.api.errors)
turns each kind into a status and OpenAI's error format."""
from __future__ import annotations

from typing import Literal

ErrorKind = Literal["invalid", "not_found", "conflict", "too_large", "unavailable", "upstream", "upstream_timeout",
                    "rate_limited"]


class GatewayError(Exception):
    """A failure to report to the client: what kind it is, what happened, and optionally the
    machine-readable `code`, the request `param` at fault, and how many seconds the client should
    wait before asking again (`retry_after`, its Retry-After: an upstream's own, passed on).
    `final`: the gateway already spent its own retries and fallbacks on the request, so a client
    asking again would only repeat them (told as `x-should-retry: false`)."""

    def __init__(self, kind: ErrorKind, message: str, *, code: str | None = None, param: str | None = None,
                 retry_after: float | None = None, final: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.code = code
        self.param = param
        self.retry_after = retry_after
        self.final = final


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    """`{"error": {...}}` as OpenAI sends it (also inside a stream's error event)."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
