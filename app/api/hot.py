"""The routed endpoints' short way in: their POSTs are served straight from the ASGI call.

Each ASGI layer a request crosses costs a few function calls and a wrapped `send` or
`receive`: FastAPI's and Starlette's entry, the server-error middleware, FastAPI's body limit
and telemetry layers, the gateway's request counter and body limit, route matching and
dependency injection. `GatewayApp` serves the routed POSTs itself and does for them, in one
place, what those layers do: the body limit, the client key, the OpenAI-style errors, the
last-resort 500 and the request count. That saved 1.4% of a routed request's instructions,
less than a cProfile run had promised (docs/benchmarks.md). The FastAPI routes stay
registered: they describe the endpoints in the OpenAPI schema and answer what this does not
take (other methods, a trailing slash, a `root_path`), through the middlewares, with the same
answers.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from fastapi import FastAPI
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from app.api.auth import require_client_key
from app.api.counting import OUTCOME_STATE, count_request
from app.api.errors import (
    STOPPED,
    APIError,
    client_closed_response,
    known_error_response,
    stopped_response,
    unexpected_error_response,
)
from app.api.limits import body_too_large, declared_too_large
from app.errors import GatewayError
from app.upstream.forwarding import stream_error_event

Endpoint = Callable[[Request], Awaitable[Response]]


class GatewayApp(FastAPI):
    """FastAPI, with `POST <path>` served by `hot_endpoints[path]` without its middlewares."""

    hot_endpoints: Mapping[str, Endpoint] = {}
    max_body_bytes: int = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = (self.hot_endpoints.get(scope["path"])
                    if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path") else None)
        if endpoint is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        status = 500  # what the client gets when the app fails before answering
        started = False

        async def sending(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            response = await self._answer(endpoint, scope, receive)
            await response(scope, receive, sending)
        except asyncio.CancelledError:
            # The server ends the requests still running once its drain (`drain_s`) is over. A
            # client hanging up is handled below (HangUpWatch): a cancellation reaching here is
            # the server stopping, and the client is told so rather than cut off silently.
            await _stopped(scope, receive, sending, started)
        except Exception as exc:
            if started:
                raise  # mid-stream: the server drops the connection, as for any route
            # The response logs it with its traceback; raised on, the server would log it again.
            await unexpected_error_response(scope["method"], scope["path"], exc)(scope, receive, sending)
        finally:
            count_request(self.state, scope, status)

    async def _answer(self, endpoint: Endpoint, scope: Scope, receive: Receive) -> Response:
        """The endpoint's response, or the response to the client's or the gateway's error."""
        try:
            if declared_too_large(scope, self.max_body_bytes):
                raise body_too_large(self.max_body_bytes)
            replay = _BodyFirst(receive)
            request = Request(scope, replay)
            await require_client_key(request)  # before the body is read, as for a FastAPI route
            replay.body = await _read_body(receive, self.max_body_bytes)
            return await endpoint(request)
        except (APIError, GatewayError) as exc:
            return known_error_response(exc)
        except ClientDisconnect:
            return client_closed_response(scope["method"], scope["path"])


async def _stopped(scope: Scope, receive: Receive, send: Send, started: bool) -> None:
    """End a request the stopping server cancelled: a 503 when nothing was answered yet, else
    (a stream: the only response sent in parts) an error event closing the stream, as a stream
    an upstream cut ends."""
    if not started:
        await stopped_response()(scope, receive, send)
        return
    scope.setdefault("state", {})[OUTCOME_STATE] = "cut"
    await send({"type": "http.response.body", "body": stream_error_event(STOPPED, "service_unavailable"),
                "more_body": False})


async def _read_body(receive: Receive, max_bytes: int) -> bytes:
    """The request's body, a 413 once more than `max_bytes` of it have arrived."""
    chunks = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()  # as Starlette's own body read does
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > max_bytes:
            raise body_too_large(max_bytes)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _BodyFirst:
    """A `receive` that gives the body read beforehand first: the endpoint reads it as usual,
    and what comes after (a disconnect while the upstream thinks or streams) still comes from
    the server."""

    __slots__ = ("receive", "body")

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.body: bytes | None = None

    async def __call__(self) -> Message:
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        return await self.receive()
