"""The capture store, on both backends (a real SQLite file, the real Redis): what it keeps, and
the limits it enforces on every write."""
from __future__ import annotations

from pathlib import Path

import pytest

from models_registry.capture import (
    CapturedPrompt,
    RedisCaptureStore,
    SQLiteCaptureStore,
    prompt_id,
)
from tests.models_registry.helpers import on_backend, started


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request, tmp_path: Path):
    async with started(on_backend(request, tmp_path, SQLiteCaptureStore, RedisCaptureStore)) as (s,):
        yield s


async def exported(store) -> list[CapturedPrompt]:
    return [item async for batch in store.batches(size=3) for item in batch]


async def test_items_come_back_oldest_first_with_cluster_and_time(store):
    for i, t in enumerate([30.0, 10.0, 20.0, 40.0, 50.0]):
        await store.add(CapturedPrompt.of(f"prompt {i}", i % 2, t), max_prompts=100, not_before=0.0)
    items = await exported(store)
    assert [i.captured_at for i in items] == [10.0, 20.0, 30.0, 40.0, 50.0]
    assert items[0] == CapturedPrompt(prompt_id("prompt 1"), "prompt 1", 1, 10.0)
    stats = await store.stats()
    assert (stats.count, stats.oldest, stats.newest, stats.by_cluster) == (5, 10.0, 50.0, {0: 3, 1: 2})


async def test_the_same_text_is_kept_once_with_its_latest_time(store):
    await store.add(CapturedPrompt.of("again", 0, 1.0), 100, 0.0)
    await store.add(CapturedPrompt.of("again", 2, 5.0), 100, 0.0)
    assert [(i.prompt, i.cluster, i.captured_at) for i in await exported(store)] == [("again", 2, 5.0)]


async def test_past_max_prompts_the_oldest_go_first(store):
    for t in range(1, 8):
        await store.add(CapturedPrompt.of(f"p{t}", 0, float(t)), max_prompts=4, not_before=0.0)
    assert [i.prompt for i in await exported(store)] == ["p4", "p5", "p6", "p7"]
    assert (await store.stats()).count == 4


async def test_items_older_than_the_retention_go_at_the_next_write(store):
    for t in (1.0, 2.0, 3.0):
        await store.add(CapturedPrompt.of(f"old {t}", 0, t), 100, 0.0)
    await store.add(CapturedPrompt.of("new", 1, 100.0), 100, not_before=2.5)
    assert [i.prompt for i in await exported(store)] == ["old 3.0", "new"]


async def test_clear_forgets_everything_and_says_how_much(store):
    for t in range(3):
        await store.add(CapturedPrompt.of(f"p{t}", 0, float(t)), 100, 0.0)
    assert await store.clear() == 3
    assert await exported(store) == []
    assert (await store.stats()).count == 0
