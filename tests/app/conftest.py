"""Gateways served by uvicorn on real sockets, in front of real HTTP upstreams.

The replay upstream answers as the 11 RouterBench LLMs and the 13 arena-bench-v1 LLMs did (17
names), with the replay judge; the demo's RouterBench models (recorded labels on the RouterBench
representative prompts as profiles, mean recorded cost as price) are registered in each gateway
unless a test asks for other models.
"""
from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from app.api.main import create_app
from app.demo import ROUTERBENCH_DIR
from app.demo.arena import ArenaRecords, load_arena
from app.demo.models import demo_configs as build_demo_configs
from app.demo.replay_data import demo_replay_app
from app.runtime.config import ModelConfig, PriceIn, Settings
from router_core.datasets import RoutingDataset, load_routerbench
from router_core.repset import load_repset
from router_core.shipped import ROUTERBENCH_REPSET
from tests.support.fault_upstream import FaultUpstream
from tests.support.servers import serve


@pytest.fixture(scope="session")
def routerbench() -> RoutingDataset:
    return load_routerbench(ROUTERBENCH_DIR)


@pytest.fixture(scope="session")
def arena() -> ArenaRecords:
    return load_arena()


@pytest.fixture(scope="session")
def test_split_ids() -> list[str]:
    """Ids of RouterBench's test-split prompts (ids do not name their split; the files do)."""
    return [pid for path in sorted(ROUTERBENCH_DIR.glob("*_test.csv")) for pid in load_routerbench(path).ids]


@pytest.fixture(scope="session")
def replay_url(arena) -> Iterator[str]:
    """The demo's replay upstream with no added latency, as an OpenAI base URL."""
    with serve(demo_replay_app(latency_scale=0.0, arena=arena)) as url:
        yield url + "/v1"


# The replay upstream answers as the RouterBench LLMs did, so the gateways of these tests route
# with the RouterBench state and its multiple-choice representative set, on which every demo
# model has recorded labels. Tests of the general defaults say so.
ROUTERBENCH_SETTINGS = {"state_dir": "routerbench-fast", "repset_path": str(ROUTERBENCH_REPSET)}


@pytest.fixture(scope="session")
def repset_ids() -> list[str]:
    return [item.id for item in load_repset(ROUTERBENCH_REPSET).items]


@pytest.fixture(scope="session")
def demo_configs(routerbench, arena, replay_url, tmp_path_factory) -> list[ModelConfig]:
    """The demo's models on the RouterBench set: the 11 RouterBench LLMs (the arena-only six have
    no recorded label there)."""
    items = load_repset(ROUTERBENCH_REPSET).items
    return build_demo_configs(routerbench, arena, items, replay_url, tmp_path_factory.mktemp("scores"))


@pytest.fixture
def fault_upstream() -> Iterator[tuple[FaultUpstream, str]]:
    upstream = FaultUpstream()
    with serve(upstream.app) as url:
        yield upstream, url + "/v1"


def wait_ready(base_url: str, timeout_s: float = 300.0) -> None:
    """Block until the gateway's /readyz says ready; fail with its reason otherwise."""
    deadline = time.monotonic() + timeout_s
    body: dict = {}
    while time.monotonic() < deadline:
        r = httpx.get(base_url + "/readyz", timeout=5)
        body = r.json()
        if r.status_code == 200:
            return
        if body.get("status") == "failed":
            break
        time.sleep(0.1)
    raise AssertionError(f"gateway not ready: {body}")


GatewayFactory = Callable[..., contextlib.AbstractContextManager[str]]


@pytest.fixture
def make_gateway(tmp_path: Path, shared_cache: str, demo_configs) -> GatewayFactory:
    """`with make_gateway(**settings) as base_url:` a ready gateway (demo models unless `models=` given)."""

    @contextlib.contextmanager
    def factory(**overrides) -> Iterator[str]:
        fields = {"sqlite_path": str(tmp_path / f"registry-{time.monotonic_ns()}.db"),
                  "cache_dir": shared_cache, "models": demo_configs, **ROUTERBENCH_SETTINGS}
        fields.update(overrides)
        with serve(create_app(Settings(**fields))) as url:
            wait_ready(url)
            yield url

    return factory


@pytest.fixture
def demo_gateway(make_gateway) -> Iterator[str]:
    with make_gateway() as url:
        yield url


@pytest.fixture
def model_config(tmp_path: Path, repset_ids) -> Callable[..., ModelConfig]:
    """A ModelConfig scoring `score` on every representative prompt (so its error is 1 - score everywhere)."""

    def make(name: str, base_url: str, *, upstream_model: str | None = None, score: float = 0.8,
             per_request: float = 1.0) -> ModelConfig:
        path = tmp_path / f"scores-{abs(hash(name))}.json"
        path.write_text(json.dumps({pid: score for pid in repset_ids}))
        return ModelConfig(name=name, base_url=base_url, upstream_model=upstream_model or name,
                           cost=PriceIn(per_request=per_request), scores_file=str(path))

    return make
