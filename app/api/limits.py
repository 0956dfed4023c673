"""The request body limit (`max_body_bytes`): a 413 for a body over it, by its Content-Length or
by what actually arrives."""
from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import APIError
from app.errors import error_body


def declared_too_large(scope: Scope, max_bytes: int) -> bool:
    """Whether the request's Content-Length is over `max_bytes`."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.isdigit() and int(value) > max_bytes
    return False


def too_large_message(max_bytes: int) -> str:
    return f"the request body is larger than the limit of {max_bytes} bytes"


def body_too_large(max_bytes: int) -> APIError:
    """The error for a body over `max_bytes`."""
    return APIError(413, too_large_message(max_bytes), code="body_too_large")


class BodyLimit:
    """ASGI middleware applying the limit to every request (the routed POSTs apply it themselves:
    app/api/hot.py)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if declared_too_large(scope, self.max_bytes):
            await self._reject(send)
            return
        seen = 0

        async def limited() -> Message:
            # Raised inside the handler's body read, so the app's error handlers answer it.
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise body_too_large(self.max_bytes)
            return message

        await self.app(scope, limited, send)

    async def _reject(self, send: Send) -> None:
        body = orjson.dumps(error_body(too_large_message(self.max_bytes), "invalid_request_error", code="body_too_large"))
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
