"""The FastAPI app: `create_app(settings)` wires the gateway, its endpoints and its error format."""
from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api import admin, openai, state
from app.api.counting import RequestCounter
from app.api.errors import install_error_handlers
from app.api.hot import GatewayApp
from app.api.limits import BodyLimit
from app.runtime.config import Settings
from app.runtime.gateway import Gateway, gateway_of
from app.runtime.metrics import exposition, multiprocess_dir
from models_registry.base import RegistryUnavailable

log = logging.getLogger("uniroute")


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
    app = GatewayApp(title="uniroute", version="0.1.0", lifespan=lifespan,
                     telemetry={"tracing": False, "metrics": False, "logs": False})
    app.hot_endpoints = openai.HOT_ENDPOINTS
    app.max_body_bytes = settings.max_body_bytes
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
        if gw.load_error:
            return JSONResponse({"status": "failed", "error": gw.load_error}, status_code=503)
        return JSONResponse({"status": "loading", "error": None, "waiting_for": gw.waiting}, status_code=503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Prometheus exposition of the gateway's metrics."""
        gw = gateway_of(request)
        gw.health.cooling()  # expire finished cooldowns so the gauge is current
        # Read here rather than on each change: the registry (models_registry) knows no metrics.
        gw.metrics.registry_available.set(gw.registry.available)
        await gw.show_budget()
        running = None
        if multiprocess_dir() is not None:  # the job runs in one of the workers: ask the registry
            try:
                running = {job.model for job in await gw.registry.list_jobs() if job.state == "running"}
            except RegistryUnavailable:
                pass
        return Response(exposition(gw.metrics, running), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestCounter)  # outermost: counts the body limit's answers too
    return app
