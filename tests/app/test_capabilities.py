"""Declared capabilities: a model declared unable to take images, tools or a JSON schema output
gets no routed request using them; the others route as before. Over a real gateway, the openai
SDK and the fault upstream."""
from __future__ import annotations

import httpx
import openai
import pytest

from app.runtime.config import CapabilitiesIn
from models_registry.records import CAPABILITIES
from tests.support.clients import client

ADMIN = {"authorization": "Bearer admin-key"}

MESSAGES = [{"role": "user", "content": "Name a prime number."}]
IMAGE_MESSAGES = [{"role": "user", "content": [
    {"type": "text", "text": "What is in this picture?"},
    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}}]}]
TOOLS = [{"type": "function", "function": {"name": "now", "description": "The time now",
                                           "parameters": {"type": "object", "properties": {}}}}]
SCHEMA = {"type": "json_schema", "json_schema": {"name": "prime", "schema": {
    "type": "object", "properties": {"prime": {"type": "integer"}}, "required": ["prime"]}}}
# A chat request using each capability, as the openai SDK's keyword arguments.
USING = {"vision": {"messages": IMAGE_MESSAGES},
         "tools": {"messages": MESSAGES, "tools": TOOLS},
         "json_schema": {"messages": MESSAGES, "response_format": SCHEMA}}


def admin(gw: str, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, gw + "/admin" + path, headers=ADMIN, timeout=30, **kwargs)


@pytest.fixture
def pair(make_gateway, fault_upstream, model_config):
    """A gateway preferring model `first` (more accurate) over `second` at cost weight 0, `first`
    declared with the capabilities the test gives."""
    upstream, url = fault_upstream

    def make(capabilities: dict[str, bool] | None, **settings):
        first = model_config("first", url, score=0.9)
        if capabilities is not None:
            first = first.model_copy(update={"capabilities": CapabilitiesIn(**capabilities)})
        return make_gateway(models=[first, model_config("second", url, score=0.6)], **settings)

    return upstream, make


def test_the_config_and_the_registry_know_the_same_capabilities():
    assert tuple(CapabilitiesIn.model_fields) == CAPABILITIES


@pytest.mark.parametrize("capability", CAPABILITIES)
def test_a_model_declared_without_a_capability_gets_no_routed_request_using_it(pair, capability):
    """Before, the better model was chosen whatever it was declared to take, and its upstream
    refused the request (or, worse, answered it without seeing the image)."""
    upstream, make = pair
    with make({capability: False}) as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", **USING[capability])
        assert raw.headers["x-uniroute-model"] == "second"
        assert raw.parse().choices[0].message.content == "answer from second"
        assert upstream.calls["first"] == 0  # never tried
        # a request using none of them still goes to the better model
        plain = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert plain.headers["x-uniroute-model"] == "first"
        # a capability declared true, or not declared, changes nothing
        for other in set(CAPABILITIES) - {capability}:
            raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", **USING[other])
            assert raw.headers["x-uniroute-model"] == "first"


def test_a_responses_api_request_with_an_image_tools_or_a_schema_skips_a_model_declared_without(pair):
    upstream, make = pair
    image_input = [{"role": "user", "content": [{"type": "input_text", "text": "What is this?"},
                                                {"type": "input_image", "image_url": "https://example.com/a.png"}]}]
    schema = {"format": {"type": "json_schema", "name": "prime", "schema": SCHEMA["json_schema"]["schema"]}}
    tool = {"type": "function", "name": "now", "parameters": {"type": "object", "properties": {}}}
    with make({"vision": False, "tools": False, "json_schema": False}) as gw:
        for fields in ({"input": image_input}, {"input": "Name a prime.", "tools": [tool]},
                       {"input": "Name a prime.", "text": schema}):
            raw = client(gw).responses.with_raw_response.create(model="uniroute:0", **fields)
            assert raw.headers["x-uniroute-model"] == "second"
        assert upstream.calls["first"] == 0
        raw = client(gw).responses.with_raw_response.create(model="uniroute:0", input="Name a prime.")
        assert raw.headers["x-uniroute-model"] == "first"


