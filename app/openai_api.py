"""The OpenAI-compatible endpoints: chat completions, completions, models, and the `/v1/route` dry run.

Routing is asked for with the model name `uniroute` (the configured cost weight) or
`uniroute:<cost weight>`, and per request with `"uniroute": {"cost_weight", "models"}` in the
body. Any other registered model name goes straight to that model. Fields the gateway does not
read travel to the upstream untouched; the upstream's body comes back untouched.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from app.auth import require_client_key
from app.errors import APIError
from app.gateway import Gateway
from app.prompts import chat_routing_text, completion_routing_text
from app.routing import Candidate, Decision, Router, estimate_tokens
from models_registry.records import ModelRecord

ROUTER_MODEL = "uniroute"

router = APIRouter(dependencies=[Depends(require_client_key)])


class RoutingOptions(BaseModel):
    """The body's `uniroute` field."""

    model_config = ConfigDict(extra="forbid")
    cost_weight: float | None = Field(None, ge=0, allow_inf_nan=False)
    models: list[str] | None = Field(None, min_length=1)


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list | None = None


class ChatBody(BaseModel):
    """What the gateway reads of a chat request; everything else passes through."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: StrictBool = False
    uniroute: RoutingOptions | None = None


class CompletionBody(BaseModel):
    """What the gateway reads of a completions request; everything else passes through."""

    model_config = ConfigDict(extra="allow")
    model: str
    prompt: str | list
    stream: StrictBool = False
    uniroute: RoutingOptions | None = None


def gateway_of(request: Request) -> Gateway:
    return request.app.state.gateway


async def read_body(request: Request) -> dict:
    """The request's JSON object, or a 400 saying what is wrong with it."""
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise APIError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    return body


def validate(model: type[BaseModel], body: dict) -> BaseModel:
    """Validate the fields the gateway reads; errors name the offending parameter."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise APIError(400, f"{param}: {first['msg']}" if param else first["msg"], param=param,
                       code="invalid_value") from None


@dataclass(frozen=True)
class Target:
    """Where a request goes: a routing decision, or a model named by the client."""

    decision: Decision | None
    records: list[ModelRecord]


def parse_router_model(name: str, default_weight: float) -> float | None:
    """The cost weight a `uniroute[:λ]` model name asks for; None for any other name."""
    if name == ROUTER_MODEL:
        return default_weight
    if not name.startswith(ROUTER_MODEL + ":"):
        return None
    text = name[len(ROUTER_MODEL) + 1:]
    try:
        weight = float(text)
    except ValueError:
        raise APIError(400, f"model {name!r}: the cost weight after 'uniroute:' must be a number",
                       param="model", code="invalid_cost_weight") from None
    if not math.isfinite(weight) or weight < 0:
        raise APIError(400, f"model {name!r}: the cost weight must be a finite number >= 0",
                       param="model", code="invalid_cost_weight")
    return weight


async def choose(gw: Gateway, model: str, options: RoutingOptions | None, text: str | None) -> Target:
    """Route the prompt, or look up the named model. `text` is None where the prompt can't be embedded."""
    weight = parse_router_model(model, gw.settings.default_cost_weight)
    if weight is None:
        record = gw.registry.snapshot().get(model)
        if record is None or not record.enabled:
            raise APIError(404, f"The model `{model}` does not exist or is not enabled", param="model",
                           code="model_not_found")
        return Target(None, [record])
    if options is not None and options.cost_weight is not None:
        weight = options.cost_weight
    allowed = None
    if options is not None and options.models is not None:
        unknown = sorted(set(options.models) - set(gw.registry.snapshot()))
        if unknown:
            raise APIError(400, f"uniroute.models names unregistered models: {', '.join(unknown)}",
                           param="uniroute.models", code="model_not_found")
        allowed = set(options.models)
    _, table = gw.require_ready()
    if text is None:
        text = ""
    if not table.records:
        raise APIError(503, "no routable model: register and profile a model first", code="no_routable_model")
    start = time.perf_counter()
    weights = (await gw.weights([text]))[0]
    tokens = estimate_tokens(len(text))
    decision = Router.decide(weights, table, weight, tokens, allowed, gw.health.cooling())
    if decision is None:  # every allowed model is cooling down: better to try them than to refuse
        decision = Router.decide(weights, table, weight, tokens, allowed)
    gw.metrics.routing_seconds.observe(time.perf_counter() - start)
    if decision is None:
        raise APIError(503, "no routable model among the allowed models", code="no_routable_model")
    by_name = {r.name: r for r in table.records}
    fallbacks = decision.candidates[: 1 + gw.settings.max_fallbacks]
    return Target(decision, [by_name[c.model] for c in fallbacks])


def routing_headers(target: Target, answered_by: ModelRecord, gw: Gateway) -> dict[str, str]:
    """The x-uniroute-* headers. A named model was not routed: its cluster is -1 and its
    predicted error is its overall error on the representative set."""
    if target.decision is None:
        profile = answered_by.profile
        error = 1.0 - profile.accuracy if profile else float("nan")
        cost = answered_by.cost.expected(0, answered_by.profile.avg_output_tokens if profile else 0)
        cluster = -1
    else:
        cand = next(c for c in target.decision.candidates if c.model == answered_by.name)
        error, cost, cluster = cand.predicted_error, cand.expected_cost, target.decision.cluster
    return {
        "x-uniroute-model": answered_by.name,
        "x-uniroute-cluster": str(cluster),
        "x-uniroute-predicted-error": f"{error:.4f}",
        "x-uniroute-expected-cost": f"{cost:.6g}",
    }


