"""`uniroute_requests_total`: every response of the OpenAI endpoints (`/v1/...`), whoever answered
it: the upstream, the gateway's error handlers, the body limit, or the last-resort 500. The label
`model` is the model that answered (`none` when none did); `status` the HTTP status, or `cut` for a
stream the upstream cut. The endpoints mark both on the request's state (`MODEL_STATE`,
`OUTCOME_STATE`)."""
from __future__ import annotations

import asyncio

from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import stopped_response

MODEL_STATE = "uniroute_model"
OUTCOME_STATE = "uniroute_outcome"

_ROUTES = {"/v1/chat/completions": "chat", "/v1/completions": "completions", "/v1/responses": "responses",
           "/v1/embeddings": "embeddings", "/v1/route": "route", "/v1/models": "models"}


def route_label(path: str) -> str:
    """The `route` label of an OpenAI endpoint's path. A stored response's retrieve, delete, input
    items and cancel (`/v1/responses/{id}...`) are `stored_responses`: apart from `responses`,
    whose latencies are answers being made, and from `other`, the paths the gateway does not serve."""
    if path.startswith("/v1/models/"):
        return "models"
    if path.startswith("/v1/responses/"):
        return "stored_responses"
    return _ROUTES.get(path, "other")


def count_request(app_state: State, scope: Scope, status: int) -> None:
    """Count one answered request of `scope` (nothing before the gateway has started)."""
    gateway = getattr(app_state, "gateway", None)
    if gateway is None:
        return
    state = scope.get("state") or {}
    metrics = gateway.metrics
    metrics.child(metrics.requests, route_label(scope["path"]), state.get(MODEL_STATE, "none"),
                  state.get(OUTCOME_STATE, str(status))).inc()


class RequestCounter:
    """ASGI middleware counting the OpenAI endpoints' responses (the routed POSTs count
    themselves: app/api/hot.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        status = 500  # what the server answers when the app raises before starting a response
        started = False

        async def watching(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, watching)
        except asyncio.CancelledError:
            # The stopping server ended the request (its drain is over; a client hanging up is
            # handled below): an OpenAI-style 503 rather than the server's plain-text 500.
            if started:
                raise
            await stopped_response()(scope, receive, watching)
        finally:
            count_request(scope["app"].state, scope, status)
