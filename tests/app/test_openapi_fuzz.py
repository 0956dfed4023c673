"""Fuzz every operation of the live gateway's OpenAPI schema with schemathesis, over a real
socket: no generated request gets a 5xx, and every error is OpenAI-shaped.

The upstream is the replay upstream, healthy: a 502/503/504 would be the gateway's fault here.

The gateway's schema has no request body for /v1/chat/completions, /v1/completions and
/v1/route (their handlers read the raw body, so that unread fields pass through untouched), so
the test writes one from what those handlers read. Operations whose inputs the test writes are
fuzzed twice: with loose inputs (any JSON where the gateway expects a type: validation must
answer 400) and with well-formed ones, drawn from values that reach deep code (the router
names, the registered models, the representative set's prompt ids, names the fuzzer registers),
so that routing, upstream calls, registrations and profiling jobs run too. Registered base URLs
are pinned to this machine's replay upstream or to URLs the gateway must refuse: a fuzzed URL
never sends a profiling job to another host.

Bounded: MAX_EXAMPLES per operation and variant (UNIROUTE_FUZZ_EXAMPLES), a fixed seed
(UNIROUTE_FUZZ_SEED).
"""
from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import hypothesis
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig

from app.api.main import create_app
from app.runtime.config import Settings
from tests.app.conftest import ROUTERBENCH_SETTINGS, wait_ready
from tests.support.servers import serve

ADMIN = "fuzz-admin-key"
MAX_EXAMPLES = int(os.environ.get("UNIROUTE_FUZZ_EXAMPLES", "25"))
SEED = int(os.environ.get("UNIROUTE_FUZZ_SEED", "20260"))
# Names the fuzzer registers, then reads, patches, reprofiles and deletes. The demo models are
# never named in a path: they stay registered, so routing always has models to route to.
FUZZ_NAMES = ["fuzz-a", "fuzz-b"]


def valid_fields(model_names: list[str]) -> dict:
    """What a well-formed completion request may carry, as the gateway reads it."""
    return {
        "model": {"enum": ["uniroute", "uniroute:0.5", "uniroute:0", *model_names]},
        "stream": {"type": "boolean"},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 64},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "uniroute": {"type": "object", "additionalProperties": False, "properties": {
            "cost_weight": {"type": "number", "minimum": 0, "maximum": 5},
            "models": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": model_names}},
        }},
    }


def loose_fields() -> dict:
    """The same fields as any JSON. The model is always a name, valid or not, so that the
    gateway reads on past it."""
    return {
        "model": {"enum": ["uniroute", "uniroute:-1", "uniroute:nan", "uniroute:x", "", "nobody", *FUZZ_NAMES]},
        "stream": {}, "max_tokens": {}, "uniroute": {},
    }


def chat_body(model_names: list[str], well_formed: bool) -> dict:
    if not well_formed:
        return {"type": "object", "required": ["model", "messages"], "properties": {**loose_fields(), "messages": {}}}
    message = {"type": "object", "required": ["role", "content"], "additionalProperties": False, "properties": {
        "role": {"enum": ["user", "system", "assistant", "developer"]},
        "content": {"anyOf": [{"type": "string", "maxLength": 200},
                              {"type": "array", "maxItems": 2, "items": {"enum": [{"type": "text", "text": "Hi?"}]}}]},
    }}
    return {"type": "object", "required": ["model", "messages"], "additionalProperties": False, "properties": {
        **valid_fields(model_names), "messages": {"type": "array", "minItems": 1, "maxItems": 3, "items": message}}}


def completion_body(model_names: list[str], well_formed: bool) -> dict:
    if not well_formed:
        return {"type": "object", "required": ["model", "prompt"], "properties": {**loose_fields(), "prompt": {}}}
    prompt = {"anyOf": [{"type": "string", "maxLength": 200},
                        {"type": "array", "minItems": 1, "maxItems": 3, "items": {"type": "string", "maxLength": 80}}]}
    return {"type": "object", "required": ["model", "prompt"], "additionalProperties": False, "properties": {
        **valid_fields(model_names), "prompt": prompt}}


def register_body(replay_url: str, upstream_models: list[str], repset_ids: list[str]) -> dict:
    """A registration the gateway accepts: precomputed scores, or a profiling job against the
    replay upstream (or a reserved name, or one registered already)."""
    price = {"type": "number", "minimum": 0, "maximum": 10}
    return {"type": "object", "required": ["name", "base_url", "cost"], "additionalProperties": False, "properties": {
        "name": {"enum": [*FUZZ_NAMES, "uniroute", "uniroute:x"]},
        "base_url": {"enum": [replay_url]},
        "upstream_model": {"enum": upstream_models},
        "cost": {"anyOf": [
            {"type": "object", "required": ["per_request"], "additionalProperties": False,
             "properties": {"per_request": price}},
            {"type": "object", "required": ["input_per_mtok", "output_per_mtok"], "additionalProperties": False,
             "properties": {"input_per_mtok": price, "output_per_mtok": price}}]},
        "scores": {"type": "object", "minProperties": 1, "additionalProperties": False,
                   "properties": {pid: {"type": "number", "minimum": 0, "maximum": 1} for pid in repset_ids[:5]}},
    }}


