"""The OpenAI-compatible endpoints: chat completions, completions, models, and the `/v1/route`
dry run. Which model answers is the routing service's choice (app/routing/service.py); the
upstream's body comes back untouched, with x-uniroute-* headers saying who answered and why."""
from __future__ import annotations

import time

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from app.api.auth import bearer, require_client_key
from app.api.errors import APIError
from app.api.wire import ChatBody, CompletionBody, RoutingOptions, read_body, validate
from app.costs.billing import bill, record_usage
from app.costs.budget import key_scope
from app.routing.prompts import chat_routing_text, completion_routing_text
from app.routing.service import (
    ROUTER_MODEL,
    Destination,
    expectation,
    parse_router_model,
)
from app.runtime.gateway import Gateway, gateway_of
from models_registry.records import ModelRecord

router = APIRouter(dependencies=[Depends(require_client_key)])


def client_scope(gw: Gateway, request: Request) -> str:
    """The budget guard's scope of a request: its client key's, when keys are configured."""
    return key_scope(bearer(request)) if gw.settings.api_keys else key_scope(None)


async def destination(request: Request, model: str, options: RoutingOptions | None,
                      text: str | None) -> Destination:
    """Where the request goes: routed when `model` is a router name, else the named model.
    `text` is None only for a named model, whose prompt is not read."""
    gw = gateway_of(request)
    limit = gw.settings.max_prompt_chars
    if text is not None and len(text) > limit:
        raise APIError(413, f"the prompt has {len(text)} characters; the limit is {limit}", code="prompt_too_long")
    target = parse_router_model(model, gw.settings)
    if target is None:
        return Destination(None, [gw.routing.named(model)], client_scope(gw, request))
    assert text is not None  # every routed request's prompt is read (see the callers)
    if options is not None:
        target = options.routing_target(gw.settings) or target
    return await gw.routing.destination(target, text, client_scope(gw, request),
                                        options.models if options is not None else None)


def routing_headers(dest: Destination, answered_by: ModelRecord) -> dict[str, str]:
    """The x-uniroute-* headers."""
    error, cost, cluster = expectation(dest, answered_by)
    return {
        "x-uniroute-model": answered_by.name,
        "x-uniroute-cluster": str(cluster),
        "x-uniroute-predicted-error": f"{error:.4f}",
        "x-uniroute-expected-cost": f"{cost:.6g}",
    }


async def proxy(request: Request, route: str, path: str, body: dict, dest: Destination, stream: bool,
                started: float) -> Response:
    """Forward to the destination's models in order and relay the answer."""
    gw = gateway_of(request)
    upstream_body = {k: v for k, v in body.items() if k != "uniroute"}
    answer = await gw.forwarder.send(path, upstream_body, dest.records, dict(request.headers), stream)
    record = answer.record
    metrics = gw.metrics
    if dest.decision is not None:
        metrics.decisions.labels(record.name).inc()
        if record.name != dest.decision.model:
            metrics.fallbacks.inc()
    if answer.attempts == 1:
        metrics.overhead_seconds.observe(max(0.0, time.perf_counter() - started - answer.upstream_seconds))
    headers = routing_headers(dest, record)
    metrics.requests.labels(route, record.name, str(answer.status)).inc()
    table = gw.routing.require_ready().table
    if answer.stream is not None:
        await bill(gw.budget, table, dest, record, None)
        return StreamingResponse(answer.stream, media_type="text/event-stream",
                                 headers={**headers, "cache-control": "no-cache"})
    usage = answer.json.get("usage") if isinstance(answer.json, dict) else None
    await bill(gw.budget, table, dest, record, record_usage(metrics, table, dest, record, usage))
    return Response(answer.body, status_code=answer.status, media_type="application/json", headers=headers)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    started = time.perf_counter()
    body = await read_body(request)
    parsed = validate(ChatBody, body)
    text = chat_routing_text([m.model_dump() for m in parsed.messages])
    dest = await destination(request, parsed.model, parsed.uniroute, text)
    return await proxy(request, "chat", "/chat/completions", body, dest, parsed.stream, started)


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    started = time.perf_counter()
    body = await read_body(request)
    parsed = validate(CompletionBody, body)
    routed = parse_router_model(parsed.model, gateway_of(request).settings) is not None
    text = completion_routing_text(parsed.prompt) if routed else None
    dest = await destination(request, parsed.model, parsed.uniroute, text)
    return await proxy(request, "completions", "/completions", body, dest, parsed.stream, started)


@router.post("/v1/route")
async def route_dry_run(request: Request) -> JSONResponse:
    """The decision a chat (or completions) request would get, calling no upstream."""
    body = await read_body(request)
    if "messages" in body:
        parsed = validate(ChatBody, body)
        text = chat_routing_text([m.model_dump() for m in parsed.messages])
    else:
        parsed = validate(CompletionBody, body)
        text = completion_routing_text(parsed.prompt)
    dest = await destination(request, parsed.model, parsed.uniroute, text)
    if dest.decision is None:
        record = dest.records[0]
        error, cost, _ = expectation(dest, record)
        return JSONResponse({
            "model": record.name, "cluster": -1, "predicted_error": None if np.isnan(error) else error,
            "expected_cost": cost, "cost_weight": None, "candidates": [], "target": None, "budget_guard": None,
        })
    return JSONResponse({**dest.decision.to_dict(),
                         "budget_guard": dest.guard.to_dict() if dest.guard else None})


@router.get("/v1/models")
async def list_models(request: Request) -> JSONResponse:
    """The router names, then the registered models that can be called by name."""
    gw = gateway_of(request)
    now = int(time.time())
    data = [{"id": name, "object": "model", "created": now, "owned_by": "uniroute"}
            for name in [ROUTER_MODEL, *(f"{ROUTER_MODEL}:{p}" for p in gw.settings.policies)]]
    for record in sorted(gw.registry.snapshot().values(), key=lambda r: r.name):
        if record.enabled:
            data.append({"id": record.name, "object": "model", "created": int(record.created_at),
                         "owned_by": "uniroute-registry"})
    return JSONResponse({"object": "list", "data": data})
