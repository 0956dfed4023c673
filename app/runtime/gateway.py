"""The gateway's composition root: its long-lived parts, wired together once per app.

Loading the embedding model takes seconds, so it happens in the background: `/healthz`
answers at once, `/readyz` and routed requests wait until the router is attached.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from starlette.requests import Request

from app.costs.budget import GuardState, key_scope, open_guard
from app.profiling.jobs import JobOptions, JobRunner, Resilience
from app.profiling.profiles import profile_from_answers
from app.routing.capture import Capture
from app.routing.service import RoutingService
from app.runtime.config import ModelConfig, Settings
from app.runtime.metrics import Metrics
from app.runtime.migration import StateManager, load_router, startup_paths
from app.runtime.state_view import log_coverage
from app.upstream.faults import UpstreamFault, fault_error, fault_of
from app.upstream.forwarding import Forwarder, Health
from app.upstream.http1 import Limits, UpstreamClient
from models_registry.base import RegistryUnavailable, turn
from models_registry.capture import open_capture_store
from models_registry.factory import open_registry
from models_registry.records import ModelRecord
from models_registry.states import open_state_store
from router_core.calibration import Calibration
from router_core.pricing import Price
from router_core.repset import RepsetClusters
from router_core.router import RoutedModel, UniRouter

log = logging.getLogger("uniroute")

UPSTREAM_KEEPALIVE_S = 2.0
# How long the start waits before asking an unavailable registry again: twice as long each time, up
# to the most, so that the gateway is ready within seconds of the registry's return.
_REGISTRY_WAIT_S = 0.5
_REGISTRY_WAIT_MAX_S = 5.0


def gateway_of(request: Request) -> "Gateway":
    """The gateway serving a request (set on the app at start-up)."""
    return request.app.state.gateway


def upstream_client(settings: Settings) -> UpstreamClient:
    """The pooled client every upstream call goes through (made on the running event loop)."""
    t = settings.timeouts
    # An idle upstream connection is dropped well before servers close theirs (uvicorn, which
    # vLLM and many others run on, closes after 5 s): reusing one at that moment loses the
    # request to a race.
    return UpstreamClient(Limits(connect_s=t.connect_s, read_s=t.read_s, pool_s=t.pool_s,
                                 keepalive_s=UPSTREAM_KEEPALIVE_S))


def resilience(settings: Settings) -> Resilience:
    """The profiling jobs' fault and coverage policy from the settings."""
    return Resilience(
        backoff_s=settings.profile_backoff_s, backoff_max_s=settings.profile_backoff_max_s,
        attempts=settings.profile_attempts, pause_after=settings.profile_pause_after,
        resume_after_s=settings.profile_resume_after_s, auto_resumes=settings.profile_auto_resumes,
        min_coverage=settings.profile_min_coverage, min_cluster_coverage=settings.profile_min_cluster_coverage,
        lock_ttl_s=settings.lock_ttl_s)