def json_body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def fuzzable(raw: dict, replay_url: str, demo_models: list[tuple[str, str]], repset_ids: list[str],
             well_formed: bool) -> dict:
    """The gateway's OpenAPI schema with request bodies for the raw-body endpoints; with
    `well_formed`, well-formed inputs only (see the module docstring)."""
    schema = copy.deepcopy(raw)
    names = [name for name, _ in demo_models]
    paths = schema["paths"]
    paths["/v1/chat/completions"]["post"]["requestBody"] = json_body(chat_body(names, well_formed))
    paths["/v1/completions"]["post"]["requestBody"] = json_body(completion_body(names, well_formed))
    paths["/v1/route"]["post"]["requestBody"] = json_body(
        {"anyOf": [chat_body(names, well_formed), completion_body(names, well_formed)]})
    # Only this machine's replay upstream, or URLs the gateway must refuse: never another host.
    schema["components"]["schemas"]["RegisterIn"]["properties"]["base_url"] = {
        "enum": [replay_url, "ftp://127.0.0.1/v1", "127.0.0.1:1/v1", "http://", "file:///etc/passwd"]}
    if well_formed:
        upstream_models = [upstream for _, upstream in demo_models]
        registration = register_body(replay_url, upstream_models, repset_ids)
        paths["/admin/models"]["post"]["requestBody"] = json_body(registration)
        for operations in paths.values():
            for operation in operations.values():
                for param in operation.get("parameters", []):
                    if param["in"] == "path" and param["name"] == "name":
                        param["schema"] = {"enum": FUZZ_NAMES}
    return schema


@pytest.fixture(scope="module")
def fuzz_gateway(tmp_path_factory, shared_cache, demo_configs) -> Iterator[str]:
    """The demo gateway with the admin API on (its profiling jobs ask one prompt at a time)."""
    settings = Settings(sqlite_path=str(tmp_path_factory.mktemp("fuzz") / "registry.db"), cache_dir=shared_cache,
                        **ROUTERBENCH_SETTINGS,
                        models=demo_configs, admin_key=ADMIN, profile_concurrency=1)
    with serve(create_app(settings)) as url:
        wait_ready(url)
        yield url


@pytest.fixture(scope="module")
def gateway_schemas(fuzz_gateway, replay_url, demo_configs, repset_ids) -> dict[bool, schemathesis.BaseSchema]:
    """The live gateway's /openapi.json made fuzzable, as schemathesis schemas: well-formed
    inputs (True) and loose ones (False)."""
    raw = httpx.get(fuzz_gateway + "/openapi.json", timeout=30).json()
    config = SchemathesisConfig.from_dict({"base-url": fuzz_gateway, "generation": {"mode": "positive"}})
    demo = [(m.name, m.upstream_model) for m in demo_configs]
    return {well_formed: schemathesis.openapi.from_dict(fuzzable(raw, replay_url, demo, repset_ids, well_formed),
                                                        config=config)
            for well_formed in (True, False)}


def check(case) -> None:
    """Send the case; a 5xx fails, and so does an error that is not OpenAI-shaped."""
    body = case.body if isinstance(case.body, dict) else {}
    host = urlsplit(str(body.get("base_url", ""))).hostname
    assert host in (None, "", "127.0.0.1"), f"the fuzzer generated a base_url to {host}"
    response = case.call(headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60)
    assert response.status_code < 500, (
        f"{response.status_code} for {case.as_curl_command()}\n{response.text[:2000]}")
    if response.status_code >= 400:
        error = response.json().get("error")
        assert isinstance(error, dict) and {"message", "type", "param", "code"} <= set(error), response.text


def operations() -> list[tuple[str, str, bool]]:
    """(method, path, well_formed) to fuzz, deletions last (the fuzzer's own models are read,
    patched and reprofiled before they are deleted). Known at collection: building the app
    loads nothing, that happens at startup."""
    raw = create_app(Settings()).openapi()
    steered = {("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/route"),
               ("POST", "/admin/models")}
    out = []
    for path, ops in raw["paths"].items():
        for method in ops:
            named = any(p["in"] == "path" and p["name"] == "name" for p in ops[method].get("parameters", []))
            variants = (True, False) if (method.upper(), path) in steered or named else (False,)
            out += [(method.upper(), path, well_formed) for well_formed in variants]
    return sorted(out, key=lambda op: op[0] == "DELETE")


OPERATIONS = operations()


# Driven through Hypothesis directly: schemathesis' own pytest runner (`from_fixture`) fails on
# pytest 9, reading `request.node._nodeid`, which pytest 9 removed.
@pytest.mark.parametrize(("method", "path", "well_formed"), OPERATIONS,
                         ids=[f"{m} {p}" + (" well-formed" if w else "") for m, p, w in OPERATIONS])
def test_no_generated_request_gets_a_server_error(gateway_schemas, method, path, well_formed):
    operation = gateway_schemas[well_formed][path][method]

    @hypothesis.seed(SEED)
    @hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck),
                         phases=[hypothesis.Phase.generate, hypothesis.Phase.shrink])
    @hypothesis.given(case=operation.as_strategy())
    def run(case) -> None:
        check(case)

    run()
