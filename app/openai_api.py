"""The OpenAI-compatible endpoints: chat completions, completions, models, and the `/v1/route` dry run.

Routing is asked for with the model name `uniroute` (the configured cost weight),
`uniroute:<cost weight>`, `uniroute:budget=<cost per request>`, `uniroute:quality=<fraction>` or
`uniroute:<policy>` (app/targets.py), and per request with `"uniroute": {"cost_weight" | "budget" |
"quality" | "policy", "models"}` in the body. Any other registered model name goes straight to
that model. Fields the gateway does not read travel to the upstream untouched; the upstream's
body comes back untouched.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from app.auth import bearer, require_client_key
from app.budget import GuardState, key_scope, planned_cost
from app.config import KINDS, Settings, TargetFields
from app.errors import APIError
from app.gateway import Gateway, gateway_of
from app.prompts import chat_routing_text, completion_routing_text
from app.routing import Candidate, Decision, Router, estimate_tokens
from app.targets import Resolution, RoutingTarget, resolve
from models_registry.records import ModelRecord
from router_core.confidence import error_interval

ROUTER_MODEL = "uniroute"

router = APIRouter(dependencies=[Depends(require_client_key)])


class RoutingOptions(TargetFields):
    """The body's `uniroute` field: at most one target (cost_weight, budget, quality, or a named
    policy), and the models allowed."""

    policy: str | None = None
    models: list[str] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _policy_alone(self) -> "RoutingOptions":
        if self.policy is not None and self.target() is not None:
            raise ValueError(f"give one target, not policy and {self.target().kind}")
        return self


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
    """Where a request goes: a routing decision, or a model named by the client; the routing
    target it was resolved from, the budget guard's view, and the guard scope it is billed to."""

    decision: Decision | None
    records: list[ModelRecord]
    scope: str
    resolution: Resolution | None = None
    guard: GuardState | None = None


def parse_router_model(name: str, settings: Settings) -> RoutingTarget | None:
    """The target a router model name asks for (`uniroute`, `uniroute:<λ>`, `uniroute:budget=<x>`,
    `uniroute:quality=<x>`, `uniroute:<policy>`); None for any other name."""
    if name == ROUTER_MODEL:
        return RoutingTarget("cost_weight", settings.default_cost_weight)
    if not name.startswith(ROUTER_MODEL + ":"):
        return None
    text = name[len(ROUTER_MODEL) + 1:]
    if text in settings.policies:
        return settings.policies[text].target(text)
    kind, sep, value = text.partition("=")
    if not sep:
        kind, value = "cost_weight", text
    usage = (f"after 'uniroute:' give a cost weight (a number), budget=<cost per request>, "
             f"quality=<fraction of the best model's score> or a policy ({', '.join(settings.policies) or 'none'})")
    if kind not in KINDS:
        raise APIError(400, f"model {name!r}: {usage}", param="model", code="invalid_target")
    try:
        number = float(value)
    except ValueError:
        code = "unknown_policy" if not sep else f"invalid_{kind}"
        raise APIError(400, f"model {name!r}: {value!r} is not a number nor a policy; {usage}", param="model",
                       code=code) from None
    try:
        return TargetFields.model_validate({kind: number}).target()
    except ValidationError as exc:
        raise APIError(400, f"model {name!r}: {kind} {exc.errors()[0]['msg'].lower()}", param="model",
                       code=f"invalid_{kind}") from None


def body_target(options: RoutingOptions | None, settings: Settings) -> RoutingTarget | None:
    """The target the body's `uniroute` field asks for, if any."""
    if options is None:
        return None
    if options.policy is not None:
        policy = settings.policies.get(options.policy)
        if policy is None:
            raise APIError(400, f"uniroute.policy: no policy {options.policy!r}; the policies are: "
                                f"{', '.join(settings.policies) or 'none'}", param="uniroute.policy",
                           code="unknown_policy")
        return policy.target(options.policy)
    return options.target()