def test_the_route_dry_run_leaves_out_a_model_declared_without_what_the_request_uses(pair):
    _, make = pair
    with make({"vision": False}) as gw:
        decision = httpx.post(gw + "/v1/route", json={"model": "uniroute:0", "messages": IMAGE_MESSAGES},
                              timeout=30).json()
        assert decision["model"] == "second"
        assert [c["model"] for c in decision["candidates"]] == ["second"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_no_routable_model_takes_is_a_clear_400_naming_the_capability(make_gateway, fault_upstream,
                                                                              model_config, stream):
    upstream, url = fault_upstream
    blind = CapabilitiesIn(vision=False)
    models = [model_config(name, url, score=score).model_copy(update={"capabilities": blind})
              for name, score in (("a", 0.9), ("b", 0.6))]
    with make_gateway(models=models) as gw:
        with pytest.raises(openai.BadRequestError) as err:
            client(gw).chat.completions.create(model="uniroute:0", messages=IMAGE_MESSAGES, stream=stream)
        assert err.value.body["code"] == "unsupported_capability"
        assert "images (vision)" in err.value.body["message"] and "a, b" in err.value.body["message"]
        assert sum(upstream.calls.values()) == 0
        # so among a subset of them
        with pytest.raises(openai.BadRequestError):
            client(gw).chat.completions.create(model="uniroute:0", messages=IMAGE_MESSAGES,
                                               extra_body={"uniroute": {"models": ["a"]}})
        # a model named by the client is the client's choice: it goes there
        named = client(gw).chat.completions.with_raw_response.create(model="a", messages=IMAGE_MESSAGES)
        assert named.headers["x-uniroute-model"] == "a"


def test_capabilities_are_registered_shown_patched_and_kept_across_a_restart(make_gateway, fault_upstream, repset_ids,
                                                                              tmp_path):
    upstream, url = fault_upstream
    registry = str(tmp_path / "registry.db")
    scores = {pid: 1.0 for pid in repset_ids}
    with make_gateway(models=[], sqlite_path=registry, admin_key="admin-key") as gw:
        r = admin(gw, "POST", "/models", json={"name": "blind", "base_url": url, "cost": {"per_request": 1},
                                                "scores": scores, "capabilities": {"vision": False}})
        assert r.status_code == 202
        admin(gw, "POST", "/models", json={"name": "sighted", "base_url": url, "cost": {"per_request": 2},
                                            "scores": {pid: 0.5 for pid in repset_ids}})
        assert admin(gw, "GET", "/models/blind").json()["capabilities"] == {"vision": False}
        assert admin(gw, "GET", "/models/sighted").json()["capabilities"] == {}
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=IMAGE_MESSAGES)
        assert raw.headers["x-uniroute-model"] == "sighted"
        # a PATCH sets the capabilities it gives and keeps the others
        patched = admin(gw, "PATCH", "/models/blind", json={"capabilities": {"tools": False}})
        assert patched.status_code == 200 and patched.json()["capabilities"] == {"vision": False, "tools": False}
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES, tools=TOOLS)
        assert raw.headers["x-uniroute-model"] == "sighted"
        admin(gw, "PATCH", "/models/blind", json={"capabilities": {"vision": True}})
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=IMAGE_MESSAGES)
        assert raw.headers["x-uniroute-model"] == "blind"
    with make_gateway(models=[], sqlite_path=registry, admin_key="admin-key") as gw:  # the registry record keeps them
        assert admin(gw, "GET", "/models/blind").json()["capabilities"] == {"vision": True, "tools": False}


@pytest.mark.parametrize("capabilities,said", [({"vision": "no"}, "vision"), ({"telepathy": False}, "telepathy"),
                                               ({"tools": None, "json_schema": 0}, "json_schema")])
def test_bad_capabilities_are_a_clear_400(make_gateway, fault_upstream, repset_ids, capabilities, said):
    _, url = fault_upstream
    with make_gateway(models=[], admin_key="admin-key") as gw:
        r = admin(gw, "POST", "/models", json={"name": "m", "base_url": url, "cost": {"per_request": 1},
                                                "scores": {pid: 1.0 for pid in repset_ids[:20]},
                                                "capabilities": capabilities})
        assert r.status_code == 400 and said in r.json()["error"]["message"], r.text
        assert admin(gw, "GET", "/models/m").status_code == 404
        admin(gw, "POST", "/models", json={"name": "m", "base_url": url, "cost": {"per_request": 1},
                                            "scores": {pid: 1.0 for pid in repset_ids[:20]}})
        r = admin(gw, "PATCH", "/models/m", json={"capabilities": capabilities})
        assert r.status_code == 400 and said in r.json()["error"]["message"], r.text
        assert admin(gw, "GET", "/models/m").json()["capabilities"] == {}
