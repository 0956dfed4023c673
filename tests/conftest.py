"""Fixtures shared by the whole suite: the real embedding model and the real Redis."""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from tests.support.run_cache import run_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REDIS_URL = os.environ.get("UNIROUTE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def embedder():
    """The shipped MiniLM, loaded once for the session (no hub access)."""
    from router_core.embedding import load_embedder

    return load_embedder("accurate")


@pytest.fixture(scope="session")
def default_state():
    """(state, its embedder) of the RouterBench router state the RouterBench tests route with,
    as the gateway loads them."""
    from router_core.shipped import state_path
    from router_core.state import RouterState, state_embedder

    directory = state_path("routerbench-fast")
    state = RouterState.load(directory)
    return state, state_embedder(state, directory)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> str:
    """One embedding cache for every gateway of the run, in any test folder and any xdist worker
    (the representative set is embedded once; the cache is made for processes sharing it)."""
    path = run_dir(tmp_path_factory) / "embed-cache"
    path.mkdir(exist_ok=True)
    return str(path)


def _redis_reachable(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def redis_url() -> str:
    """URL of the real shared Redis; fails under CI=true when it is unreachable, skips otherwise."""
    if not _redis_reachable(REDIS_URL):
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis unreachable at {REDIS_URL} and CI=true")
        pytest.skip(f"Redis unreachable at {REDIS_URL}")
    return REDIS_URL


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix unique to the test, so tests never collide on the shared server."""
    return f"uniroute-test:{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def shared_redis(redis_url: str, redis_prefix: str):
    """(url, prefix) on the shared Redis; every key under the prefix is deleted afterwards."""
    import redis

    yield redis_url, redis_prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{redis_prefix}*", count=500))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def private_redis(tmp_path: Path):
    """A started redis-server of the test's own, which it may kill and restart; killed at the end."""
    from tests.support.redis_server import PrivateRedis

    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed and CI=true")
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def client(base_url: str):
    """The openai SDK (no retries) on the module's `base_url` server: the tests of the upstream
    stand-ins check what the SDK makes of what they send."""
    from tests.support.clients import client as sdk_client

    return sdk_client(base_url, api_key="test-key", timeout=10)


@pytest.fixture
def aclient(base_url: str):
    """The async openai SDK (no retries) on the module's `base_url` server."""
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=base_url + "/v1", api_key="test-key", max_retries=0, timeout=10)
