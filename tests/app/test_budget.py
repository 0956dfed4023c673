"""The online budget guard, driven by a stream of RouterBench requests whose token counts are the
replay upstream's usage: it keeps each window's spend within 5% of its target, alone or shared by
two replicas through the real Redis or two workers through the SQLite file, and leaves λ alone
when there is room.

The stream: the 400 representative prompts (their cluster weights are the gateway's), shuffled,
arriving as a Poisson process of 400 per one-hour window over two windows, on a simulated clock.
Each request is routed by the gateway's rule (`Router.decide`) with λ = max(0, the guard's floor)
— the client asks for the best model whatever it costs — its answer's usage comes from the replay
upstream over HTTP, and its cost is those tokens times the model's prices. Prices are per token,
each model's RouterBench recorded cost over its replayed tokens on a sample of prompts, so costs
follow real answer lengths rather than the curve's estimates.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import redis

from app.costs.budget import (
    ALL,
    BudgetGuard,
    MemoryStore,
    RedisStore,
    SQLiteStore,
    planned_cost,
)
from app.demo.models import demo_models
from app.runtime.config import BudgetConfig
from app.runtime.metrics import Metrics
from router_core.embedding import CachedEmbedder
from router_core.pricing import Price, estimate_tokens
from router_core.repset import load_repset
from router_core.router import UniRouter
from router_core.shipped import ROUTERBENCH_REPSET
from router_core.targets import RoutingTarget
from tests.support.clients import client, wait_for
from tests.support.redis_server import PrivateRedis
from tests.support.sqlite_lock import write_lock_held

WINDOW_S = 3600.0
PER_WINDOW = 400
START = 1000 * WINDOW_S  # on a window boundary
PRICING_SAMPLE = 40


class Clock:
    """A settable clock for the guard."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def market(routerbench, default_state, shared_cache, replay_url):
    """(router with the demo models priced per token, representative prompt texts, their cluster
    weights, usage lookup)."""
    state, embedder = default_state
    repset = load_repset(ROUTERBENCH_REPSET)
    router = UniRouter(state, embedder, repset, repset_embedder=CachedEmbedder(embedder, shared_cache))
    clusters = router.repset
    texts = [item.prompt for item in repset.items]
    http = httpx.Client(base_url=replay_url, timeout=30)
    usages: dict[tuple[int, str], tuple[int, int]] = {}

    def usage(i: int, model: str) -> tuple[int, int]:
        if (i, model) not in usages:
            body = http.post("/chat/completions", json={
                "model": model, "messages": [{"role": "user", "content": texts[i]}]}).json()
            usages[i, model] = (body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"])
        return usages[i, model]

    row = {pid: i for i, pid in enumerate(routerbench.ids)}
    column = {name: j for j, name in enumerate(routerbench.models)}
    for model in demo_models(routerbench, None, clusters.repset.items):
        recorded = sum(routerbench.costs[row[pid], column[model.name]] for pid in clusters.ids[:PRICING_SAMPLE])
        tokens = sum(sum(usage(i, model.name)) for i in range(PRICING_SAMPLE))
        per_mtok = 1e6 * recorded / tokens
        router.add_model(model.name, Price(input_per_mtok=per_mtok, output_per_mtok=per_mtok), scores=model.scores)
    yield router, texts, clusters.weights, usage
    http.close()


def stream(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(arrival times, prompt indices): Poisson arrivals over two windows."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(WINDOW_S / PER_WINDOW, size=3 * PER_WINDOW)
    times = START + np.cumsum(gaps)
    times = times[times < START + 2 * WINDOW_S]
    return times, rng.permutation(np.resize(np.arange(PER_WINDOW), len(times)))


async def replay(market, guards: list[BudgetGuard] | None, clock: Clock) -> tuple[dict[int, float], list[float]]:
    """Route the stream (the replicas taking turns), bill each answer; spend per window and the floors set."""
    router, texts, weights, usage = market
    curve = router.calibration()
    prices = {m.name: m.price for m in router.models}
    unweighted = router.resolve(RoutingTarget("cost_weight", 0.0))
    spend: dict[int, float] = defaultdict(float)
    floors: list[float] = []
    for k, (t, i) in enumerate(zip(*stream())):
        clock.now = t
        guard = guards[k % len(guards)] if guards else None
        lam = 0.0
        if guard is not None:
            floor = (await guard.state(ALL, curve)).cost_weight
            floors.append(floor)
            lam = max(lam, floor)
        decision = router.decide(weights[i], unweighted, estimate_tokens(len(texts[i])), min_cost_weight=lam)
        cost = prices[decision.model].expected(*usage(i, decision.model))
        if guard is not None:
            await guard.record(ALL, cost, planned_cost(curve, lam))
        spend[math.floor(t / WINDOW_S)] += cost
    return dict(spend), floors


@pytest.fixture(scope="module")
def unguarded(market) -> dict[int, float]:
    """Spend per window with no guard."""
    spend, _ = asyncio.run(replay(market, None, Clock()))
    return spend


def memory_guard(target: float, clock: Clock) -> BudgetGuard:
    return BudgetGuard(BudgetConfig(target=target, window_s=WINDOW_S), MemoryStore(clock), clock=clock)


async def test_guard_keeps_each_windows_spend_within_5_percent_of_its_target(market, unguarded):
    target = 0.5 * float(np.mean(list(unguarded.values())))
    clock = Clock()
    spend, floors = await replay(market, [memory_guard(target, clock)], clock)
    print(f"\nunguarded spend per window {unguarded}; target {target:.5f}; guarded {spend}")
    assert len(spend) == 2
    for window, spent in spend.items():
        assert abs(spent - target) <= 0.05 * target, (window, spent, target)
    assert max(floors) > 0  # it had to raise λ


async def test_guard_leaves_the_cost_weight_alone_when_there_is_room(market, unguarded):
    clock = Clock()
    spend, floors = await replay(market, [memory_guard(2 * max(unguarded.values()), clock)], clock)
    assert set(floors) == {0.0}
    assert spend == pytest.approx(unguarded)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def shared_store(request, tmp_path):
    """(kind, a factory of spend stores sharing one set of counts: `make(clock)`): two workers'
    through one SQLite file, or two replicas' through the real Redis (keys checked and removed after)."""
    if request.param == "sqlite":
        yield request.param, lambda clock: SQLiteStore(str(tmp_path / "registry.db"), clock)
        return
    redis_url, redis_prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    yield request.param, lambda clock: RedisStore(redis_url, redis_prefix)
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{redis_prefix}budget:*"))
    assert keys and all(0 < client.ttl(k) <= 2 * WINDOW_S for k in keys)
    client.delete(*keys)


async def test_two_processes_sharing_counts_keep_the_shared_window_within_5_percent(
        market, unguarded, shared_store):
    kind, make = shared_store
    target = 0.5 * float(np.mean(list(unguarded.values())))
    clock = Clock()
    config = BudgetConfig(target=target, window_s=WINDOW_S)
    guards = [BudgetGuard(config, make(clock), clock=clock) for _ in range(2)]
    try:
        for guard in guards:
            await guard.start()
        spend, _ = await replay(market, guards, clock)
        print(f"\nshared through {kind}: target {target:.5f}; spend per window {spend}")
        for window, spent in spend.items():
            assert abs(spent - target) <= 0.05 * target, (window, spent, target)
        # each process sees the other's requests: the last window's counts are the stream's
        last = max(spend)
        state = await guards[0].state(ALL, market[0].calibration())
        times, _ = stream()
        assert state.requests == int(np.sum(np.floor(times / WINDOW_S) == last))
        assert state.spent == pytest.approx(spend[last])
    finally:
        for guard in guards:
            await guard.close()


async def test_guard_goes_on_from_local_counts_while_redis_is_away():
    clock = Clock()
    guard = BudgetGuard(BudgetConfig(target=1.0, window_s=WINDOW_S), RedisStore("redis://127.0.0.1:1", "x:"),
                        clock=clock)
    await guard.record(ALL, 0.25, 0.2)
    clock.now += 10
    state = await guard.state(ALL, None)
    assert (state.spent, state.requests) == (0.25, 1)
    await guard.close()


async def test_a_scrape_finding_the_shared_counts_away_sets_no_gauge_and_leaves_the_requests_counting_there(
        tmp_path):
    # The gauges are set from the windows at each scrape (BudgetGuard.show). Had a scrape's read
    # taken a Redis that did not answer for away, as a request's read does, the replica's requests
    # of the next second would have counted their spend in the process alone, never where the
    # other replicas read it.
    clock = Clock()
    server = PrivateRedis(tmp_path)
    config = BudgetConfig(target=1.0, window_s=WINDOW_S)
    metrics = Metrics()
    scraped, other = (BudgetGuard(config, RedisStore(server.url, "scrape:"), m, clock=clock) for m in (metrics, None))
    try:
        await scraped.show([ALL], None)  # Redis not started yet: nothing to show
        assert metrics.registry.get_sample_value("uniroute_budget_window_spend", {"scope": ALL}) is None
        server.start()
        await scraped.record(ALL, 0.25, 0.2)
        assert (await other.state(ALL, None)).spent == 0.25
        await other.record(ALL, 0.5, 0.4)
        await scraped.show([ALL], None)
        assert metrics.registry.get_sample_value("uniroute_budget_window_spend", {"scope": ALL}) == 0.75
    finally:
        await scraped.close()
        await other.close()
        server.kill()


async def test_a_shared_counts_file_that_cannot_be_opened_at_start_is_opened_once_it_can_be(tmp_path):
    # The workers' counts file, locked by another process when a worker started (its busy timeout
    # waited out), stayed closed to that worker until it was restarted: it counted on its own,
    # blind to the other workers' spend, for good.
    db = tmp_path / "registry.db"
    clock = Clock()
    config = BudgetConfig(target=1.0, window_s=WINDOW_S)
    late, other = (BudgetGuard(config, SQLiteStore(str(db), clock), clock=clock) for _ in range(2))
    with write_lock_held(db):
        await late.start()
    try:
        await other.start()
        await other.record(ALL, 0.25, 0.2)
        deadline = asyncio.get_running_loop().time() + 60
        while (await late.state(ALL, None)).requests != 1:  # the other worker's request, read from the file
            assert asyncio.get_running_loop().time() < deadline, "the counts file never opened"
            await asyncio.sleep(0.05)
        await late.record(ALL, 0.5, 0.4)
        assert (await other.state(ALL, None)).spent == 0.75
    finally:
        await late.close()
        await other.close()


def test_while_another_process_holds_the_shared_counts_file_locked_requests_are_answered_without_waiting_it_out(
        make_gateway, tmp_path):
    # The workers of one `uniroute serve` share the counts in the registry's file (workers > 1).
    # Each request waited out the file's 5 s busy timeout, one after the other: the last of eight
    # requests sent together was answered 40 s later, past any client's patience.
    db = tmp_path / "registry.db"
    with make_gateway(sqlite_path=str(db), workers=2, budget={"target": 1000.0, "window_s": 3600}) as gw:
        sdk = client(gw, timeout=15)  # patient: 30 times what the guard may wait, on a loaded machine too
        ask = {"model": "uniroute", "messages": [{"role": "user", "content": "Which planet is the largest?"}]}
        assert sdk.chat.completions.create(**ask).choices[0].message.content
        with write_lock_held(db), ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: sdk.chat.completions.create(**ask), range(8)))
        assert all(a.choices[0].message.content for a in answers)

        # counted locally meanwhile; the file takes the counts again once it is free
        def counted_in_file() -> int:
            with contextlib.closing(sqlite3.connect(db)) as conn:
                return conn.execute("SELECT COALESCE(SUM(requests), 0) FROM budget_spend").fetchone()[0]

        before = counted_in_file()
        assert wait_for(lambda: sdk.chat.completions.create(**ask) and counted_in_file() > before, 30)
