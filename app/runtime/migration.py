"""Switching running gateways to another router state and representative set, live.

`POST /admin/state {"state_dir", "repset_path"}` (StateManager.apply) writes a PENDING
migration to the registry (models_registry/states.py). Every replica hears of it and loads the
new state and set into a second UniRouter beside the one it routes with. One replica (holding
the migration's lock) re-profiles every registered model on the new set:

- answers are stored per representative set version and item id, so a model's graded answers
  to items of the new set it already answered (under the active set) are copied, not asked;
- the missing items are asked and graded through the profiling machinery
  (`JobRunner.ask_each`), `profile_concurrency` at a time, under one total spend cap for the
  whole migration (`spend_cap`, default `profile_spend_cap`), each model riding out its
  upstream's faults as a job does (items asked again, backoff; `profile_pause_after` failures in
  a row stop asking it, and so does an upstream serving no /chat/completions at its base_url),
  judged items left out without a `judge_model`;
- a model is ready when its graded answers meet a job's coverage floors (`profile_min_coverage`
  of the items it did not decline, `profile_min_cluster_coverage` in every cluster);
- progress is written to the pending document; traffic keeps routing on the active state and
  profiles meanwhile (model records are not touched).

When every model is ready the migration commits (unless `auto_commit` is false; the operator
can also force it: `commit(force=True)`): the ACTIVE document gets the new state's paths and
every model's new profile, and its announcement makes every replica attach the new router at
once (a Redis pub/sub message when replicas share a Redis), and each replica's running
profiling jobs start again on the new set (JobRunner.follow_switch). Then the model records get the new
profiles (for restarts and the admin views); a replica that has not switched yet keeps the
profiles it routes with (Gateway.refresh). A model with no graded answer on the new set (a
forced commit, a model registered meanwhile) keeps its profile if it was made under the new
clusters (same state, another set), else is not routable until it is re-profiled.

The pending migration lives in the registry: a gateway restarted during one reloads it and the
next replica to take its lock resumes it, asking only what is still missing. A gateway starts on
the ACTIVE state when there is one (it overrides `state_dir` / `repset_path`).
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from pathlib import Path

from app.errors import GatewayError
from app.profiling.jobs import (
    JobRunner,
    Pass,
    declined_ids,
    job_items,
    too_little_graded,
    unjudged_answers,
    with_last_failure,
)
from app.profiling.profiles import profile_from_answers
from app.routing.service import RoutingService
from app.runtime.config import Settings
from models_registry.base import Registry, RegistryUnavailable, hold_lock
from models_registry.records import Answer, ModelRecord
from models_registry.states import Slot, StateStore, open_state_store
from router_core.profiles import Profile
from router_core.repset import RepItem, RepsetError, load_repset
from router_core.router import RoutedModel, UniRouter
from router_core.shipped import state_path
from router_core.state import RouterState

log = logging.getLogger("uniroute.migration")



class Abandoned(Exception):
    """The migration being worked on is no longer the pending one (abandoned or committed)."""


def load_router(settings: Settings, state_dir: str, repset_path: str) -> UniRouter:
    """A router on `state_dir` and `repset_path` with the gateway's options (blocks: loads the
    embedding model and embeds the set)."""
    return UniRouter.load(state_dir, repset_path, cache_dir=settings.cache_dir,
                          default_cost_weight=settings.default_cost_weight,
                          default_output_tokens=settings.expected_output_tokens, cost_scale=settings.cost_scale,
                          min_support=settings.min_support)


async def startup_paths(settings: Settings, store: StateStore) -> tuple[str, str]:
    """The state folder and representative set a gateway starts on: the ACTIVE document's, else
    the config's."""
    try:
        active = await store.get("active")
    except RegistryUnavailable as exc:
        log.warning("cannot read the active router state (%s): starting on the configured one", exc)
        active = None
    if active is None:
        return settings.state_dir, settings.repset_path
    return active["state_dir"], active["repset_path"]


