"""Opt-in capture of routed prompts (settings `capture`): a sample of what the router embedded.

Off unless `capture.sample_rate` > 0. `offer` is called on the request path once a prompt is
routed; it decides by chance whether to keep it and writes in the background, so a request
never waits on (or fails with) the store. See models_registry/capture.py for what is stored.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time

from app.runtime.config import CaptureConfig
from app.runtime.metrics import Metrics
from models_registry.base import RegistryUnavailable
from models_registry.capture import CapturedPrompt, CaptureStore

log = logging.getLogger("uniroute.capture")

DAY_S = 86_400.0
# The most writes waiting on the store; a sample offered past it is dropped. A store that is slow
# or locked (another process holding SQLite's write lock makes each write wait out its 5 s busy
# timeout, one at a time) would otherwise gather a task and a prompt for every sampled request.
MAX_PENDING_WRITES = 1_000
# How long a flush (shutdown, an admin export) waits for the writes under way before it drops
# them: they are samples, and a locked store would hold the exit or the export 5 s a write.
FLUSH_S = 5.0


class Capture:
    """Samples routed texts into a CaptureStore under the configured limits."""

    def __init__(self, config: CaptureConfig, store: CaptureStore, rng: random.Random | None = None,
                 metrics: Metrics | None = None) -> None:
        self.config = config
        self.store = store
        self._rng = rng or random.Random()
        self._writes: set[asyncio.Task] = set()
        self.dropped = 0  # samples offered while MAX_PENDING_WRITES were waiting
        self._metrics = metrics

    def _lose(self, reason: str, count: int = 1) -> None:
        """Count samples not stored (`uniroute_capture_lost_total`): the log tells of the backlog
        only once a process."""
        if self._metrics is not None and count:
            self._metrics.capture_lost.labels(reason).inc(count)

    @property
    def enabled(self) -> bool:
        return self.config.sample_rate > 0

    def offer(self, text: str, cluster: int) -> None:
        """Keep `text` (the routing text, as embedded) with its cluster, with probability `sample_rate`."""
        if not self.enabled or not text or self._rng.random() >= self.config.sample_rate:
            return
        if len(self._writes) >= MAX_PENDING_WRITES:
            if not self.dropped:
                log.warning("capture: %d writes are waiting on the store; samples are dropped until they are done",
                            MAX_PENDING_WRITES)
            self.dropped += 1
            self._lose("backlog")
            return
        now = time.time()
        item = CapturedPrompt.of(text, cluster, now)
        task = asyncio.create_task(self._write(item, now - self.config.retention_days * DAY_S))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, item: CapturedPrompt, not_before: float) -> None:
        try:
            await self.store.add(item, self.config.max_prompts, not_before)
        except RegistryUnavailable as exc:  # a lost sample, never a failed request
            log.warning("capture: prompt not stored: %s", exc)
            self._lose("store")

    async def flush(self, timeout_s: float = FLUSH_S) -> None:
        """Wait for the writes under way (before an export, and at shutdown), for `timeout_s` at
        most: the writes still waiting then are cancelled."""
        if not self._writes:
            return
        done, waiting = await asyncio.wait(list(self._writes), timeout=timeout_s)
        for task in waiting:
            task.cancel()
        self._lose("flush", len(waiting))
        await asyncio.gather(*done, *waiting, return_exceptions=True)
