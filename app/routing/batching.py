"""Micro-batching: prompts that arrive while the embedding model is busy are embedded together.

One embedding call of 32 prompts costs far less than 32 calls of one (the model's fixed cost per
call dominates short prompts), and the event loop never waits on the model: callers await a
future while one worker feeds the model's thread. With no wait configured nothing is held back:
a lone prompt goes to the model at once, and a batch forms only from what queued meanwhile.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np


class MicroBatcher:
    """Coalesces concurrent `submit(text)` calls into calls of `fn(texts) -> (n, ...) array`."""

    def __init__(self, fn: Callable[[list[str]], np.ndarray], executor: Executor, max_batch: int = 64,
                 max_wait_s: float = 0.0, on_batch: Callable[[int], None] | None = None) -> None:
        self._fn = fn
        self._executor = executor
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._queue: asyncio.Queue[tuple[str, asyncio.Future]] = asyncio.Queue()
        self._worker: asyncio.Task | None = None

    async def submit(self, text: str) -> np.ndarray:
        """`fn([text])[0]`, computed in a batch with whatever else is waiting."""
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((text, future))
        return await future

    async def close(self) -> None:
        """Stop the worker; prompts still queued get a CancelledError."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        while not self._queue.empty():
            self._queue.get_nowait()[1].cancel()

    def _take(self, first: tuple[str, asyncio.Future]) -> list[tuple[str, asyncio.Future]]:
        batch = [first]
        while len(batch) < self._max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        # A caller that gave up (client gone) needs no embedding.
        return [(t, f) for t, f in batch if not f.cancelled()]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            if self._max_wait_s > 0 and self._queue.qsize() + 1 < self._max_batch:
                await asyncio.sleep(self._max_wait_s)
            batch = self._take(first)
            if not batch:
                continue
            if self._on_batch is not None:
                self._on_batch(len(batch))
            try:
                rows = await loop.run_in_executor(self._executor, self._fn, [t for t, _ in batch])
            except Exception as exc:  # every waiting caller learns why, the worker goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), row in zip(batch, rows):
                if not future.done():
                    future.set_result(row)
