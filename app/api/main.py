"""The FastAPI app: `create_app(settings)` wires the gateway, its endpoints and its error format."""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import admin, openai, state
from app.api.errors import APIError, install_error_handlers
from app.errors import error_body
from app.runtime.config import Settings
from app.runtime.gateway import Gateway, gateway_of

log = logging.getLogger("uniroute")


class BodyLimit:
    """413 for a request body over the limit, by its Content-Length or by what actually arrives."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
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
                    raise APIError(413, self._message(), code="body_too_large")
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return f"the request body is larger than the limit of {self.max_bytes} bytes"

    async def _reject(self, send: Send) -> None:
        body = orjson.dumps(error_body(self._message(), "invalid_request_error", code="body_too_large"))
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def warn_about_open_doors(settings: Settings) -> None:
    """Say loudly at start what is not protected."""
    if not settings.api_keys:
        log.warning("=" * 70)
        log.warning("NO CLIENT API KEYS CONFIGURED: the gateway is OPEN to anyone who reaches it.")
        log.warning("Set UNIROUTE_API_KEYS (comma-separated) or api_keys in the config file.")
        log.warning("=" * 70)
    if not settings.admin_key:
        log.warning("No admin key configured (UNIROUTE_ADMIN_KEY): the admin API is OFF.")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The gateway app; `settings` default to the environment and config file."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        gateway = Gateway(settings)
        app.state.gateway = gateway
        warn_about_open_doors(settings)
        await gateway.start()
        try:
            yield
        finally:
            await gateway.close()

    app = FastAPI(title="uniroute", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(openai.router)
    app.include_router(admin.router)
    app.include_router(state.router)

    @app.get("/healthz")
    async def healthz() -> dict:
        """Alive: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        """Ready once the embedding model, the router state and the representative set are loaded."""
        gw = gateway_of(request)
        if gw.ready.is_set():
            return JSONResponse({"status": "ready", "routable_models": len(gw.router.table.models),
                                 "registry_available": gw.registry.available})
        status = "failed" if gw.load_error else "loading"
        return JSONResponse({"status": status, "error": gw.load_error}, status_code=503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Prometheus exposition of the gateway's metrics."""
        gw = gateway_of(request)
        gw.health.cooling()  # expire finished cooldowns so the gauge is current
        return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
