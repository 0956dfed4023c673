"""The OpenAI-compatible endpoints: chat completions, completions, responses (and the stored
ones' retrieve, delete, input items and cancel), embeddings, models, and the `/v1/route` dry
run. Which model answers is the routing service's choice (app/routing/service.py); the
upstream's body comes back untouched, with x-uniroute-* headers saying who answered and why."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import quote, urlencode

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from app.api.auth import bearer, require_client_key
from app.api.counting import MODEL_STATE, OUTCOME_STATE
from app.api.errors import APIError
from app.api.event_stream import EventStream
from app.api.hangup import HangUpWatch
from app.api.wire import (
    ChatBody,
    CompletionBody,
    EmbeddingsBody,
    ResponsesBody,
    RoutedBody,
    RoutingOptions,
    kind_of,
    read_body,
    read_routed,
    validate,
)
from app.costs.billing import bill, record_usage
from app.costs.budget import key_scope
from app.errors import GatewayError
from app.routing.conversations import (
    PIN_TTL_S,
    forget_holder,
    held_by,
    holder,
    remember_holder,
)
from app.routing.service import (
    ROUTER_MODEL,
    Destination,
    RequestSize,
    expectation,
    parse_router_model,
)
from app.runtime.gateway import Gateway, gateway_of
from app.upstream.faults import fault_of
from app.upstream.forwarding import UpstreamReply
from app.upstream.streams import asks_usage
from models_registry.base import RegistryUnavailable
from models_registry.records import ModelRecord
from router_core.router import ModelTable

# Where the gateway asks a stream's upstream for its usage chunk when the client did not.
USAGE_PATHS = ("/chat/completions", "/completions")

router = APIRouter(dependencies=[Depends(require_client_key)])


def client_scope(gw: Gateway, request: Request) -> str:
    """The budget guard's scope of a request: its client key's, when keys are configured."""
    return key_scope(bearer(request)) if gw.settings.api_keys else key_scope(None)


async def destination(request: Request, model: str, options: RoutingOptions | None, text: str,
                      size: RequestSize, prompt_param: str) -> Destination:
    """Where the request goes: routed when `model` is a router name, else the named model.
    `text` is the prompt's text as routing reads it, from the body's `prompt_param`; `size` what
    its expected cost is priced by."""
    gw = gateway_of(request)
    target = parse_router_model(model, gw.settings)
    if target is None:
        record = gw.routing.named(model)
        return Destination(None, [record], client_scope(gw, request),
                           expected_cost=gw.routing.expected_cost(record, size))
    limit = gw.settings.max_prompt_chars
    if len(text) > limit:
        raise APIError(413, f"the prompt has {len(text)} characters; the limit is {limit}", param=prompt_param,
                       code="prompt_too_long")
    if options is not None:
        target = options.routing_target(gw.settings) or target
    return await gw.routing.destination(target, text, size, client_scope(gw, request),
                                        options.models if options is not None else None)


def model_header(name: str) -> str:
    """A model's name as its x-uniroute-model header carries it. A name stored before names had to
    be printable ASCII (models_registry/records.py) fits no header as it is: percent-encoded
    UTF-8 rather than a 500 for every answer."""
    return name if name.isascii() and name.isprintable() else quote(name, safe="/")


def routing_headers(dest: Destination, answered_by: ModelRecord) -> dict[str, str]:
    """The x-uniroute-* headers (no predicted error for a named model with no profile yet, as
    `/v1/route` answers null for it)."""
    error, cost, cluster = expectation(dest, answered_by)
    headers = {"x-uniroute-model": model_header(answered_by.name), "x-uniroute-cluster": str(cluster)}
    if not np.isnan(error):
        headers["x-uniroute-predicted-error"] = f"{error:.4f}"
    headers["x-uniroute-expected-cost"] = f"{cost:.6g}"
    return headers


def upstream_body(body: dict, path: str, stream: bool) -> tuple[dict, bool, bool]:
    """The body for the upstream; whether the gateway asked for a stream's usage chunk (the client
    did not: it is read for the bill and not passed on); and whether it added `stream_options`
    to do so (the client sent none: an upstream refusing the field may be asked again without it,
    while a refusal of the client's own `stream_options` is the client's answer)."""
    out = {k: v for k, v in body.items() if k != "uniroute"}
    if "stream" in out and out["stream"] is None:
        del out["stream"]  # null is the default; not every upstream takes it
    if not stream or path not in USAGE_PATHS or asks_usage(body):
        return out, False, False
    options = body.get("stream_options")
    out["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return out, True, options is None


# How long the upstream may think before the gateway watches for the client hanging up (a
# shorter wait leaves little for the client to abandon, and the watch would cost more than it saves).
WATCH_UPSTREAM_AFTER_S = 0.2


async def proxy(request: Request, path: str, body: dict, dest: Destination, stream: bool, started: float) -> Response:
    """Forward to the destination's models in order and relay the answer."""
    gw = gateway_of(request)
    sent, strip_usage, options_added = upstream_body(body, path, stream)
    async with HangUpWatch(request.receive, after_s=WATCH_UPSTREAM_AFTER_S) as watch:
        answer = await gw.forwarder.send(path, sent, dest.records, request.headers, stream, strip_usage,
                                         options_added)
    if watch.gone:
        raise ClientDisconnect()
    record = answer.record
    setattr(request.state, MODEL_STATE, record.name)
    headers = routing_headers(dest, record)
    if answer.request_id:
        headers["x-request-id"] = answer.request_id
    if answer.status >= 400:
        # The client's own mistake, as the upstream answered it: no bill, no routing decision.
        return Response(answer.body, status_code=answer.status, media_type="application/json", headers=headers)
    if fault_of(record.error) is not None:
        await gw.clear_fault(record.name)
    metrics = gw.metrics
    if dest.decision is not None:
        metrics.child(metrics.decisions, record.name).inc()
        if record.name != dest.decision.model:
            metrics.fallbacks.inc()
    table = gw.routing.require_ready().table
    if answer.stream is not None:
        responses_body = body if path == "/responses" else None
        response: Response = EventStream(settled(request, gw, table, dest, answer, responses_body),
                                         media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"})
    else:
        usage = answer.json.get("usage") if isinstance(answer.json, dict) else None
        await bill(gw.budget, table, dest, record, record_usage(metrics, table, dest, record, usage))
        if path == "/responses":
            await remember_holder(gw.registry, body, answer.json, record.name, dest.scope)
        response = Response(answer.body, status_code=answer.status, media_type="application/json", headers=headers)
    metrics.overhead_seconds.observe(max(0.0, time.perf_counter() - started - answer.upstream_seconds))
    return response


async def settled(request: Request, gw: Gateway, table: ModelTable, dest: Destination,
                  answer: UpstreamReply, responses_body: dict | None = None) -> AsyncIterator[bytes]:
    """A stream's bytes; once it has ended, its usage is counted and billed (at the expected cost
    when the upstream reported none), a cut stream is marked for the request counter, and a
    Responses API stream's response is remembered as its model's (`responses_body`: the request)."""
    assert answer.stream is not None and answer.watch is not None
    watch = answer.watch
    booked = False

    async def settle() -> None:
        nonlocal booked
        booked = True
        if watch.cut:
            setattr(request.state, OUTCOME_STATE, "cut")
        spent = record_usage(gw.metrics, table, dest, answer.record, watch.usage)
        # Shielded: a client that hangs up cancels this generator, not its bill.
        await asyncio.shield(bill(gw.budget, table, dest, answer.record, spent))
        if responses_body is not None and not watch.cut:
            await asyncio.shield(remember_holder(gw.registry, responses_body, watch.response, answer.record.name,
                                                 dest.scope))

    try:
        async for chunk in answer.stream:
            if watch.ended and not booked:  # the books are done before the last events go out
                await settle()
            yield chunk
    finally:
        if not booked:
            await settle()


async def request_destination(request: Request, body: dict, read: RoutedBody, responses_api: bool) -> Destination:
    """Where a read request goes (`destination`); a routed Responses API follow-up goes to the
    model holding its conversation (app/routing/conversations.py), and none, routed or not, may
    continue another client key's."""
    gw = gateway_of(request)
    routed = parse_router_model(read.model, gw.settings) is not None
    model, options = read.model, read.options
    if responses_api:
        pin = await holder(gw.registry, body, client_scope(gw, request))
        if pin is not None and routed:
            record = gw.registry.snapshot().get(pin.model)
            if record is None or not record.enabled:
                raise GatewayError("not_found", f"{pin.param} {pin.held} is held by the model `{pin.model}`, which "
                                   "does not exist or is not enabled: the conversation cannot go on with "
                                   "another model", param=pin.param, code="model_not_found")
            model, options, routed = pin.model, None, False
    text = read.routing_text(routed)
    return await destination(request, model, options, text, read.size(text), read.kind.prompt_param)


async def forward(request: Request, kind: type[RoutedBody], path: str) -> Response:
    """Read a request of `kind`, find its destination and relay the upstream's answer."""
    started = time.perf_counter()
    body = await read_body(request)
    read = read_routed(kind, body)
    dest = await request_destination(request, body, read, path == "/responses")
    return await proxy(request, path, body, dest, read.stream, started)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await forward(request, ChatBody, "/chat/completions")


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    return await forward(request, CompletionBody, "/completions")


@router.post("/v1/responses")
async def responses(request: Request) -> Response:
    """The Responses API, routed like chat: the routing text is the instructions and the input."""
    return await forward(request, ResponsesBody, "/responses")


async def holding_model(gw: Gateway, response_id: str, owner: str) -> ModelRecord:
    """The enabled model whose upstream stores the client `owner`'s response `response_id`. A 404
    in OpenAI's words when the gateway knows no such response of `owner`'s or its model is gone;
    503 while the registry (which remembers who holds what) is away."""
    try:
        name = await held_by(gw.registry, response_id, owner)
    except RegistryUnavailable as exc:
        raise APIError(503, f"the registry is unavailable, so the gateway cannot tell which model holds the "
                            f"response {response_id}; try again: {exc}", code="registry_unavailable") from None
    if name is None:
        raise APIError(404, f"the gateway knows no response with id '{response_id}': it knows only the responses "
                            f"it relayed with `store` not false, for {PIN_TTL_S / 86400:g} days",
                       param="response_id", code="response_not_found")
    record = gw.registry.snapshot().get(name)
    if record is None or not record.enabled:
        raise APIError(404, f"the response {response_id} is held by the model `{name}`, which does not exist or "
                            "is not enabled", param="response_id", code="model_not_found")
    return record


def stored_path(request: Request, response_id: str, suffix: str = "") -> str:
    """The upstream path of a request about a stored response: its id escaped (it goes into the
    request line), then `suffix` and the client's query (input items' `limit`, `order`, `after`)."""
    path = f"/responses/{quote(response_id, safe='')}{suffix}"
    query = urlencode(request.query_params.multi_items())
    return f"{path}?{query}" if query else path


async def relay_stored(request: Request, response_id: str, method: str, suffix: str = "") -> Response:
    """Ask the upstream of the model that answered `response_id` (its own key, never the
    client's) and relay its status, body and x-request-id as they are. A deleted response is
    forgotten."""
    gw = gateway_of(request)
    record = await holding_model(gw, response_id, client_scope(gw, request))
    setattr(request.state, MODEL_STATE, record.name)
    answer = await gw.forwarder.ask(method, stored_path(request, response_id, suffix), record, request.headers)
    if method == "DELETE" and answer.status < 400:
        await forget_holder(gw.registry, response_id)
    headers = {"x-uniroute-model": model_header(record.name)}
    if answer.request_id:
        headers["x-request-id"] = answer.request_id
    return Response(answer.body, status_code=answer.status, media_type="application/json", headers=headers)


@router.get("/v1/responses/{response_id}")
async def retrieve_response(response_id: str, request: Request) -> Response:
    """A stored response (`responses.retrieve`), from the model that answered it. `stream=true`
    (a background response's events again) is refused: the gateway relays the JSON only."""
    if request.query_params.get("stream", "false").lower() != "false":
        raise APIError(400, "stream=true is not supported by the gateway for a stored response: retrieve it "
                            "without `stream`", param="stream", code="unsupported_parameter")
    return await relay_stored(request, response_id, "GET")


@router.delete("/v1/responses/{response_id}")
async def delete_response(response_id: str, request: Request) -> Response:
    """Delete a stored response at the model that answered it (`responses.delete`)."""
    return await relay_stored(request, response_id, "DELETE")


@router.get("/v1/responses/{response_id}/input_items")
async def list_input_items(response_id: str, request: Request) -> Response:
    """The input items of a stored response (`responses.input_items.list`), paged by the upstream."""
    return await relay_stored(request, response_id, "GET", "/input_items")


@router.post("/v1/responses/{response_id}/cancel")
async def cancel_response(response_id: str, request: Request) -> Response:
    """Cancel a background response at the model running it (`responses.cancel`)."""
    return await relay_stored(request, response_id, "POST", "/cancel")


def embeddings_record(gw: Gateway, model: str) -> ModelRecord:
    """The model an embeddings request goes to: a registered model it names, else the configured
    `embeddings_model` (asked for by its name or a router name)."""
    config = gw.settings.embeddings_model
    routed = parse_router_model(model, gw.settings) is not None
    if config is not None and (model == config.name or routed):
        return ModelRecord.new(name=config.name, base_url=config.base_url,
                               upstream_model=config.upstream_model or config.name,
                               api_key_env=config.api_key_env, cost=config.cost.to_price())
    record = gw.registry.snapshot().get(model)
    if record is not None and record.enabled:
        return record
    served = f"the embeddings model is `{config.name}`" if config else "no embeddings_model is configured"
    if routed:
        raise APIError(400, f"embeddings are not routed and {served}", param="model", code="no_embeddings_model")
    raise APIError(404, f"The model `{model}` does not exist; {served}", param="model", code="model_not_found")


def embeddings_text(value: object) -> str:
    """The text of an embeddings `input` (a string or strings; token ids have none)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(v for v in value if isinstance(v, str))
    return ""


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> Response:
    """Embeddings, forwarded to one model (never routed: vectors of different models do not mix)."""
    started = time.perf_counter()
    body = await read_body(request)
    parsed = validate(EmbeddingsBody, body)
    gw = gateway_of(request)
    record = embeddings_record(gw, parsed.model)
    dest = Destination(None, [record], client_scope(gw, request),
                       expected_cost=gw.routing.expected_cost(record, RequestSize(len(embeddings_text(parsed.input))),
                                                          output_tokens=False))
    return await proxy(request, "/embeddings", body, dest, False, started)


# The POSTs app/api/hot.py serves without the middlewares and FastAPI's routing (the routes above
# stay for the schema).
HOT_ENDPOINTS = {"/v1/chat/completions": chat_completions, "/v1/completions": completions,
                 "/v1/responses": responses, "/v1/embeddings": embeddings}


@router.post("/v1/route")
async def route_dry_run(request: Request) -> JSONResponse:
    """The decision a chat, completions or Responses API request would get, calling no upstream."""
    body = await read_body(request)
    kind = kind_of(body)
    read = read_routed(kind, body)
    dest = await request_destination(request, body, read, kind is ResponsesBody)
    if dest.decision is None:
        record = dest.records[0]
        error, cost, _ = expectation(dest, record)
        return JSONResponse({
            "model": record.name, "cluster": -1, "predicted_error": None if np.isnan(error) else error,
            "expected_cost": cost, "cost_weight": None, "candidates": [], "target": None, "budget_guard": None,
        })
    return JSONResponse({**dest.decision.to_dict(),
                         "budget_guard": dest.guard.to_dict() if dest.guard else None})


def model_objects(gw: Gateway) -> list[dict]:
    """The router names, the registered models that can be called by name, the embeddings model."""
    now = int(time.time())
    data = [{"id": name, "object": "model", "created": now, "owned_by": "uniroute"}
            for name in [ROUTER_MODEL, *(f"{ROUTER_MODEL}:{p}" for p in gw.settings.policies)]]
    for record in sorted(gw.registry.snapshot().values(), key=lambda r: r.name):
        if record.enabled:
            data.append({"id": record.name, "object": "model", "created": int(record.created_at),
                         "owned_by": "uniroute-registry"})
    if gw.settings.embeddings_model is not None:
        data.append({"id": gw.settings.embeddings_model.name, "object": "model", "created": now,
                     "owned_by": "uniroute-embeddings"})
    return data


@router.get("/v1/models")
async def list_models(request: Request) -> JSONResponse:
    """Every model a request can name."""
    return JSONResponse({"object": "list", "data": model_objects(gateway_of(request))})


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> JSONResponse:
    """One model of the list (`models.retrieve` in the openai SDK), or a router name with a target
    (`uniroute:0.5`, `uniroute:budget=0.001`, ...): clients that check a model name before using it
    must accept every name a completion accepts."""
    gw = gateway_of(request)
    for item in model_objects(gw):
        if item["id"] == model_id:
            return JSONResponse(item)
    why = ""
    try:
        if parse_router_model(model_id, gw.settings) is not None:
            return JSONResponse({"id": model_id, "object": "model", "created": int(time.time()),
                                 "owned_by": "uniroute"})
    except GatewayError as exc:
        why = f": {exc.message}"
    raise APIError(404, f"The model `{model_id}` does not exist{why}", param="model", code="model_not_found")