async def check_startup_state(settings: Settings) -> None:
    """ValueError, saying why, when the router state or representative set a gateway would start
    on (`startup_paths`) cannot be read: every worker would fail its start on it. The embedding
    model is not loaded (seconds, and memory a worker would not share)."""
    store = open_state_store(settings.redis_url, settings.sqlite_path, settings.redis_prefix)
    await store.start()
    try:
        state_dir, repset_path = await startup_paths(settings, store)
    finally:
        await store.close()
    try:
        RouterState.load(state_path(state_dir))
        load_repset(repset_path)
    except ValueError as exc:
        if (state_dir, repset_path) == (settings.state_dir, settings.repset_path):
            raise
        raise ValueError(f"the registry's active router state (a state switch's, which overrides state_dir and "
                         f"repset_path): {exc}") from None


def _differs(active: dict, router: UniRouter) -> bool:
    """Whether the ACTIVE document names another state than `router` runs: other clusters,
    another representative set, or another output scale (a document written before scales were
    recorded has no say on it: the router would reload on every look)."""
    assert router.repset is not None
    if (active["state_version"], active["repset_version"]) != (router.state.version, router.repset.repset.version):
        return True
    return "scale_version" in active and active["scale_version"] != router.state.scale_version


def _profiled(record: ModelRecord) -> bool:
    """A model the migration re-profiles: one that has been profiled (routable, or disabled)."""
    return record.state in ("ready", "disabled") and record.profile is not None


