"""The routed endpoints' short way in: their POSTs are served straight from the ASGI call.

FastAPI's way to an endpoint (route matching over every route, dependency injection, its
exception middlewares) cost about a fifth of the gateway's CPU per routed request
(docs/benchmarks.md). The FastAPI routes stay registered: they describe the endpoints in the
OpenAPI schema and answer what this does not take (other methods, a trailing slash, a
`root_path`). What a client sees is the same: the client key is checked first, and the
gateway's errors get the very responses the app's error handlers give.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.auth import require_client_key
from app.api.errors import APIError, known_error_response
from app.errors import GatewayError

Endpoint = Callable[[Request], Awaitable[Response]]


class HotRoutes:
    """ASGI middleware serving `POST <path>` with `endpoints[path]`, everything else with `app`."""

    def __init__(self, app: ASGIApp, endpoints: Mapping[str, Endpoint]) -> None:
        self.app = app
        self.endpoints = dict(endpoints)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = (self.endpoints.get(scope["path"])
                    if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path") else None)
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            await require_client_key(request)
            response = await endpoint(request)
        except (APIError, GatewayError) as exc:
            # Anything else goes on to the server-error handler, as from a FastAPI route.
            response = known_error_response(exc)
        await response(scope, receive, send)
