"""The gateway's long-lived parts and their start-up: registry, router state, embedder, upstream client.

Loading the embedding model takes seconds, so it happens in the background: `/healthz`
answers at once, `/readyz` and routed requests wait for `ready`.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from starlette.requests import Request

from app.batching import MicroBatcher
from app.budget import open_guard
from app.config import ModelConfig, Settings
from app.errors import APIError
from app.forwarding import Forwarder, Health
from app.metrics import Metrics
from app.profiles import RepsetClusters
from app.profiling import JobOptions, JobRunner
from app.routing import ModelTable, Router, build_table
from models_registry.factory import open_registry
from models_registry.records import ModelCost, ModelRecord
from models_registry.repset import load_repset
from router_core.embedding import CachedEmbedder, embed_for_routing
from router_core.state import RouterState, state_embedder

log = logging.getLogger("uniroute")


def state_version(state: RouterState) -> str:
    """A short id of the router state's clusters: profiles made under another state don't fit."""
    return hashlib.sha256(np.ascontiguousarray(state.centroids).tobytes()).hexdigest()[:12]


UPSTREAM_KEEPALIVE_S = 2.0


def gateway_of(request: Request) -> "Gateway":
    """The gateway serving a request (set on the app at start-up)."""
    return request.app.state.gateway


class Gateway:
    """Everything a request handler needs, created once per app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.registry = open_registry(
            redis_url=settings.redis_url, sqlite_path=settings.sqlite_path, prefix=settings.redis_prefix
        )
        self.health = Health(settings.cooldown_failures, settings.cooldown_s, self.metrics)
        self.budget = open_guard(settings.budget, settings.redis_url, settings.redis_prefix, self.metrics)
        self.client: httpx.AsyncClient | None = None
        self.forwarder: Forwarder | None = None
        self.router: Router | None = None
        self.repset: RepsetClusters | None = None
        self.table = build_table([], 0, settings.expected_output_tokens)
        self.ready = asyncio.Event()
        self.load_error: str | None = None
        # One thread for the embedding model: torch already uses both cores inside a call.
        self._embed_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uniroute-embed")
        self._loader: asyncio.Task | None = None
        self._sweeper: asyncio.Task | None = None
        self._batcher: MicroBatcher | None = None
        self.jobs = JobRunner(
            self, JobOptions(settings.profile_concurrency, settings.profile_max_tokens, settings.profile_spend_cap),
            settings.judge_model,
        )

    async def start(self) -> None:
        """Open the registry and the upstream client; load the model in the background."""
        s = self.settings
        timeout = httpx.Timeout(
            connect=s.timeouts.connect_s, read=s.timeouts.read_s, write=s.timeouts.write_s, pool=s.timeouts.pool_s
        )
        self.client = httpx.AsyncClient(
            timeout=timeout,
            # An idle upstream connection is dropped well before servers close theirs (uvicorn,
            # which vLLM and many others run on, closes after 5 s): reusing one at that moment
            # loses the request to a race.
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=128,
                                keepalive_expiry=UPSTREAM_KEEPALIVE_S),
        )
        self.forwarder = Forwarder(self.client, self.metrics, self.health, s.retries, s.deadline_s)
        await self.registry.start()
        self.registry.on_change(lambda _name: self.refresh())
        self._loader = asyncio.create_task(self._load())

    async def close(self) -> None:
        """Stop background work and release connections."""
        for task in (self._loader, self._sweeper):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.jobs.close()
        if self.budget is not None:
            await self.budget.close()
        if self._batcher is not None:
            await self._batcher.close()
        if self.client is not None:
            await self.client.aclose()
        await self.registry.close()
        self._embed_pool.shutdown(wait=False, cancel_futures=True)

    async def _load(self) -> None:
        s = self.settings
        try:
            t0 = time.perf_counter()
            state = await asyncio.to_thread(RouterState.load, s.state_dir)
            embedder = await asyncio.to_thread(state_embedder, state, s.state_dir, s.embed_threads)
            self.router = Router(state, embedder)
            self._batcher = MicroBatcher(
                self.router.weights, self._embed_pool, s.embed_max_batch, s.embed_batch_wait_ms / 1000,
                self.metrics.embed_batch_size.observe)
            repset = await asyncio.to_thread(load_repset, s.repset_path)
            # The representative set is embedded once per machine (disk cache); request prompts
            # are not written to disk, they only pass through the router's in-memory LRU.
            cached = CachedEmbedder(embedder, s.cache_dir)
            loop = asyncio.get_running_loop()
            emb = await loop.run_in_executor(
                self._embed_pool, embed_for_routing, cached, [item.prompt for item in repset.items], state.max_chars)
            weights = state.cluster_weights(emb)
            self.repset = RepsetClusters(repset, weights, state_version(state), state.prior)
            await self._register_configured(s.models)
            await self._reprofile_stale()
            self.refresh()
            self.ready.set()
            self._sweeper = asyncio.create_task(self.jobs.sweep())
            log.info(
                "router ready in %.1f s: %d clusters, embedder %s, %d representative prompts, %d routable models",
                time.perf_counter() - t0, self.router.n_clusters, state.embedder, len(repset.items),
                len(self.table.records),
            )
        except Exception as exc:  # the gateway stays up to say why it is not ready
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("router failed to load")

    async def weights(self, texts: list[str]) -> np.ndarray:
        """(n, K) cluster weights: recent texts from the router's LRU, the others embedded off the
        event loop, micro-batched with other requests' prompts."""
        router = self.router
        assert router is not None and self._batcher is not None
        rows = [router.lookup(t) for t in texts]
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            computed = await asyncio.gather(*(self._batcher.submit(texts[i]) for i in missing))
            for i, row in zip(missing, computed):
                rows[i] = row
        return np.stack(rows) if rows else np.zeros((0, router.n_clusters))

    def refresh(self) -> None:
        """Rebuild the routable-model table from the registry's snapshot."""
        records = list(self.registry.snapshot().values())
        k = self.router.n_clusters if self.router else 0
        version = self.repset.state_version if self.repset else None
        current = [r for r in records if r.profile is not None and r.profile.state_version == version]
        self.table = build_table(current, k, self.settings.expected_output_tokens, self.repset)
        counts: dict[str, int] = {"profiling": 0, "ready": 0, "failed": 0, "disabled": 0}
        for r in records:
            counts[r.state] = counts.get(r.state, 0) + 1
        for state, n in counts.items():
            self.metrics.models_by_state.labels(state).set(n)

    def require_ready(self) -> tuple[Router, ModelTable]:
        """The router and model table, or 503 while the router is still loading."""
        if not self.ready.is_set() or self.router is None:
            detail = f": {self.load_error}" if self.load_error else "; retry shortly"
            raise APIError(503, f"the router is not ready{detail}", code="not_ready")
        return self.router, self.table

    async def _reprofile_stale(self) -> None:
        """Recompute, from their stored graded answers, the profiles made under another router
        state (other clusters): answers depend on the representative set only, so nothing is asked again."""
        assert self.repset is not None
        version = self.repset.repset.version
        for record in self.registry.snapshot().values():
            if record.profile is None or record.profile.state_version == self.repset.state_version:
                continue
            profile = self.repset.profile_from_answers(await self.registry.answers(record.name, version))
            if profile is None:
                log.warning("model %s was profiled under another router state and has no stored answers "
                            "for this representative set: reprofile it to route to it", record.name)
                continue
            record.profile = profile
            await self.registry.put_model(record)
            log.info("re-profiled %s under router state %s from %d stored answers",
                     record.name, self.repset.state_version, profile.n_prompts)

    async def _register_configured(self, models: list[ModelConfig]) -> None:
        """Register the config file's models the registry does not hold yet."""
        assert self.repset is not None
        existing = self.registry.snapshot()
        for m in models:
            known = existing.get(m.name)
            stale = (known is not None and m.scores_file is not None and known.profile is not None
                     and known.profile.state_version != self.repset.state_version)
            if known is not None and not stale:
                continue
            record = ModelRecord.new(
                name=m.name,
                base_url=m.base_url,
                upstream_model=m.upstream_model or m.name,
                api_key_env=m.api_key_env,
                cost=ModelCost(**m.cost.model_dump()),
            )
            if m.scores_file:
                scores = json.loads(Path(m.scores_file).read_text())
                record.profile = self.repset.profile(scores)
                record.state = "ready"
                record.profiled_at = time.time()
                await self.registry.put_model(record)
            else:
                await self.jobs.start(record)
