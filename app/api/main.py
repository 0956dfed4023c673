"""The FastAPI app: `create_app(settings)` wires the gateway, its endpoints and its error format."""
from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import admin, openai, state
from app.api.errors import APIError, install_error_handlers
from app.api.hot import HotRoutes
from app.errors import error_body
from app.runtime.config import Settings
from app.runtime.gateway import Gateway, gateway_of
from app.runtime.metrics import exposition, multiprocess_dir
from models_registry.base import RegistryUnavailable

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


_ROUTES = {"/v1/chat/completions": "chat", "/v1/completions": "completions", "/v1/responses": "responses",
           "/v1/embeddings": "embeddings", "/v1/route": "route", "/v1/models": "models"}


def route_label(path: str) -> str:
    """The `route` label of an OpenAI endpoint's path."""
    if path.startswith("/v1/models/"):
        return "models"
    return _ROUTES.get(path, "other")


class RequestCounter:
    """Counts every response of the OpenAI endpoints (`/v1/...`) in `uniroute_requests_total`,
    whoever answered it: the upstream, the gateway's error handlers, the body limit, or the
    server's last-resort 500. The label `model` is the model that answered (`none` when none did);
    `status` the HTTP status, or `cut` for a stream the upstream cut (app/api/openai.py marks both
    on the request's state)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        status = 500  # what the server answers when the app raises before starting a response

        async def watching(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watching)
        finally:
            gateway = getattr(scope["app"].state, "gateway", None)
            if gateway is not None:
                state = scope.get("state") or {}
                metrics = gateway.metrics
                metrics.child(metrics.requests, route_label(scope["path"]), state.get(openai.MODEL_STATE, "none"),
                              state.get(openai.OUTCOME_STATE, str(status))).inc()


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

    # FastAPI's own OpenTelemetry hook is off: the gateway's metrics are its Prometheus ones, and the
    # hook looked up the tracer, meter and logger providers on every request (about 3% of a routed
    # request's CPU).
    app = FastAPI(title="uniroute", version="0.1.0", lifespan=lifespan,
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    install_error_handlers(app)
    app.include_router(openai.router)
    app.include_router(admin.router)
    app.include_router(state.router)

    @app.get("/healthz")
    async def healthz() -> dict:
        """Alive: the process answers (`worker`: its process id, one of several under `workers`)."""
        return {"status": "ok", "worker": os.getpid()}

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
        running = None
        if multiprocess_dir() is not None:  # the job runs in one of the workers: ask the registry
            try:
                running = {job.model for job in await gw.registry.list_jobs() if job.state == "running"}
            except RegistryUnavailable:
                pass
        return Response(exposition(gw.metrics, running), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(HotRoutes, endpoints=openai.HOT_ENDPOINTS)  # inside the body limit, which it reads through
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestCounter)  # outermost: counts the body limit's answers too
    return app
