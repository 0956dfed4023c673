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
from models_registry.base import RegistryUnavailable
from models_registry.capture import CapturedPrompt, CaptureStore

log = logging.getLogger("uniroute.capture")

DAY_S = 86_400.0


class Capture:
    """Samples routed texts into a CaptureStore under the configured limits."""

    def __init__(self, config: CaptureConfig, store: CaptureStore, rng: random.Random | None = None) -> None:
        self.config = config
        self.store = store
        self._rng = rng or random.Random()
        self._writes: set[asyncio.Task] = set()

    @property
    def enabled(self) -> bool:
        return self.config.sample_rate > 0

    def offer(self, text: str, cluster: int) -> None:
        """Keep `text` (the routing text, as embedded) with its cluster, with probability `sample_rate`."""
        if not self.enabled or not text or self._rng.random() >= self.config.sample_rate:
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

    async def flush(self) -> None:
        """Wait for the writes under way (before an export, and at shutdown)."""
        if self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)