class StateManager:
    """The active state, the pending migration and the switch, for one gateway."""

    def __init__(self, settings: Settings, store: StateStore, registry: Registry, routing: RoutingService,
                 jobs: JobRunner, executor: Executor, after_switch: Callable[[], None]) -> None:
        """`executor` runs the embedding model (the router's); `after_switch` re-reads the
        registry's models into the newly attached router."""
        self.settings = settings
        self.store = store
        self.registry = registry
        self.routing = routing
        self.jobs = jobs
        self.executor = executor
        self.after_switch = after_switch
        self.owner = uuid.uuid4().hex
        self._loads: dict[str, asyncio.Task[UniRouter]] = {}  # migration id -> its router, loading
        self._runner: asyncio.Task | None = None
        self._runner_id: str | None = None
        self._changes = asyncio.Lock()
        # The ACTIVE document last switched to: a folder rewritten in place after it was applied
        # never matches its document again, and must not be reloaded on every look.
        self._switched: str | None = None
        self._watch: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()

    # --- start-up and shutdown ----------------------------------------------------------

    async def start(self) -> None:
        """Follow state changes; pick up (and resume) a pending migration. Call once the router is attached."""
        self.store.on_change(self._heard)
        self._watch = asyncio.create_task(self._resume_loop(), name="uniroute-migration-watch")

    async def close(self) -> None:
        for task in (self._watch, self._runner, *self._loads.values(), *self._background):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._watch, self._runner, *self._loads.values(), *self._background)
                               if t is not None), return_exceptions=True)

    def _heard(self, slot: Slot) -> None:
        task = asyncio.ensure_future(self._on_change(slot))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _resume_loop(self) -> None:
        """A pending migration nobody runs (after a restart or a replica's death) is taken up."""
        while True:
            try:
                await self._on_change("active")
                await self._on_change("pending")
            except RegistryUnavailable:
                pass
            await asyncio.sleep(self.settings.lock_ttl_s)

    async def _on_change(self, slot: Slot) -> None:
        async with self._changes:
            doc = await self.store.get(slot)
            if slot == "active":
                router = self.routing.router
                if (doc is not None and router is not None and router.repset is not None
                        and doc["id"] != self._switched and _differs(doc, router)):
                    await self._switch(doc)
                return
            if doc is None:  # abandoned or committed: stop working on it
                self._stop_runner()
                for mid in list(self._loads):
                    self._loads.pop(mid).cancel()
                return
            self._loading(doc)
            if self._runner is None or self._runner.done():
                self._runner_id = doc["id"]
                self._runner = asyncio.create_task(self._run(doc["id"]), name=f"migration:{doc['id']}")

    def _stop_runner(self) -> None:
        if self._runner is not None and self._runner is not asyncio.current_task():
            self._runner.cancel()
        self._runner = self._runner_id = None

    # --- the pending router ---------------------------------------------------------------

    def _loading(self, doc: dict) -> asyncio.Task[UniRouter]:
        """The migration's router, loading in a thread (started on first ask)."""
        task = self._loads.get(doc["id"])
        if task is None:
            for mid in list(self._loads):  # another migration's router is of no use now
                self._loads.pop(mid).cancel()
            task = asyncio.ensure_future(asyncio.to_thread(load_router, self.settings, doc["state_dir"],
                                                           doc["repset_path"]))
            self._loads[doc["id"]] = task
        return task

    async def _router_for(self, doc: dict) -> UniRouter:
        try:
            return await asyncio.shield(self._loading(doc))
        except (OSError, ValueError) as exc:
            raise GatewayError("invalid", f"cannot load the new state: {exc}", code="invalid_state") from None

    # --- apply, commit, abandon ----------------------------------------------------------

    async def apply(self, state_dir: str, repset_path: str, spend_cap: float | None, auto_commit: bool) -> dict:
        """Start a migration to `state_dir` + `repset_path`; the pending document."""
        current = self.routing.require_ready()
        if await self.store.get("pending") is not None:
            raise GatewayError("conflict", "a state migration is pending: commit or abandon it first",
                               code="migration_pending")
        directory = state_path(state_dir)
        try:
            state, repset = await asyncio.to_thread(lambda: (RouterState.load(directory), load_repset(repset_path)))
        except (ValueError, RepsetError) as exc:
            raise GatewayError("invalid", str(exc), code="invalid_state") from None
        assert current.repset is not None
        if (state.version, repset.version, state.scale_version) == (
                current.state.version, current.repset.repset.version, current.state.scale_version):
            raise GatewayError("invalid", "this state and representative set are the active ones",
                               code="state_active")
        doc = {"id": uuid.uuid4().hex[:16], "state_dir": str(Path(directory).resolve()),
               "repset_path": str(Path(repset_path).resolve()), "state_version": state.version,
               "scale_version": state.scale_version,
               "repset_version": repset.version, "k": state.k, "repset_items": len(repset.items),
               "from": {"state_version": current.state.version, "repset_version": current.repset.repset.version},
               "status": "loading", "started_at": time.time(), "updated_at": time.time(), "spend": 0.0,
               "spend_cap": spend_cap if spend_cap is not None else self.settings.profile_spend_cap,
               "auto_commit": auto_commit, "models": {}, "error": None}
        await self.store.put("pending", doc)
        return doc

    async def abandon(self) -> dict:
        """Drop the pending migration (answers already stored stay, for a later one to reuse)."""
        doc = await self.store.get("pending")
        if doc is None:
            raise GatewayError("not_found", "no state migration is pending", code="no_pending_state")
        await self.store.delete("pending")
        return doc

    async def commit(self, force: bool = False) -> dict:
        """Switch every replica to the pending state: when every model is ready, or now with
        `force` (models then route on what they have answered). The new ACTIVE document."""
        doc = await self.store.get("pending")
        if doc is None:
            raise GatewayError("not_found", "no state migration is pending", code="no_pending_state")
        if doc["status"] != "ready" and not force:
            raise GatewayError("conflict", f"the pending state is {doc['status']}, not ready: wait, or force it",
                               code="migration_not_ready")
        router = await self._router_for(doc)
        assert router.repset is not None
        profiles: dict[str, Profile] = {}
        for record in self.registry.snapshot().values():
            profile = profile_from_answers(router.repset, await self.registry.answers(record.name,
                                                                                      doc["repset_version"]))
            if profile is not None:
                profiles[record.name] = profile
        active = {"id": doc["id"], "state_dir": doc["state_dir"], "repset_path": doc["repset_path"],
                  "state_version": doc["state_version"], "scale_version": doc.get("scale_version"),
                  "repset_version": doc["repset_version"], "k": doc["k"],
                  "switched_at": time.time(), "forced": doc["status"] != "ready",
                  "profiles": {name: p.to_dict() for name, p in profiles.items()}}
        await self.store.put("active", active)  # every replica attaches the new router now
        for name, profile in profiles.items():
            record = self.registry.snapshot().get(name)
            if record is not None:
                record.profile = profile
                await self.registry.put_model(record)
        await self.store.delete("pending")  # last: it stops this migration's runner
        unprofiled = sorted(set(self.registry.snapshot()) - set(profiles))
        if unprofiled:
            log.warning("models with no graded answer on the new representative set keep their profile only if it "
                        "was made under the new clusters, else are not routable until re-profiled: %s",
                        ", ".join(unprofiled))
        log.info("committed router state %s (K=%d, representative set %s) for %d models",
                 doc["state_version"], doc["k"], doc["repset_version"], len(profiles))
        return active

    async def pending(self) -> dict | None:
        """The pending migration's document (its progress), or None."""
        return await self.store.get("pending")

    # --- the switch, on every replica ----------------------------------------------------

    async def _switch(self, active: dict) -> None:
        loading = self._loads.get(active["id"])
        if loading is not None:
            router = await loading
        else:
            router = await asyncio.to_thread(load_router, self.settings, active["state_dir"], active["repset_path"])
        profiles = {name: Profile.from_dict(p) for name, p in active.get("profiles", {}).items()}
        router.set_models([RoutedModel(r.name, r.cost, profiles[r.name]) for r in self.registry.snapshot().values()
                           if r.state == "ready" and r.enabled and r.name in profiles])
        self.routing.attach(router, self.executor)
        self._switched = active["id"]
        self._loads.pop(active["id"], None)
        self.after_switch()
        log.info("switched to router state %s: %d clusters, %d routable models", router.state.version,
                 router.n_clusters, len(router.table.models))
        await self.jobs.follow_switch()

    # --- the re-profiling, on the replica holding the lock -------------------------------

    async def _run(self, migration_id: str) -> None:
        lock = f"migration:{migration_id}"
        try:
            if not await self.registry.acquire_lock(lock, self.owner, self.settings.lock_ttl_s):
                return  # another replica runs it
        except RegistryUnavailable:
            return
        keeper = asyncio.create_task(hold_lock(self.registry, lock, self.owner, self.settings.lock_ttl_s))
        try:
            await self._reprofile(migration_id)
        except asyncio.CancelledError:
            raise
        except Abandoned:
            pass  # abandoned or committed from elsewhere: nothing to record
        except Exception as exc:  # the migration fails alone; routing goes on
            log.exception("state migration %s failed", migration_id)
            doc = await self.store.get("pending")
            if doc is not None and doc["id"] == migration_id:
                doc.update(status="failed", error=f"{type(exc).__name__}: {exc}", updated_at=time.time())
                await self.store.put("pending", doc, announce=False)
        finally:
            keeper.cancel()
            try:
                await self.registry.release_lock(lock, self.owner)
            except RegistryUnavailable:
                pass

    async def _reprofile(self, migration_id: str) -> None:
        doc = await self.store.get("pending")
        if doc is None or doc["id"] != migration_id or doc["status"] in ("ready", "failed", "stopped"):
            return
        router = await self._router_for(doc)
        assert router.repset is not None
        # as a job does: without a judge, judged items cannot be graded, so they are not asked
        items = job_items(router.repset.repset, None, 0, judge=self.settings.judge_model is not None)
        new_version = doc["repset_version"]
        old_version = doc["from"]["repset_version"]
        doc["status"] = "profiling"
        todo: dict[str, tuple[ModelRecord, list[RepItem], dict[str, Answer]]] = {}
        for record in [r for r in self.registry.snapshot().values() if _profiled(r)]:
            stored = await self.registry.answers(record.name, new_version)
            have = {pid for pid, a in stored.items() if a.error is None}
            declined = declined_ids(stored)
            old = await self.registry.answers(record.name, old_version) if old_version != new_version else {}
            reused = [old[i.id] for i in items if i.id not in have and i.id in old and old[i.id].error is None]
            for answer in reused:
                await self.registry.record_answer(record.name, new_version, answer)
            known = have | {a.prompt_id for a in reused}
            progress = doc["models"].setdefault(record.name, {"asked": 0, "errors": 0, "spend": 0.0})
            progress.update(state="profiling", total=len(items), reused=len(reused), done=len(known),
                            declined=len([i for i in items if i.id in declined]), error=None)
            # a resumed migration grades again, not asks again, what the model answered and the judge failed
            todo[record.name] = (record, [i for i in items if i.id not in known and i.id not in declined],
                                 unjudged_answers(stored))
        await self._save(doc)
        cap = doc["spend_cap"]
        # each model's own backoff and failures in a row (its upstream's outage is its own), one
        # bound on the requests in flight for the whole migration
        passes = {name: Pass(self.jobs.resilience) for name in todo}
        gate = asyncio.Semaphore(self.settings.profile_concurrency)

        def settle_for(name: str) -> Callable[[Answer, float], Awaitable[None]]:
            async def settle(answer: Answer, spent: float) -> None:
                p = doc["models"][name]
                p["asked"] += 1
                p["done"] += answer.error is None
                p["declined"] += answer.error is not None and answer.declined
                p["errors"] += answer.error is not None and not answer.declined
                p["spend"] += spent
                doc["spend"] += spent
                if cap is not None and doc["spend"] >= cap:
                    for run in passes.values():
                        run.cap_reached()
                await self._save(doc)
            return settle

        await asyncio.gather(*(self.jobs.ask_each(record, missing, self.jobs.options, passes[name], new_version,
                                                  settle_for(name), gate, unjudged)
                               for name, (record, missing, unjudged) in todo.items()))
        over_cap = any(run.over_cap for run in passes.values())
        for name, p in doc["models"].items():
            last_error = passes[name].last_error if name in passes else None
            p.update(self._readiness(router, items, await self.registry.answers(name, new_version), last_error))
            if p["state"] == "ready" and over_cap and p["done"] + p["declined"] < p["total"]:
                p.update(state="incomplete", error=f"spend cap reached after {p['done']} of {p['total']} items")
            elif p["state"] != "ready" and name in passes and passes[name].stop_reason is not None:
                p["error"] = f"stopped asking: {passes[name].stop_reason}; {p['error']}"
        behind = sorted(name for name, p in doc["models"].items() if p["state"] != "ready")
        if behind:
            why = f"spend cap {cap:g} reached; " if over_cap else ""
            doc.update(status="stopped", error=f"{why}not ready: {', '.join(behind)}; commit with force to switch "
                                               "anyway (they route on what they answered, or not at all)")
        else:
            doc.update(status="ready", error=None)
        await self._save(doc, announce=True)
        log.info("state migration %s: %s (spend %.4g)", migration_id, doc["status"], doc["spend"])
        if doc["status"] == "ready" and doc["auto_commit"]:
            await self.commit()

    def _readiness(self, router: UniRouter, items: list[RepItem], stored: dict[str, Answer],
                   last_error: str | None) -> dict:
        """A model's progress fields once it has been asked: ready under the rule a profiling job
        routes by (the coverage floors, declined items left out), else why not (with `last_error`,
        its pass's last failure, as a job's pause says it)."""
        assert router.repset is not None
        wanted = {item.id for item in items}
        stored = {pid: a for pid, a in stored.items() if pid in wanted}
        good = {pid for pid, a in stored.items() if a.error is None}
        declined = declined_ids(stored)
        fields = {"done": len(good), "declined": len(declined)}
        if not good:
            why = "the model declined every item of the new set" if declined == wanted else \
                "no item of the new set was answered"
            return {**fields, "state": "failed", "error": why}
        short = too_little_graded(router.repset, items, stored, self.jobs.resilience)
        if short is not None:
            return {**fields, "state": "incomplete", "error": with_last_failure(short, last_error)}
        return {**fields, "state": "ready", "error": None}

    async def _save(self, doc: dict, announce: bool = False) -> None:
        doc["updated_at"] = time.time()
        current = await self.store.get("pending")
        if current is None or current["id"] != doc["id"]:
            raise Abandoned(doc["id"])  # never write back a migration that was abandoned meanwhile
        await self.store.put("pending", doc, announce=announce)