class Gateway:
    """Creates the parts and hands each what it needs; request handlers reach them from here."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.registry = open_registry(
            redis_url=settings.redis_url, sqlite_path=settings.sqlite_path, prefix=settings.redis_prefix
        )
        self.health = Health(settings.cooldown_failures, settings.cooldown_s, self.metrics)
        # Several workers without Redis share the budget guard's counts in the registry's file.
        self.budget = open_guard(settings.budget, settings.redis_url, settings.redis_prefix, self.metrics,
                                 sqlite_path=settings.sqlite_path if (settings.workers or 1) > 1 else None)
        self.client = upstream_client(settings)
        self.forwarder = Forwarder(self.client, self.metrics, self.health, settings.retries, settings.deadline_s,
                                   settings.retry_after_max_s, disable=self.disable_faulty)
        self.routing = RoutingService(settings, self.metrics, self.registry, self.health, self.budget)
        self.capture_store = open_capture_store(settings.redis_url, settings.sqlite_path, settings.redis_prefix)
        self.capture = self.routing.capture = Capture(settings.capture, self.capture_store, metrics=self.metrics)
        # Profiling calls go through their own forwarder so that their upstream timings stay
        # out of the client-traffic histogram; health (cooldowns) is shared.
        profiling_forwarder = Forwarder(self.client, self.metrics.for_profiling(), self.health, settings.retries,
                                        settings.deadline_s, settings.retry_after_max_s)
        self.jobs = JobRunner(
            self.registry, profiling_forwarder, self.metrics, self._clusters,
            JobOptions(settings.profile_concurrency, settings.profile_max_tokens, settings.profile_spend_cap),
            settings.judge_model, resilience(settings),
        )
        self.ready = asyncio.Event()
        self.waiting: str | None = None  # what the start waits for, as /readyz says
        # One thread for the embedding model: torch already uses both cores inside a call.
        self.embed_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uniroute-embed")
        self.state_store = open_state_store(settings.redis_url, settings.sqlite_path, settings.redis_prefix)
        self.states = StateManager(settings, self.state_store, self.registry, self.routing, self.jobs,
                                   self.embed_pool, self.refresh)
        self._loader: asyncio.Task | None = None
        self._sweeper: asyncio.Task | None = None

    @property
    def router(self) -> UniRouter | None:
        return self.routing.router

    @property
    def load_error(self) -> str | None:
        return self.routing.load_error

    def _budget_view(self) -> tuple[list[str], Calibration | None]:
        """The budget guard's scopes (each client key's fingerprint, or `all`) and the curve it
        turns what is left of the target into a λ floor with."""
        scopes = [key_scope(k) for k in self.settings.api_keys] or [key_scope(None)]
        return scopes, self.router.calibration() if self.router is not None else None

    async def budget_states(self) -> list[GuardState]:
        """The budget guard's window now for each scope; none while the guard is off."""
        if self.budget is None:
            return []
        scopes, curve = self._budget_view()
        return [await self.budget.state(scope, curve) for scope in scopes]

    async def show_budget(self) -> None:
        """Set the budget guard's gauges to its windows as they stand now (BudgetGuard.show)."""
        if self.budget is not None:
            await self.budget.show(*self._budget_view())

    def _clusters(self) -> RepsetClusters:
        clusters = self.routing.require_ready().repset
        assert clusters is not None  # the gateway always loads a representative set
        return clusters

    async def start(self) -> None:
        """Open the registry; load the router in the background."""
        await self.registry.start()
        await self.capture_store.start()
        await self.state_store.start()
        if self.budget is not None:
            await self.budget.start()
        self.registry.on_change(lambda _name: self.refresh())
        self._loader = asyncio.create_task(self._load())

    async def close(self) -> None:
        """Stop background work and release connections."""
        for task in (self._loader, self._sweeper):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.states.close()
        await self.jobs.close()
        if self.budget is not None:
            await self.budget.close()
        await self.routing.close()
        await self.capture.flush()
        await self.capture_store.close()
        await self.state_store.close()
        await self.client.close()
        await self.registry.close()
        self.embed_pool.shutdown(wait=False, cancel_futures=True)

    async def _load(self) -> None:
        s = self.settings
        try:
            t0 = time.perf_counter()
            loop = asyncio.get_running_loop()
            if s.embed_threads is not None:
                import torch  # the gateway owns its process: one thread leaves a core to the event loop

                torch.set_num_threads(s.embed_threads)
            # One process at a time (the workers of a `uniroute serve`, replicas sharing a Redis):
            # the first embeds the representative set into the shared cache and registers the
            # configured models; the next ones find both done.
            async with turn(self.registry, "startup", self.jobs.owner, self.settings.lock_ttl_s):
                state_dir, repset_path = await startup_paths(s, self.state_store)
                router = await loop.run_in_executor(self.embed_pool, load_router, s, state_dir, repset_path)
                self.routing.attach(router, self.embed_pool)
                log_coverage(router, s.coverage_floor)
                await self._register_at_start(s.models)
            self.refresh()
            self.ready.set()
            self._sweeper = asyncio.create_task(self.jobs.sweep())
            await self.states.start()
            log.info(
                "router ready in %.1f s: %d clusters, embedder %s, %d representative prompts, %d routable models",
                time.perf_counter() - t0, router.n_clusters, router.state.embedder, len(router.repset.ids),
                len(router.table.models),
            )
        except Exception as exc:  # the gateway stays up to say why it is not ready
            self.routing.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("router failed to load")

    def refresh(self) -> None:
        """Route among the registry's ready, enabled models profiled under the current state."""
        records = list(self.registry.snapshot().values())
        router = self.routing.router
        if router is not None:
            version = router.state.version
            # A record profiled under another state (one this replica has not switched to yet,
            # during a state switch) keeps the profile this router already routes it with.
            routed = {m.name: m.profile for m in router.models}
            profiles = {r.name: r.profile if r.profile is not None and r.profile.state_version == version
                        else routed.get(r.name) for r in records if r.state == "ready" and r.enabled}
            router.set_models([RoutedModel(r.name, r.cost, profiles[r.name]) for r in records
                               if profiles.get(r.name) is not None])
        counts: dict[str, int] = {"profiling": 0, "ready": 0, "failed": 0, "disabled": 0}
        for r in records:
            counts[r.state] = counts.get(r.state, 0) + 1
        for state, n in counts.items():
            self.metrics.models_by_state.labels(state).set(n)
        faulted = {"auth": 0, "not_found": 0, "no_endpoint": 0}
        for r in records:
            if not r.enabled and (kind := fault_of(r.error)) is not None:
                faulted[kind] = faulted.get(kind, 0) + 1
        for kind, n in faulted.items():
            self.metrics.models_faulted.labels(kind).set(n)

    async def disable_faulty(self, record: ModelRecord, fault: UpstreamFault) -> None:
        """Take a routable model out of routing after a fault that will not pass by itself (its
        upstream refuses the gateway's key, no longer knows the model, or serves no
        /chat/completions at its base_url): disabled in the
        registry, for every replica, with the reason in its `error`, until an operator re-enables
        it. Models being profiled are left to their job."""
        current = self.registry.snapshot().get(record.name)
        if current is None or current.state != "ready" or not current.enabled:
            return
        current.enabled = False
        current.state = "disabled"
        current.error = fault_error(fault.kind, str(fault), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        log.error("model %s taken out of routing: %s", record.name, current.error)
        try:
            await self.registry.put_model(current)
        except RegistryUnavailable as exc:
            log.error("could not disable %s, the registry is unavailable: %s", record.name, exc)

    async def clear_fault(self, name: str) -> None:
        """Forget the fault that once disabled a model, now that it answered again (an operator
        re-enabled it): its `error` no longer describes it."""
        current = self.registry.snapshot().get(name)
        if current is None or not current.enabled or fault_of(current.error) is None:
            return
        current.error = None
        try:
            await self.registry.put_model(current)
        except RegistryUnavailable:
            pass  # the next good answer tries again

    async def _register_at_start(self, models: list[ModelConfig]) -> None:
        """Register the config file's models and re-profile those made under another state, once
        the registry takes writes: one away at start (a Redis restarting with the replicas, say)
        is waited for, not reported as a failed start that only a restart would mend. Meanwhile
        /readyz says what the start waits for."""
        wait = _REGISTRY_WAIT_S
        while True:
            try:
                await self._register_configured(models)
                await self._reprofile_stale()
            except RegistryUnavailable as exc:
                self.waiting = f"the registry, to register the configured models: {exc}"
                log.warning("waiting for %s", self.waiting)
                await asyncio.sleep(wait)
                wait = min(2 * wait, _REGISTRY_WAIT_MAX_S)
                continue
            self.waiting = None
            return

    async def _stored_models(self) -> list[ModelRecord]:
        """The registry's models as stored now (another process may have written them since this
        one's snapshot), or the snapshot's while the registry is away."""
        try:
            return await self.registry.list_models()
        except RegistryUnavailable:
            return list(self.registry.snapshot().values())

    async def _reprofile_stale(self) -> None:
        """Recompute, from their stored graded answers, the profiles made under another router
        state (other clusters): answers depend on the representative set only, so nothing is asked again."""
        clusters = self._clusters()
        version = clusters.repset.version
        for record in await self._stored_models():
            if record.profile is None or record.profile.state_version == clusters.state_version:
                continue
            profile = profile_from_answers(clusters, await self.registry.answers(record.name, version))
            if profile is None:
                log.warning("model %s was profiled under another router state and has no stored answers "
                            "for this representative set: reprofile it to route to it", record.name)
                continue
            record.profile = profile
            await self.registry.put_model(record)
            log.info("re-profiled %s under router state %s from %d stored answers",
                     record.name, clusters.state_version, profile.n_prompts)

    async def register(self, record: ModelRecord, scores: dict[str, float] | None,
                       job_options: dict | None = None) -> str | None:
        """Register a model: profiled at once from `scores` on the representative set (ValueError
        for scores that do not fit it), else by a profiling job with `job_options` (JobOptions'
        fields); the job's id, or None."""
        if scores is None:
            return (await self.jobs.start(record, job_options)).id
        record.profile = self.routing.require_ready().profile(scores)
        record.state = "ready"
        record.profiled_at = time.time()
        await self.registry.put_model(record)
        return None

    async def _register_configured(self, models: list[ModelConfig]) -> None:
        """Register the config file's models the registry does not hold yet; those it holds take
        the file's `base_url`, `upstream_model`, `api_key_env`, `cost` and `capabilities` (the file says where its
        models are and what they cost: an edit there must not be ignored because the registry
        remembers the first start), keeping their profiles."""
        existing = {r.name: r for r in await self._stored_models()}
        version = self._clusters().state_version
        for m in models:
            known = existing.get(m.name)
            if not m.enabled:
                await self._register_disabled(m, known)
                continue
            # profiled again from the file: under another router state, or failed on it before
            again = known is not None and m.scores_file is not None and (
                known.profile.state_version != version if known.profile is not None else known.state == "failed")
            if known is not None and not again:
                if _follow_config(known, m):
                    await self.registry.put_model(known)
                continue
            record = _new_record(m)
            try:
                scores = json.loads(Path(m.scores_file).read_text()) if m.scores_file else None
                await self.register(record, scores)
            except (OSError, ValueError) as exc:
                # One model's unreadable scores must not keep the others from routing: every
                # worker's start failed on it, and the gateway answered 503 for ever.
                log.error("config model %s: its scores_file %s cannot be used: %s", m.name, m.scores_file, exc)
                if known is None:
                    record.state, record.error = "failed", f"scores_file {m.scores_file} cannot be used: {exc}"
                    await self.registry.put_model(record)

    async def _register_disabled(self, m: ModelConfig, known: ModelRecord | None) -> None:
        """A config model with `enabled: false`: registered (or kept) disabled, with no profile,
        so enabling it by hand does not route it on one. Applied to a record the registry
        already holds too, which may have been registered routable before (the demo's judge was)."""
        changed = known is not None and _follow_config(known, m)
        if known is not None and not known.enabled and known.profile is None:
            if changed:
                await self.registry.put_model(known)
            return
        record = known or _new_record(m)
        record.enabled, record.state, record.profile = False, "disabled", None
        await self.registry.put_model(record)
        log.info("%s registered disabled, as the config asks: never routed", m.name)


def _follow_config(record: ModelRecord, m: ModelConfig) -> bool:
    """Give a stored record of config model `m` the file's connection fields and cost; whether
    any changed (each change logged: the admin API's edits of them last until a restart)."""
    wanted = _new_record(m)
    changes = []
    for name in ("base_url", "upstream_model", "api_key_env", "cost", "capabilities"):
        old, new = getattr(record, name), getattr(wanted, name)
        if old != new:
            setattr(record, name, new)
            changes.append(f"{name} {_shown(old)} -> {_shown(new)}")
    if changes:
        log.info("model %s takes the config file's %s", m.name, "; ".join(changes))
    return bool(changes)


def _shown(value: object) -> str:
    return json.dumps(value.to_dict() if isinstance(value, Price) else value)


def _new_record(m: ModelConfig) -> ModelRecord:
    """The registry record a config model starts as."""
    return ModelRecord.new(name=m.name, base_url=m.base_url, upstream_model=m.upstream_model or m.name,
                           api_key_env=m.api_key_env, cost=m.cost.to_price(),
                           capabilities=m.capabilities.declared() if m.capabilities else None)