def watch_drift(gw: Gateway, text: str) -> None:
    """Count a routed prompt as near or far from the router's clusters."""
    router = gw.router
    distance = router.distance(text) if router is not None and router.drift is not None else None
    if distance is None:
        return
    far = bool(router.drift.observe(np.array([distance]))[0])
    gw.metrics.drift_prompts.labels("true" if far else "false").inc()
    gw.metrics.drift_share.set(router.drift.snapshot()["far_share"])


def client_scope(gw: Gateway, request: Request) -> str:
    """The budget guard's scope of a request: its client key's, when keys are configured."""
    return key_scope(bearer(request)) if gw.settings.api_keys else key_scope(None)


async def choose(gw: Gateway, model: str, options: RoutingOptions | None, text: str | None,
                 scope: str) -> Target:
    """Route the prompt, or look up the named model. `text` is None only for a named model, whose
    prompt is not read."""
    target = parse_router_model(model, gw.settings)
    if target is None:
        record = gw.registry.snapshot().get(model)
        if record is None or not record.enabled:
            raise APIError(404, f"The model `{model}` does not exist or is not enabled", param="model",
                           code="model_not_found")
        return Target(None, [record], scope)
    target = body_target(options, gw.settings) or target
    allowed = None
    if options is not None and options.models is not None:
        unknown = sorted(set(options.models) - set(gw.registry.snapshot()))
        if unknown:
            raise APIError(400, f"uniroute.models names unregistered models: {', '.join(unknown)}",
                           param="uniroute.models", code="model_not_found")
        allowed = set(options.models)
    _, table = gw.require_ready()
    assert text is not None  # every routed request's prompt is read (see the callers)
    if not table.records:
        raise APIError(503, "no routable model: register and profile a model first", code="no_routable_model")
    start = time.perf_counter()
    curve = table.calibration(frozenset(allowed) if allowed is not None else None)
    try:
        resolution = resolve(target, curve)
    except ValueError as exc:
        raise APIError(503, str(exc), code="not_calibrated") from None
    if not resolution.met:
        gw.metrics.target_unmet.labels(target.kind).inc()
    weight = resolution.cost_weight
    guard = None
    if gw.budget is not None:
        guard = await gw.budget.state(scope, table.calibration())
        weight = max(weight, guard.cost_weight)
    weights = (await gw.weights([text]))[0]
    watch_drift(gw, text)
    tokens = estimate_tokens(len(text))
    decision = Router.decide(weights, table, weight, tokens, allowed, gw.health.cooling())
    if decision is None:  # every allowed model is cooling down: better to try them than to refuse
        decision = Router.decide(weights, table, weight, tokens, allowed)
    gw.metrics.routing_seconds.observe(time.perf_counter() - start)
    if decision is None:
        raise APIError(503, "no routable model among the allowed models", code="no_routable_model")
    by_name = {r.name: r for r in table.records}
    fallbacks = decision.candidates[: 1 + gw.settings.max_fallbacks]
    return Target(decision, [by_name[c.model] for c in fallbacks], scope, resolution, guard)


def expectation(target: Target, answered_by: ModelRecord) -> tuple[float, float, int]:
    """(predicted error, expected cost, cluster) of the answering model. A named model was not
    routed: its cluster is -1 and its predicted error is its overall error on the representative set."""
    if target.decision is None:
        profile = answered_by.profile
        error = 1.0 - profile.accuracy if profile else float("nan")
        cost = answered_by.cost.expected(0, answered_by.profile.avg_output_tokens if profile else 0)
        return error, cost, -1
    cand = next(c for c in target.decision.candidates if c.model == answered_by.name)
    return cand.predicted_error, cand.expected_cost, target.decision.cluster


def routing_headers(target: Target, answered_by: ModelRecord) -> dict[str, str]:
    """The x-uniroute-* headers."""
    error, cost, cluster = expectation(target, answered_by)
    return {
        "x-uniroute-model": answered_by.name,
        "x-uniroute-cluster": str(cluster),
        "x-uniroute-predicted-error": f"{error:.4f}",
        "x-uniroute-expected-cost": f"{cost:.6g}",
    }


