"""Bad input gets OpenAI-style errors with the right status, and the gateway keeps serving."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from openai import APIStatusError, BadRequestError, OpenAI

GOOD = {"model": "uniroute", "messages": [{"role": "user", "content": "hello"}]}


def post(base_url: str, path: str, **kwargs) -> httpx.Response:
    return httpx.post(base_url + path, timeout=30, **kwargs)


def assert_openai_error(r: httpx.Response, status: int, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and err["type"]
    if param is not None:
        assert err["param"] == param
    return err


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/route"])
def test_malformed_json_is_400(demo_gateway, path):
    r = post(demo_gateway, path, content=b'{"model": "uniroute", "messages": [', headers={"content-type": "application/json"})
    err = assert_openai_error(r, 400)
    assert err["code"] == "invalid_json"


def nested(levels: int) -> dict:
    """An object nested `levels` deep (itself one level)."""
    value: dict = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings",
                                  "/v1/route"])
def test_a_body_nested_too_deeply_is_400(demo_gateway, path):
    # Deep enough to parse but not to be written again for the upstream (orjson writes 254 levels).
    body = {**GOOD, "prompt": "hello", "input": "hello", "blob": nested(300)}
    err = assert_openai_error(post(demo_gateway, path, json=body), 400)
    assert err["code"] == "body_too_deep" and "128 levels" in err["message"]


def test_the_openai_client_is_told_its_body_nests_too_deeply(demo_gateway):
    client = OpenAI(base_url=demo_gateway + "/v1", api_key="x", max_retries=0)
    with pytest.raises(BadRequestError, match="nests"):
        client.chat.completions.create(**GOOD, extra_body={"blob": nested(260)})
    # At the limit, however many objects and arrays a body holds, it is served.
    wide = [nested(8) for _ in range(200)]
    reply = client.chat.completions.create(**GOOD, extra_body={"blob": nested(127), "wide": wide})  # 128 levels
    assert reply.choices[0].message.content


@pytest.mark.parametrize("body,param", [
    ({"model": "uniroute"}, "messages"),
    ({"model": "uniroute", "messages": []}, "messages"),
    ({"model": "uniroute", "messages": "hello"}, "messages"),
    ({"model": "uniroute", "messages": [{"content": "no role"}]}, "messages.0.role"),
    # a field of several types is named once, not by the first type pydantic tried
    ({"model": "uniroute", "messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ({"model": 42, "messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ({**GOOD, "stream": "yes"}, "stream"),
    ({**GOOD, "uniroute": {"cost_weight": -1}}, "uniroute.cost_weight"),
    ({**GOOD, "uniroute": {"cost_weight": "high"}}, "uniroute.cost_weight"),
    ({**GOOD, "uniroute": {"cost_weight": True}}, "uniroute.cost_weight"),
    ({**GOOD, "uniroute": {"quality": True}}, "uniroute.quality"),
    ({**GOOD, "uniroute": {"unknown": 1}}, "uniroute.unknown"),
    ({**GOOD, "model": "uniroute:abc"}, "model"),
    ({**GOOD, "model": "uniroute:-2"}, "model"),
    ({**GOOD, "uniroute": {"models": ["no-such-model"]}}, "uniroute.models"),
])
def test_wrong_fields_are_400_naming_the_parameter(demo_gateway, body, param):
    assert_openai_error(post(demo_gateway, "/v1/chat/completions", json=body), 400, param)


def test_a_json_array_body_is_400(demo_gateway):
    assert_openai_error(post(demo_gateway, "/v1/chat/completions", json=[GOOD]), 400)


def test_unknown_model_is_404(demo_gateway):
    err = assert_openai_error(post(demo_gateway, "/v1/chat/completions", json={**GOOD, "model": "gpt-17"}), 404, "model")
    assert err["code"] == "model_not_found"


def test_huge_body_is_413(make_gateway):
    with make_gateway(max_body_bytes=10_000) as gw:
        huge = {**GOOD, "messages": [{"role": "user", "content": "x" * 50_000}]}
        assert_openai_error(post(gw, "/v1/chat/completions", json=huge), 413)

        # The same without Content-Length (chunked upload): counted as it arrives.
        def chunks():
            yield b'{"model": "uniroute", "messages": [{"role": "user", "content": "'
            for _ in range(20):
                yield b"y" * 1000
            yield b'"}]}'

        assert_openai_error(post(gw, "/v1/chat/completions", content=chunks()), 413)
        assert post(gw, "/v1/chat/completions", json=GOOD).status_code == 200


def test_prompt_over_the_length_limit_is_413_naming_the_prompts_parameter(make_gateway):
    with make_gateway(max_prompt_chars=1000) as gw:
        for path, prompt in (("/v1/chat/completions", {"messages": [{"role": "user", "content": "z" * 2000}]}),
                             ("/v1/completions", {"prompt": "z" * 2000}), ("/v1/responses", {"input": "z" * 2000})):
            err = assert_openai_error(post(gw, path, json={"model": "uniroute", **prompt}), 413, next(iter(prompt)))
            assert err["code"] == "prompt_too_long"
        with pytest.raises(APIStatusError) as caught:
            OpenAI(base_url=gw + "/v1", api_key="x", max_retries=0).chat.completions.create(
                model="uniroute", messages=[{"role": "user", "content": "z" * 2000}])
        assert (caught.value.status_code, caught.value.body["param"]) == (413, "messages")


def test_token_id_prompt_cannot_be_routed(demo_gateway):
    assert_openai_error(post(demo_gateway, "/v1/completions", json={"model": "uniroute", "prompt": [1, 2, 3]}),
                        400, "prompt")


@pytest.mark.parametrize("prompt", [[None], ["Name a prime.", None], [{"text": "Name a prime."}], [[1, "2"]], [True]])
def test_a_routed_prompt_array_of_neither_text_nor_token_ids_is_400_saying_what_a_prompt_may_be(demo_gateway,
                                                                                                 prompt):
    # It was told it held token ids, and to name a model: one would only pass it on to be refused.
    err = assert_openai_error(post(demo_gateway, "/v1/completions", json={"model": "uniroute", "prompt": prompt}),
                              400, "prompt")
    assert (err["code"], "named model" in err["message"]) == ("invalid_value", False)
    assert "array of strings" in err["message"]


def test_no_routable_model_is_503(make_gateway):
    with make_gateway(models=[]) as gw:
        err = assert_openai_error(post(gw, "/v1/chat/completions", json=GOOD), 503)
        assert err["code"] == "no_routable_model"


def test_gateway_keeps_serving_after_bad_input(demo_gateway):
    for body in (b"{", b"[]", b'{"model": 1}', b"\xff\xfe"):
        post(demo_gateway, "/v1/chat/completions", content=body)
    reply = OpenAI(base_url=demo_gateway + "/v1", api_key="x").chat.completions.create(**GOOD)
    assert reply.choices[0].message.content


ADMIN_KEY = "bad-input-admin"


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_an_admin_body_without_a_json_content_type_is_a_400_that_says_to_send_one(make_gateway, fault_upstream,
                                                                                   content_type):
    _, url = fault_upstream
    registration = json.dumps({"name": "plain", "base_url": url, "cost": {"per_request": 1}}).encode()
    auth = {"authorization": f"Bearer {ADMIN_KEY}"}
    with make_gateway(models=[], admin_key=ADMIN_KEY) as gw:
        # A raw request: httpx adds no Content-Type for `content=`; curl -d adds the form type.
        headers = auth if content_type is None else {**auth, "content-type": content_type}
        err = assert_openai_error(post(gw, "/admin/models", content=registration, headers=headers), 400)
        assert "Content-Type: application/json" in err["message"] and err["code"] == "unsupported_content_type"
        assert (content_type or "no Content-Type") in err["message"]
        # With the header the same bytes register the model.
        ok = post(gw, "/admin/models", content=registration, headers={**auth, "content-type": "application/json"})
        assert ok.status_code == 202, ok.text


def test_the_readmes_curl_registration_runs_as_written(make_gateway, fault_upstream):
    """The README's `curl` example, run with curl against a gateway (address and upstream swapped in)."""
    if shutil.which("curl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("curl is not installed and CI=true")
        pytest.skip("curl is not installed")
    _, url = fault_upstream
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    command = re.search(r"(curl -s -X POST \S+/admin/models.*?)\n# ->", readme, re.S).group(1)
    with make_gateway(models=[], admin_key=ADMIN_KEY) as gw:
        command = command.replace("http://127.0.0.1:8000", gw).replace("http://vllm:8000/v1", url)
        run = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "UNIROUTE_ADMIN_KEY": ADMIN_KEY})
        assert run.returncode == 0, run.stderr
        answer = json.loads(run.stdout)
        assert answer["model"] == "my-llm" and answer["job_id"], answer


