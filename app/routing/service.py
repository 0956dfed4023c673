"""The gateway's routing service: which model(s) a request goes to.

Routing is asked for with the model name `uniroute` (the configured cost weight),
`uniroute:<cost weight>`, `uniroute:budget=<cost per request>`, `uniroute:quality=<fraction>` or
`uniroute:<policy>`, and per request with a target, a policy or a subset of models (the body's
`uniroute` field, read at the HTTP edge). Any other registered model name goes straight to that
model. The decision itself is router_core's `UniRouter.decide`, the very code the library runs;
this service adds what a shared gateway needs: the registry's records to forward to, the budget
guard's λ floor, models cooling down after failures, micro-batched embeddings and metrics.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
from pydantic import ValidationError

from app.costs.budget import BudgetGuard, GuardState
from app.errors import GatewayError
from app.routing.batching import MicroBatcher
from app.routing.capture import Capture
from app.runtime.config import Settings, TargetFields
from app.runtime.metrics import Metrics
from app.upstream.forwarding import Health
from models_registry.base import Registry
from models_registry.records import CAPABILITIES, ModelRecord
from router_core.pricing import estimate_tokens
from router_core.router import Decision, UniRouter
from router_core.targets import KINDS, NotCalibrated, RoutingTarget
from router_core.text import routing_text

ROUTER_MODEL = "uniroute"
# How an error names what a request uses that no routable model takes.
_NEED_WORDS = {"vision": "images (vision)", "tools": "tools", "json_schema": "a JSON schema output (json_schema)"}
# How long a replaced router's embedding worker stays for requests that started on it.
RETIRE_AFTER_S = 30.0


@dataclass(slots=True)  # not frozen: made for every request, and a frozen one costs 3 times as much to make
class RequestSize:
    """What a request's expected cost is priced by: the characters of text it sends the model,
    the most tokens each answer may have (`max_tokens` and the like; None: no limit), and how
    many answers it asks for (`n`: each is billed); and the capabilities it needs of the model
    (models_registry's CAPABILITIES: images, tools, a JSON schema output), which routing
    leaves out the models declared without."""

    prompt_chars: int
    max_output_tokens: int | None = None
    choices: int = 1
    needs: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Destination:
    """Where a request goes: a routing decision, or a model named by the client; the records to
    try in order (the registry snapshot's own: read, never changed), the budget guard's view, and
    the guard scope it is billed to."""

    decision: Decision | None
    records: list[ModelRecord]
    scope: str
    guard: GuardState | None = None
    # A named model's expected cost for the request (a routed one's is in its decision).
    expected_cost: float = 0.0


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
        raise GatewayError("invalid", f"model {name!r}: {usage}", param="model", code="invalid_target")
    try:
        number = float(value)
    except ValueError:
        code = "unknown_policy" if not sep else f"invalid_{kind}"
        raise GatewayError("invalid", f"model {name!r}: {value!r} is not a number nor a policy; {usage}",
                           param="model", code=code) from None
    try:
        return TargetFields.model_validate({kind: number}).target()
    except ValidationError as exc:
        raise GatewayError("invalid", f"model {name!r}: {kind} {exc.errors()[0]['msg'].lower()}", param="model",
                           code=f"invalid_{kind}") from None


def policy_target(name: str, settings: Settings, param: str) -> RoutingTarget:
    """The target of a named policy of the config."""
    policy = settings.policies.get(name)
    if policy is None:
        raise GatewayError("invalid", f"{param}: no policy {name!r}; the policies are: "
                                      f"{', '.join(settings.policies) or 'none'}", param=param, code="unknown_policy")
    return policy.target(name)


class RoutingService:
    """Routes requests for one gateway; `attach` gives it the loaded router."""

    def __init__(self, settings: Settings, metrics: Metrics, registry: Registry, health: Health,
                 budget: BudgetGuard | None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.registry = registry
        self.health = health
        self.budget = budget
        self.router: UniRouter | None = None
        # One micro-batcher per router: a request routes wholly on the router it started with,
        # also when another is attached meanwhile (a state switch).
        self._batchers: dict[UniRouter, MicroBatcher] = {}
        self._executor: Executor | None = None
        self.load_error: str | None = None
        # Opt-in sampling of routed texts (app/routing/capture.py); set by the gateway.
        self.capture: Capture | None = None

    def attach(self, router: UniRouter, executor: Executor) -> None:
        """Start routing with `router`; its embedding model runs on `executor`, micro-batched.
        A router attached before is retired: requests routing on it finish there."""
        s = self.settings
        self._batchers[router] = MicroBatcher(router.weights, executor, s.embed_max_batch,
                                              s.embed_batch_wait_ms / 1000, self.metrics.embed_batch_size.observe)
        self._executor = executor
        old, self.router = self.router, router
        if old is not None:
            asyncio.get_running_loop().call_later(RETIRE_AFTER_S, lambda: asyncio.ensure_future(self._retire(old)))

    async def _retire(self, router: UniRouter) -> None:
        batcher = self._batchers.pop(router, None)
        if batcher is not None:
            await batcher.close()

    async def close(self) -> None:
        for batcher in list(self._batchers.values()):
            await batcher.close()

    def require_ready(self) -> UniRouter:
        """The router, or `unavailable` while it is still loading (or failed to load)."""
        if self.router is None:
            detail = f": {self.load_error}" if self.load_error else "; retry shortly"
            raise GatewayError("unavailable", f"the router is not ready{detail}", code="not_ready")
        return self.router

    async def weights(self, texts: list[str], router: UniRouter | None = None) -> np.ndarray:
        """(n, K) cluster weights under `router` (default: the current one): recent texts from
        the router's LRU, the others embedded off the event loop, micro-batched with other
        requests' prompts; with an inline (static) embedder, all of it right here."""
        router = router or self.require_ready()
        if getattr(router.embedder, "inline", False):
            # A static embedder costs less than the hand-off to a thread would (router_core.embedding).
            return router.weights(texts)
        rows = [router.lookup(t) for t in texts]
        missing = [i for i, row in enumerate(rows) if row is None]
        batcher = self._batchers.get(router)
        if missing and batcher is None:  # a router retired while this request waited: embed alone
            computed = await asyncio.get_running_loop().run_in_executor(
                self._executor, router.weights, [texts[i] for i in missing])
            for i, row in zip(missing, computed):
                rows[i] = row
        elif missing:
            computed = await asyncio.gather(*(batcher.submit(texts[i]) for i in missing))
            for i, row in zip(missing, computed):
                rows[i] = row
        return np.stack(rows) if rows else np.zeros((0, router.n_clusters))

    def named(self, model: str) -> ModelRecord:
        """A registered, enabled model called by name."""
        record = self.registry.snapshot().get(model)
        if record is None or not record.enabled:
            raise GatewayError("not_found", f"The model `{model}` does not exist or is not enabled", param="model",
                               code="model_not_found")
        return record

    def expected_cost(self, record: ModelRecord, size: RequestSize, output_tokens: bool = True) -> float:
        """A named model's expected cost for a request of `size`: its prompt's estimated tokens, and
        each of its answers at the length its profile measured (else the configured one), at most
        the request's limit. Unlike a routed prompt's, the answer is priced at the model's mean
        length, not by its cluster's output scale: a named request is never embedded, and pricing
        it is not worth an embedding."""
        profile = record.profile
        output = ((profile.avg_output_tokens if profile else 0) or self.settings.expected_output_tokens
                  if output_tokens else 0)
        if size.max_output_tokens is not None:
            output = min(output, size.max_output_tokens)
        output *= size.choices
        return record.cost.expected(estimate_tokens(size.prompt_chars), output)

    async def destination(self, target: RoutingTarget, text: str, size: RequestSize, scope: str,
                          models: list[str] | None = None) -> Destination:
        """Route a prompt for `target` among the routable models (or those in `models`): `text` is
        what routing reads, `size` what the request's expected cost is priced by."""
        allowed = None
        if models is not None:
            unknown = sorted(set(models) - set(self.registry.snapshot()))
            if unknown:
                raise GatewayError("invalid", f"uniroute.models names unregistered models: {', '.join(unknown)}",
                                   param="uniroute.models", code="model_not_found")
            allowed = frozenset(models)
        router = self.require_ready()
        if not router.table.models:
            raise GatewayError("unavailable", "no routable model: register and profile a model first",
                               code="no_routable_model")
        start = time.perf_counter()
        try:
            resolution = router.resolve(target, allowed)
        except NotCalibrated as exc:
            raise GatewayError("unavailable", str(exc), code="not_calibrated") from None
        if not resolution.met:
            self.metrics.target_unmet.labels(target.kind).inc()
        guard = None
        floor = 0.0
        if self.budget is not None:
            guard = await self.budget.state(scope, router.calibration())
            floor = guard.cost_weight
        weights = (await self.weights([text], router))[0]
        self.watch_drift(router, text)
        tokens = estimate_tokens(size.prompt_chars)
        # Models declared unable to take what the request uses are never tried (most requests need nothing).
        unable = self.unable(router, allowed, size.needs) if size.needs else frozenset()
        cooling = self.health.cooling()
        decision = router.decide(weights, resolution, tokens, allowed, cooling | unable if unable else cooling,
                                 floor, size.max_output_tokens, size.choices)
        if decision is None:  # every allowed model is cooling down: better to try them than to refuse
            decision = router.decide(weights, resolution, tokens, allowed, unable, min_cost_weight=floor,
                                     max_output_tokens=size.max_output_tokens, choices=size.choices)
        self.metrics.routing_seconds.observe(time.perf_counter() - start)
        if decision is None and unable:
            raise unable_error(size.needs, unable)
        if decision is None:
            raise GatewayError("unavailable", "no routable model among the allowed models", code="no_routable_model")
        if self.capture is not None:
            self.capture.offer(routing_text(text, router.state.max_chars), decision.cluster)
        records = self.registry.snapshot()
        fallbacks = decision.ranking[: 1 + self.settings.max_fallbacks]
        return Destination(decision, [records.peek(name) for name in fallbacks if name in records], scope, guard)

    def unable(self, router: UniRouter, allowed: frozenset[str] | None, needs: frozenset[str]) -> frozenset[str]:
        """The routable models (among `allowed`) declared without a capability in `needs`."""
        records = self.registry.snapshot()
        return frozenset(name for name in router.table.names
                         if (allowed is None or name in allowed) and name in records
                         and records.peek(name).lacks(needs))

    def watch_drift(self, router: UniRouter, text: str) -> None:
        """Count a routed prompt as near or far from the router's clusters."""
        distance = router.distance(text) if router.drift is not None else None
        if distance is None:
            return
        far = bool(router.drift.observe(np.array([distance]))[0])
        self.metrics.child(self.metrics.drift_prompts, "true" if far else "false").inc()
        self.metrics.drift_share.set(router.drift.far_share)


def unable_error(needs: frozenset[str], unable: frozenset[str]) -> GatewayError:
    """The 400 for a request using what no routable model takes: every one that could answer it
    (`unable`) is declared without a capability it `needs`."""
    used = [_NEED_WORDS[c] for c in CAPABILITIES if c in needs]
    return GatewayError("invalid", f"no routable model takes what this request uses: {' and '.join(used)}; the "
                                   f"models that could answer it are declared without it (capabilities): "
                                   f"{', '.join(sorted(unable))}", code="unsupported_capability")


def expectation(destination: Destination, answered_by: ModelRecord) -> tuple[float, float, int]:
    """(predicted error, expected cost, cluster) of the answering model. A named model was not
    routed: its cluster is -1 and its predicted error is its overall error on the representative set."""
    if destination.decision is None:
        profile = answered_by.profile
        error = 1.0 - profile.accuracy if profile else float("nan")
        return error, destination.expected_cost, -1
    error, cost = destination.decision.expectation(answered_by.name)
    return error, cost, destination.decision.cluster