def record_usage(gw: Gateway, target: Target, record: ModelRecord, usage: dict | None) -> float | None:
    """Tokens, cost, and cost saved against the most accurate routable model; the cost, or None
    when the answer reports no usable token counts."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
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
    return spent


async def bill(gw: Gateway, target: Target, record: ModelRecord, spent: float | None) -> None:
    """Count an answer against the budget guard. Its planned cost is the calibration curve's
    expected cost per request at the λ it was routed with; a named model's plan is what it cost.
    An answer without usage (a stream) counts at its expected cost."""
    if gw.budget is None:
        return
    expected = expectation(target, record)[1]
    spend = expected if spent is None else spent
    planned = None
    if target.decision is not None:
        planned = planned_cost(gw.table.calibration(), target.decision.cost_weight)
    await gw.budget.record(target.scope, spend, spend if planned is None else planned)


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
    headers = routing_headers(target, record)
    gw.metrics.requests.labels(route, record.name, str(answer.status)).inc()
    if answer.stream is not None:
        await bill(gw, target, record, None)
        return StreamingResponse(answer.stream, media_type="text/event-stream",
                                 headers={**headers, "cache-control": "no-cache"})
    spent = record_usage(gw, target, record, answer.json.get("usage") if isinstance(answer.json, dict) else None)
    await bill(gw, target, record, spent)
    return Response(answer.body, status_code=answer.status, media_type="application/json", headers=headers)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    started = time.perf_counter()
    body = await read_body(request)
    parsed = validate(ChatBody, body)
    messages = [m.model_dump() for m in parsed.messages]
    text = chat_routing_text(messages)
    check_prompt_size(request, text)
    gw = gateway_of(request)
    target = await choose(gw, parsed.model, parsed.uniroute, text, client_scope(gw, request))
    return await proxy(request, "chat", "/chat/completions", body, target, parsed.stream, started)


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    started = time.perf_counter()
    body = await read_body(request)
    parsed = validate(CompletionBody, body)
    gw = gateway_of(request)
    routed = parse_router_model(parsed.model, gw.settings) is not None
    text = completion_routing_text(parsed.prompt) if routed else None
    if text is not None:
        check_prompt_size(request, text)
    target = await choose(gw, parsed.model, parsed.uniroute, text, client_scope(gw, request))
    return await proxy(request, "completions", "/completions", body, target, parsed.stream, started)


def check_prompt_size(request: Request, text: str) -> None:
    limit = gateway_of(request).settings.max_prompt_chars
    if len(text) > limit:
        raise APIError(413, f"the prompt has {len(text)} characters; the limit is {limit}",
                       code="prompt_too_long")


def candidates_json(candidates: list[Candidate], prior: float) -> list[dict]:
    """Ranked candidates with the support of their predicted error (labelled representative
    prompts behind it) and its 90% interval (router_core.confidence)."""
    lo, hi = error_interval(np.array([c.predicted_error for c in candidates]),
                            np.array([c.support for c in candidates]), prior)
    return [{"model": c.model, "predicted_error": c.predicted_error, "expected_cost": c.expected_cost,
             "support": c.support, "error_interval": [float(a), float(b)]}
            for c, a, b in zip(candidates, lo, hi)]


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
    target = await choose(gw, parsed.model, parsed.uniroute, text, client_scope(gw, request))
    if target.decision is None:
        record = target.records[0]
        error, cost, _ = expectation(target, record)
        return JSONResponse({
            "model": record.name, "cluster": -1, "predicted_error": None if np.isnan(error) else error,
            "expected_cost": cost,
            "cost_weight": None, "candidates": [], "target": None, "budget_guard": None,
        })
    d = target.decision
    return JSONResponse({
        "model": d.model, "cluster": d.cluster, "predicted_error": d.predicted_error,
        "expected_cost": d.expected_cost, "cost_weight": d.cost_weight,
        "candidates": candidates_json(d.candidates, gw.repset.prior),
        "target": target.resolution.to_dict() if target.resolution else None,
        "budget_guard": target.guard.to_dict() if target.guard else None,
    })


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
