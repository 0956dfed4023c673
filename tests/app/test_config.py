"""The config file and settings refuse what they cannot use, in one line, instead of starting the
gateway on defaults: a missing file, a file that is not a mapping of settings, a misspelt setting
(top level or nested), a value out of range, an environment variable that is not the JSON its
setting takes. `uniroute serve` and `uniroute demo` say so and exit 2."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from app.runtime.config import ConfigError, load_settings
from models_registry.states import SQLiteStateStore
from router_core.repset import load_repset
from router_core.shipped import ROUTERBENCH_REPSET, state_path
from router_core.state import RouterState
from tests.support.clients import wait_for
from tests.support.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "config.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


def test_the_example_config_loads_with_every_key_known():
    settings = load_settings(str(REPO / "config.example.yaml"))
    assert settings.models and all(m.base_url.startswith("http") for m in settings.models)


def test_a_valid_file_is_read(tmp_path):
    settings = load_settings(write(tmp_path, "default_cost_weight: 0.3\ntimeouts: {read_s: 12}\n"))
    assert settings.default_cost_weight == 0.3 and settings.timeouts.read_s == 12


@pytest.mark.parametrize(("text", "said"), [
    ("defualt_cost_weight: 0.3\n", "unknown setting 'defualt_cost_weight' (did you mean 'default_cost_weight'?)"),
    ("- a\n- b\n", "must be a mapping of settings, not a list"),
    ("models: [\n", "cannot be read as YAML"),
    ("timeouts: {read: 12}\n", "timeouts.read: Extra inputs are not permitted"),
    ("models:\n  - {name: a, base_url: 'http://x/v1', upstream_modle: b}\n",
     "models.0.upstream_modle: Extra inputs are not permitted"),
    ("capture: {sample_rate: 2}\n", "capture.sample_rate: Input should be less than or equal to 1"),
    ("default_cost_weight: .nan\n", "default_cost_weight: Input should be a finite number"),
    # the socket layer wrapped it: 99999 listened on 34463
    ("port: 99999\n", "port: Input should be less than or equal to 65535"),
    (b"log_level: info  # caf\xe9, saved as Latin-1\n", "is not UTF-8 text (byte 22: invalid continuation byte)"),
    # models the registry refuses: each failed every worker's start with a traceback, then a 503 for ever
    ("models:\n  - {name: 'my model', base_url: 'http://x/v1'}\n", "models.0.name: Value error, name: must not "
                                                                  "contain whitespace"),
    ("models:\n  - {name: uniroute, base_url: 'http://x/v1'}\n", "models.0.name: Value error, model names starting "
                                                                "with 'uniroute' are reserved for routing"),
    ("models:\n  - {name: a, base_url: 'ftp://x/v1'}\n", "models.0.base_url: Value error, base_url: must start with "
                                                        "http:// or https://"),
    ("models:\n  - {name: a, base_url: 'http://x/v1', api_key_env: 'sk-123'}\n", "models.0.api_key_env: String "
                                                                                "should match pattern"),
    ("models:\n  - {name: a, base_url: 'http://x/v1'}\n  - {name: a, base_url: 'http://y/v1'}\n",
     "models: Value error, each model name may be declared once: a declared more than once"),
    ("embeddings_model: {name: e, base_url: 'x:8000/v1'}\n", "embeddings_model.base_url: Value error, base_url: "
                                                             "must start with http:// or https://"),
])
def test_a_file_the_gateway_cannot_use_is_one_clear_error(tmp_path, text, said):
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert said in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_config_file_is_an_error_not_the_defaults(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_settings(str(tmp_path / "typo.yaml"))


def test_client_keys_and_admin_key_variables_are_comma_separated_in_the_environment(monkeypatch):
    monkeypatch.setenv("UNIROUTE_API_KEYS", "k1, k2")
    monkeypatch.setenv("UNIROUTE_ADMIN_KEY_ENVS", "AZURE_*, *_API_KEY")
    settings = load_settings()
    assert settings.api_keys == ["k1", "k2"] and settings.admin_key_envs == ["AZURE_*", "*_API_KEY"]


def test_a_nested_environment_variable_naming_no_field_is_an_error(monkeypatch):
    monkeypatch.setenv("UNIROUTE_TIMEOUTS__READ", "30")
    with pytest.raises(ConfigError, match="timeouts.read: Extra inputs are not permitted"):
        load_settings()


@pytest.mark.parametrize(("variable", "value"), [("UNIROUTE_POLICIES", "{bad"), ("UNIROUTE_MODELS", "x"),
                                                 ("UNIROUTE_TIMEOUTS", "[1,")])
def test_an_environment_variable_that_is_not_json_is_one_clear_error(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith(f"invalid settings: {variable}: not valid JSON")
    assert "\n" not in str(caught.value)


def cli(*args: str, config: str | None = None, cwd: Path, **variables: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIROUTE_")}
    env["PYTHONPATH"] = str(REPO)  # this checkout's code, run from elsewhere (an installed copy may differ)
    if config is not None:
        env["UNIROUTE_CONFIG"] = config
    env.update(variables)
    return subprocess.run([sys.executable, "-m", "app.cli.main", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_serve_and_demo_stop_on_a_bad_config_with_one_line_and_serve_nothing(tmp_path):
    port, upstream_port = free_port(), free_port()
    typo = write(tmp_path, "defualt_cost_weight: 0.3\n")
    served = cli("serve", "--port", str(port), "--config", str(tmp_path / "nowhere.yaml"), cwd=tmp_path)
    assert served.returncode == 2 and "Traceback" not in served.stderr
    assert served.stderr.strip() == f"uniroute serve: error: {tmp_path / 'nowhere.yaml'}: no such config file"
    demo = cli("demo", "--port", str(port), "--upstream-port", str(upstream_port), "--workdir", str(tmp_path / "d"),
               config=typo, cwd=tmp_path)
    assert demo.returncode == 2 and "Traceback" not in demo.stderr
    assert demo.stderr.strip().endswith("unknown setting 'defualt_cost_weight' (did you mean 'default_cost_weight'?)")
    for listening in (port, upstream_port):  # neither the gateway nor the demo's replay upstream started
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{listening}/healthz", timeout=2)


def test_serve_and_demo_stop_on_an_environment_variable_that_is_not_json_with_one_line(tmp_path):
    port, upstream_port = free_port(), free_port()
    config = write(tmp_path, "admin_key: x\n")
    said = "invalid settings: UNIROUTE_POLICIES: not valid JSON ("
    served = cli("serve", "--port", str(port), "--config", config, cwd=tmp_path, UNIROUTE_POLICIES="{bad")
    assert served.returncode == 2 and len(served.stderr.strip().splitlines()) == 1
    assert served.stderr.startswith(f"uniroute serve: error: {said}")
    demo = cli("demo", "--port", str(port), "--upstream-port", str(upstream_port), "--workdir", str(tmp_path / "d"),
               config=config, cwd=tmp_path, UNIROUTE_POLICIES="{bad")
    assert demo.returncode == 2 and len(demo.stderr.strip().splitlines()) == 1
    assert demo.stderr.startswith(f"uniroute demo: error: {said}")


def test_serve_and_demo_refuse_a_port_out_of_range_with_one_line(tmp_path):
    # `serve --port 99999` listened on 34463 while it logged 99999; demo's --upstream-port 99999
    # was bind()'s OverflowError traceback
    served = cli("serve", "--port", "99999", cwd=tmp_path)
    assert served.returncode == 2 and "Traceback" not in served.stderr
    assert "port: Input should be less than or equal to 65535" in served.stderr
    for option in ("--port", "--upstream-port"):
        demo = cli("demo", option, "99999", "--workdir", str(tmp_path / "d"), cwd=tmp_path)
        assert demo.returncode == 2 and "Traceback" not in demo.stderr
        assert f"argument {option}: port must be 1-65535, got 99999" in demo.stderr


@pytest.mark.parametrize(("make", "said"), [
    (lambda path: path.write_text("these are not the tables you are looking for\n" * 100), "file is not a database"),
    (lambda path: path.mkdir(), "unable to open database file"),
], ids=["not-a-database", "a-directory"])
def test_serve_stops_on_a_registry_file_it_cannot_use_with_one_line_and_starts_no_worker(tmp_path, make, said):
    # each of two workers failed its start with a traceback, and was restarted into the same
    # failure five times before the server gave up
    port, registry = free_port(), tmp_path / "registry.db"
    make(registry)
    served = cli("serve", "--port", str(port), "--workers", "2", cwd=tmp_path, UNIROUTE_SQLITE_PATH=str(registry))
    assert served.returncode == 2 and "Traceback" not in served.stderr and "worker" not in served.stderr
    assert served.stderr.strip() == f"uniroute serve: error: cannot use the registry: SQLite registry {registry}: {said}"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def switch_recorded(registry: Path, state_dir: Path, repset_path: Path) -> None:
    """Write into `registry` the ACTIVE state a state switch to `state_dir` (the shipped
    routerbench-fast state's, wherever it is now) and `repset_path` leaves there."""
    state, repset = RouterState.load(state_path("routerbench-fast")), load_repset(ROUTERBENCH_REPSET)

    async def write() -> None:
        store = SQLiteStateStore(registry)
        await store.start()
        try:
            await store.put("active", {
                "id": "switched", "state_dir": str(state_dir), "repset_path": str(repset_path),
                "state_version": state.version, "scale_version": state.scale_version,
                "repset_version": repset.version, "k": state.k, "switched_at": 0.0, "forced": False, "profiles": {}})
        finally:
            await store.close()

    asyncio.run(write())


@pytest.mark.parametrize(("variables", "said"), [
    ({"UNIROUTE_STATE_DIR": "fats"}, "no valid router state in fats: no such folder (a `uniroute build-state` folder, "
                                     "or a shipped state: fast, accurate, routerbench-fast, routerbench-accurate)"),
    ({"UNIROUTE_REPSET_PATH": "nowhere.jsonl"},
     "cannot read the representative set nowhere.jsonl: No such file or directory"),
], ids=["state-dir", "repset"])
def test_serve_stops_on_a_router_state_it_cannot_load_with_one_line_and_starts_no_worker(tmp_path, variables, said):
    # each worker logged the traceback of its failed load, then answered 503 not_ready for ever
    port = free_port()
    served = cli("serve", "--port", str(port), "--workers", "2", cwd=tmp_path, **variables)
    assert served.returncode == 2 and "Traceback" not in served.stderr and "worker" not in served.stderr
    assert served.stderr.strip() == f"uniroute serve: error: cannot load the router state: {said}"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_serve_checks_the_router_state_a_switch_made_active_not_the_one_it_overrides(tmp_path):
    registry = tmp_path / "registry.db"
    switch_recorded(registry, tmp_path / "removed-state", ROUTERBENCH_REPSET)
    served = cli("serve", "--port", str(free_port()), "--workers", "2", cwd=tmp_path,
                 UNIROUTE_SQLITE_PATH=str(registry), UNIROUTE_STATE_DIR="routerbench-fast")
    assert served.returncode == 2 and len(served.stderr.strip().splitlines()) == 1
    assert served.stderr.startswith("uniroute serve: error: cannot load the router state: the registry's active "
                                    f"router state (a state switch's, which overrides state_dir and repset_path): "
                                    f"no valid router state in {tmp_path / 'removed-state'}: no such folder")

    # The other way round: a misspelt state_dir the active state overrides starts, on the active state.
    switch_recorded(registry, state_path("routerbench-fast"), ROUTERBENCH_REPSET)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIROUTE_")}
    env.update(PYTHONPATH=str(REPO), UNIROUTE_SQLITE_PATH=str(registry), UNIROUTE_STATE_DIR="fats")
    server = subprocess.Popen([sys.executable, "-m", "app.cli.main", "serve", "--port", str(port), "--workers", "1"],
                              env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
            except httpx.TransportError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                return False

        assert wait_for(ready, 120), "the gateway never became ready on the active state"
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture
def redis_with_password(private_redis) -> str:
    """A redis-server of the test's own that wants the password "sekret"; its URL without one."""
    import redis

    redis.Redis(port=private_redis.port).config_set("requirepass", "sekret")
    return private_redis.url


@pytest.mark.parametrize("password", ["", ":wrong@"])
def test_serve_stops_on_a_redis_refusing_the_urls_credentials_with_one_line(tmp_path, redis_with_password,
                                                                          password):
    # it started "unreachable" with no models, retried for ever, and told clients to register one
    port, url = free_port(), redis_with_password.replace("redis://", "redis://" + password)
    served = cli("serve", "--port", str(port), "--workers", "2", cwd=tmp_path, UNIROUTE_REDIS_URL=url)
    assert served.returncode == 2 and "Traceback" not in served.stderr and "worker" not in served.stderr
    said = served.stderr.strip()
    assert said.startswith("uniroute serve: error: cannot use the registry: Redis at redis://")
    assert "refuses the credentials of redis_url" in said and "wrong" not in said and len(said.splitlines()) == 1


def test_a_gateway_on_a_redis_refusing_its_credentials_says_so_on_an_admin_write(make_gateway, redis_with_password):
    with make_gateway(models=[], redis_url=redis_with_password, redis_prefix="auth:", admin_key="k") as gw:
        r = httpx.post(gw + "/admin/models", headers={"authorization": "Bearer k"}, timeout=30,
                       json={"name": "m", "base_url": "http://127.0.0.1:9/v1", "cost": {"per_request": 1}})
        assert r.status_code == 503 and r.json()["error"]["code"] == "registry_unavailable"
        assert "authenticated" in r.json()["error"]["message"]  # not merely "unreachable"
