"""Micro-batching: concurrent prompts share embedding calls, each gets its own row, and a failed
call fails only its own waiters."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.routing.batching import MicroBatcher

PROMPTS = [f"Question {i}: which planet is {i} steps from the sun?" for i in range(40)]


@pytest.fixture
def pool():
    with ThreadPoolExecutor(1) as executor:
        yield executor


def recording(embedder, calls: list[int]):
    """The embedder's encode, noting each call's batch size in `calls`."""

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return embedder.encode(texts)

    return encode


async def test_concurrent_prompts_share_calls_and_get_their_own_rows(embedder, pool):
    calls: list[int] = []
    batcher = MicroBatcher(recording(embedder, calls), pool, max_batch=16)
    rows = await asyncio.gather(*(batcher.submit(p) for p in PROMPTS))
    await batcher.close()
    assert sum(calls) == len(PROMPTS) and max(calls) == 16 and len(calls) <= 4
    alone = embedder.encode(PROMPTS)
    assert np.allclose(np.stack(rows), alone, atol=1e-5)


async def test_a_failed_call_fails_its_waiters_and_the_batcher_goes_on(embedder, pool):
    def encode(texts: list[str]) -> np.ndarray:
        if any("poison" in t for t in texts):
            raise RuntimeError("the model broke")
        return embedder.encode(texts)

    batcher = MicroBatcher(encode, pool)
    failed = await asyncio.gather(batcher.submit("poison pill"), batcher.submit("a neighbour"),
                                  return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in failed)
    row = await batcher.submit("a later prompt")
    assert row.shape == (embedder.dim,)
    await batcher.close()


async def test_a_wait_lets_stragglers_join_the_batch(embedder, pool):
    calls: list[int] = []
    batcher = MicroBatcher(recording(embedder, calls), pool, max_wait_s=0.5)

    async def late(i: int) -> np.ndarray:
        await asyncio.sleep(0.01 * i)
        return await batcher.submit(PROMPTS[i])

    await asyncio.gather(*(late(i) for i in range(5)))
    await batcher.close()
    assert calls == [5]