def test_one_parameter_that_fails_each_of_its_types_is_one_error_saying_them_all():
    from app.api.errors import validation_error

    union = [{"type": "string_type", "loc": ("body", "input", "str"), "msg": "Input should be a valid string",
              "input": 5},
             {"type": "list_type", "loc": ("body", "input", "list[any]"), "msg": "Input should be a valid list",
              "input": 5}]
    err = validation_error(union)
    assert err.param == "input"
    assert err.message == "input: Input should be a valid string or Input should be a valid list"
    # two fields of one object, each wrong in its own way, stay apart: the first is named
    siblings = [{"type": "missing", "loc": ("messages", 0, "role"), "msg": "Field required", "input": {}},
                {"type": "missing", "loc": ("messages", 0, "name"), "msg": "Field required", "input": {}}]
    assert validation_error(siblings).param == "messages.0.role"


def test_a_wrong_method_is_a_405_invalid_request_that_says_which_methods_are_allowed(demo_gateway):
    r = httpx.delete(demo_gateway + "/v1/chat/completions", timeout=30)
    err = assert_openai_error(r, 405)
    assert err["type"] == "invalid_request_error"
    assert r.headers["allow"] == "POST"


def test_an_openai_endpoint_the_gateway_lacks_is_told_as_not_served_by_the_gateway(demo_gateway):
    """The openai SDK's methods for endpoints the gateway does not serve got a bare "Method Not
    Allowed" (`responses.compact` and `responses.input_tokens.count` POST to paths shaped like a
    stored response's) or "Not Found": an SDK or gateway bug, by the look of it."""
    sdk = OpenAI(base_url=demo_gateway + "/v1", api_key="x", max_retries=0)
    calls = {"POST /v1/responses/compact": lambda: sdk.responses.compact(model="uniroute", input="hi"),
             "POST /v1/responses/input_tokens": lambda: sdk.responses.input_tokens.count(input="hi"),
             "GET /v1/chat/completions": lambda: sdk.chat.completions.list(),
             "GET /v1/files": lambda: sdk.files.list()}
    for endpoint, call in calls.items():
        with pytest.raises(APIStatusError) as caught:
            call()
        assert caught.value.status_code in (404, 405)
        assert f"the gateway does not serve {endpoint}" in caught.value.body["message"]
    r = httpx.get(demo_gateway + "/v1/chat/completions", timeout=30)
    assert assert_openai_error(r, 405)["message"].endswith("(this path takes POST)")