def record_usage(gw: Gateway, target: Target, record: ModelRecord, usage: dict | None) -> None:
    """Tokens, cost, and cost saved against the most accurate routable model."""
    if not isinstance(usage, dict):
        return
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return
    m = gw.metrics
    m.tokens.labels(record.name, "prompt").inc(prompt)
    m.tokens.labels(record.name, "completion").inc(completion)
    spent = record.cost.expected(prompt, completion)
    m.cost.labels(record.name).inc(spent)
    table = gw.table
    if target.decision is not None and table.records:
        best = table.records[int(table.accuracy.argmax())]
        saved = best.cost.expected(prompt, completion) - spent
        if saved > 0:
            m.cost_saved.inc(saved)


async def proxy(request: Request, route: str, path: str, body: dict, target: Target, stream: bool,
                started: float) -> Response:
    """Forward to the target's models in order and relay the answer."""
    gw = gateway_of(request)
    upstream_body = {k: v for k, v in body.items() if k != "uniroute"}
    answer = await gw.forwarder.send(path, upstream_body, target.records, dict(request.headers), stream)
    record = answer.record
    if target.decision is not None:
        gw.metrics.decisions.labels(record.name).inc()
        if record.name != target.decision.model:
            gw.metrics.fallbacks.inc()
    if answer.attempts == 1:
        gw.metrics.overhead_seconds.observe(max(0.0, time.perf_counter() - started - answer.upstream_seconds))
    headers = routing_headers(target, record, gw)
    gw.metrics.requests.labels(route, record.name, str(answer.status)).inc()
    if answer.stream is not None:
        return StreamingResponse(answer.stream, media_type="text/event-stream",
                                 headers={**headers, "cache-control": "no-cache"})
    record_usage(gw, target, record, answer.json.get("usage") if isinstance(answer.json, dict) else None)
    return Response(answer.body, status_code=answer.status, media_type="application/json", headers=headers)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    started = time.perf_counter()
    body = await read_body(request)
    parsed = validate(ChatBody, body)
    messages = [m.model_dump() for m in parsed.messages]
    text = chat_routing_text(messages)
    check_prompt_size(request, text)
    target = await choose(gateway_of(request), parsed.model, parsed.uniroute, text)
    return await proxy(request, "chat", "/chat/completions", body, target, parsed.stream, started)


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    started = time.perf_counter()
    body = await read_body(request)
    parsed = validate(CompletionBody, body)
    gw = gateway_of(request)
    routed = parse_router_model(parsed.model, gw.settings.default_cost_weight) is not None
    text = completion_routing_text(parsed.prompt) if routed else None
    if text is not None:
        check_prompt_size(request, text)
    target = await choose(gw, parsed.model, parsed.uniroute, text)
    return await proxy(request, "completions", "/completions", body, target, parsed.stream, started)


def check_prompt_size(request: Request, text: str) -> None:
    limit = gateway_of(request).settings.max_prompt_chars
    if len(text) > limit:
        raise APIError(413, f"the prompt has {len(text)} characters; the limit is {limit}",
                       code="prompt_too_long")


def candidate_json(c: Candidate) -> dict:
    return {"model": c.model, "predicted_error": c.predicted_error, "expected_cost": c.expected_cost}


@router.post("/v1/route")
async def route_dry_run(request: Request) -> JSONResponse:
    """The decision a chat (or completions) request would get, calling no upstream."""
    body = await read_body(request)
    gw = gateway_of(request)
    if "messages" in body:
        parsed = validate(ChatBody, body)
        text = chat_routing_text([m.model_dump() for m in parsed.messages])
    else:
        parsed = validate(CompletionBody, body)
        text = completion_routing_text(parsed.prompt)
    check_prompt_size(request, text)
    target = await choose(gw, parsed.model, parsed.uniroute, text)
    if target.decision is None:
        record = target.records[0]
        headers = routing_headers(target, record, gw)
        return JSONResponse({
            "model": record.name, "cluster": -1,
            "predicted_error": float(headers["x-uniroute-predicted-error"]),
            "expected_cost": float(headers["x-uniroute-expected-cost"]),
            "cost_weight": None, "candidates": [],
        })
    d = target.decision
    return JSONResponse({
        "model": d.model, "cluster": d.cluster, "predicted_error": d.predicted_error,
        "expected_cost": d.expected_cost, "cost_weight": d.cost_weight,
        "candidates": [candidate_json(c) for c in d.candidates],
    })


@router.get("/v1/models")
async def list_models(request: Request) -> JSONResponse:
    """The router names, then the registered models that can be called by name."""
    gw = gateway_of(request)
    now = int(time.time())
    data = [{"id": ROUTER_MODEL, "object": "model", "created": now, "owned_by": "uniroute"}]
    for record in sorted(gw.registry.snapshot().values(), key=lambda r: r.name):
        if record.enabled:
            data.append({"id": record.name, "object": "model", "created": int(record.created_at),
                         "owned_by": "uniroute-registry"})
    return JSONResponse({"object": "list", "data": data})
