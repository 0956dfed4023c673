"""The gateway speaks OpenAI's API to the real openai SDK: sync, async, streaming, completions,
model listing, the routing headers and the /v1/route dry run (of chat, completions and
Responses API bodies)."""
from __future__ import annotations

import httpx
import pytest
from openai import AsyncOpenAI

from tests.support.clients import client

ROUTING_HEADERS = ("x-uniroute-model", "x-uniroute-cluster", "x-uniroute-predicted-error",
                   "x-uniroute-expected-cost")
QUESTION = ("Which gas do green plants take in from the air for photosynthesis?\n"
            "A) oxygen\nB) carbon dioxide\nC) nitrogen\nD) helium\nAnswer:")


def test_sync_chat_is_routed_and_carries_routing_headers(demo_gateway):
    raw = client(demo_gateway).chat.completions.with_raw_response.create(
        model="uniroute", messages=[{"role": "user", "content": QUESTION}])
    completion = raw.parse()
    for header in ROUTING_HEADERS:
        assert raw.headers.get(header), header
    # The body's model is the upstream model that answered: the replay echoes the routed name.
    assert completion.model == raw.headers["x-uniroute-model"]
    assert int(raw.headers["x-uniroute-cluster"]) >= 0
    assert 0.0 <= float(raw.headers["x-uniroute-predicted-error"]) <= 1.0
    assert completion.choices[0].message.content


async def test_async_chat_and_completions_are_routed(demo_gateway):
    aclient = AsyncOpenAI(base_url=demo_gateway + "/v1", api_key="unused", max_retries=0)
    chat = await aclient.chat.completions.with_raw_response.create(
        model="uniroute:0.5", messages=[{"role": "user", "content": QUESTION}])
    text = await aclient.completions.with_raw_response.create(model="uniroute:0.5", prompt=QUESTION)
    assert chat.parse().choices[0].message.content
    assert text.parse().choices[0].text
    assert text.parse().object == "text_completion"
    assert chat.headers["x-uniroute-model"] == text.headers["x-uniroute-model"]
    await aclient.close()


def test_streamed_chat_arrives_in_chunks_with_headers(demo_gateway):
    with client(demo_gateway).chat.completions.with_streaming_response.create(
        model="uniroute", messages=[{"role": "user", "content": QUESTION}], stream=True,
        stream_options={"include_usage": True},
    ) as response:
        assert response.headers["x-uniroute-model"]
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len([c for c in chunks if c.choices]) > 1
    assert text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_named_model_bypasses_routing(demo_gateway, routerbench):
    name = routerbench.models[0]
    raw = client(demo_gateway).chat.completions.with_raw_response.create(
        model=name, messages=[{"role": "user", "content": QUESTION}])
    assert raw.headers["x-uniroute-model"] == name
    assert raw.headers["x-uniroute-cluster"] == "-1"
    assert raw.parse().model == name


def test_models_lists_router_name_and_registered_models(demo_gateway, routerbench):
    ids = [m.id for m in client(demo_gateway).models.list()]
    assert ids[0] == "uniroute"
    assert set(routerbench.models) <= set(ids)


def test_route_dry_run_ranks_candidates_and_matches_the_real_decision(demo_gateway, routerbench):
    body = {"model": "uniroute", "messages": [{"role": "user", "content": QUESTION}],
            "uniroute": {"cost_weight": 0.3}}
    dry = httpx.post(demo_gateway + "/v1/route", json=body, timeout=30).json()
    assert set(dry) >= {"model", "cluster", "predicted_error", "expected_cost", "cost_weight", "candidates"}
    assert dry["cost_weight"] == 0.3
    assert [c["model"] for c in dry["candidates"]][0] == dry["model"]
    assert sorted(c["model"] for c in dry["candidates"]) == sorted(routerbench.models)
    real = client(demo_gateway).chat.completions.with_raw_response.create(
        model="uniroute", messages=body["messages"], extra_body={"uniroute": {"cost_weight": 0.3}})
    assert real.headers["x-uniroute-model"] == dry["model"]


def test_route_dry_run_decides_a_responses_body_as_the_responses_api_routes_it(demo_gateway):
    # instructions, a developer message and an earlier user turn: all but the last of these are
    # part of the Responses API's routing text, so a dry run reading it otherwise would differ
    instructions = "Answer with the letter of the right option only."
    conversation = [
        {"role": "developer", "content": "You are a biology tutor."},
        {"role": "user", "content": "What is the derivative of x squared?"},
        {"role": "assistant", "content": "2x"},
        {"role": "user", "content": [{"type": "input_text", "text": QUESTION}]},
    ]
    options = {"cost_weight": 0.3}
    # a stored prompt template (`prompt`) does not make a Responses API body a completions one
    for request_input, template in ((QUESTION, None), (conversation, None), (QUESTION, {"id": "pmpt_tutor"})):
        extra = {} if template is None else {"prompt": template}
        body = {"model": "uniroute", "instructions": instructions, "input": request_input, "uniroute": options,
                **extra}
        dry = httpx.post(demo_gateway + "/v1/route", json=body, timeout=30)
        assert dry.status_code == 200, dry.text
        real = client(demo_gateway).responses.with_raw_response.create(
            model="uniroute", instructions=instructions, input=request_input,
            extra_body={"uniroute": options, **extra})
        assert (dry.json()["model"], dry.json()["cluster"]) == (
            real.headers["x-uniroute-model"], int(real.headers["x-uniroute-cluster"]))


def test_route_dry_run_without_a_prompt_names_the_fields_it_takes(demo_gateway):
    for body in ({}, {"model": "uniroute"}):
        r = httpx.post(demo_gateway + "/v1/route", json=body, timeout=30)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error"
        for field in ("messages", "prompt", "input"):
            assert field in error["message"], error

def test_allowed_subset_restricts_the_choice(demo_gateway, routerbench):
    allowed = routerbench.models[3:5]
    dry = httpx.post(demo_gateway + "/v1/route", json={
        "model": "uniroute:0", "messages": [{"role": "user", "content": QUESTION}],
        "uniroute": {"models": allowed}}, timeout=30).json()
    assert dry["model"] in allowed
    assert {c["model"] for c in dry["candidates"]} == set(allowed)


def test_unread_fields_reach_the_upstream_untouched(make_gateway, fault_upstream, model_config):
    upstream, url = fault_upstream
    with make_gateway(models=[model_config("m1", url, upstream_model="provider-m1")]) as gw:
        extra = {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                 "tool_choice": "auto", "seed": 7, "n": 1, "stop": ["\n\n"], "logprobs": True,
                 "response_format": {"type": "json_object"}}
        client(gw).chat.completions.create(
            model="uniroute", messages=[{"role": "user", "content": "hi"}],
            extra_body={"uniroute": {"cost_weight": 0.1}}, **extra)
    sent = upstream.received[-1].body
    assert sent["model"] == "provider-m1"
    assert "uniroute" not in sent
    for key, value in extra.items():
        assert sent[key] == value


@pytest.mark.parametrize("route", ["/healthz", "/readyz"])
def test_health_endpoints_answer(demo_gateway, route):
    r = httpx.get(demo_gateway + route, timeout=5)
    assert r.status_code == 200
