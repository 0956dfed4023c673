"""What an answered (or refused) request adds to the books: expected cost of a named model,
streams billed from their real usage, the gateway's overhead without the upstream's time, and
every response counted with its status. Real gateways, a real fault upstream, the openai SDK."""
from __future__ import annotations

import logging
import time

import httpx
import openai
import pytest

from app.runtime.config import PriceIn
from router_core.pricing import estimate_tokens
from tests.support.clients import client, hanging_post, metric, wait_for
from tests.support.fault_upstream import Fault

QUESTION = "Which gas do green plants take in from the air? A) oxygen B) carbon dioxide"
MESSAGES = [{"role": "user", "content": QUESTION}]
PRICE = PriceIn(input_per_mtok=100.0, output_per_mtok=300.0)


@pytest.fixture
def priced(make_gateway, fault_upstream, model_config):
    """A gateway with one per-token priced model `m` (and `cheap`, a per-request one)."""
    upstream, url = fault_upstream
    m = model_config("m", url, score=0.9).model_copy(update={"cost": PRICE})
    models = [m, model_config("cheap", url, score=0.5, per_request=0.0001)]
    return upstream, lambda **settings: make_gateway(models=models, **settings)


def test_a_named_model_expected_cost_counts_the_prompt_like_a_routed_one(priced):
    _, make = priced
    with make() as gw:
        routed = client(gw).chat.completions.with_raw_response.create(
            model="uniroute", messages=MESSAGES, extra_body={"uniroute": {"models": ["m"]}})
        named = client(gw).chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
        assert routed.headers["x-uniroute-model"] == named.headers["x-uniroute-model"] == "m"
        expected = float(routed.headers["x-uniroute-expected-cost"])
        assert float(named.headers["x-uniroute-expected-cost"]) == pytest.approx(expected, rel=1e-5)
        assert expected > PRICE.to_price().expected(0, 256)  # the prompt's tokens are in it
        assert expected == pytest.approx(PRICE.to_price().expected(estimate_tokens(len(QUESTION)), 256), rel=1e-5)


def test_a_stream_is_billed_from_its_real_usage_which_the_client_never_sees(priced):
    upstream, make = priced
    with make(budget={"target": 1000.0}) as gw:
        chunks = list(client(gw).chat.completions.create(model="m", messages=MESSAGES, stream=True))
        assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "answer from m"
        assert upstream.received[-1].body["stream_options"] == {"include_usage": True}
        reply = client(gw).chat.completions.create(model="m", messages=MESSAGES)  # the same usage, not streamed
        usage = reply.usage
        cost = PRICE.to_price().expected(usage.prompt_tokens, usage.completion_tokens)
        assert metric(gw, 'uniroute_tokens_total{kind="completion",model="m"}') == 2 * usage.completion_tokens
        assert metric(gw, 'uniroute_tokens_total{kind="prompt",model="m"}') == 2 * usage.prompt_tokens
        assert metric(gw, 'uniroute_cost_total{model="m"}') == pytest.approx(2 * cost)
        assert metric(gw, "uniroute_budget_spent_total") == pytest.approx(2 * cost)


def test_a_routed_stream_adds_to_the_savings_and_keeps_the_usage_the_client_asked_for(priced):
    _, make = priced
    with make() as gw:
        chunks = list(client(gw).chat.completions.create(
            model="uniroute:1000", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
        assert chunks[-1].usage is not None and not chunks[-1].choices
        assert metric(gw, 'uniroute_cost_total{model="cheap"}') == pytest.approx(0.0001)
        assert metric(gw, "uniroute_cost_saved_total") > 0


def test_an_answer_whose_usage_counts_negative_tokens_reaches_the_client_whole(make_gateway, fault_upstream,
                                                                             model_config):
    # A provider's bookkeeping bug is the provider's: the answer is relayed (billed at its
    # expected cost), not turned into a 500 or a stream cut before its end.
    _, url = fault_upstream
    with make_gateway(models=[model_config("m", url, upstream_model="m:negative_usage")]) as gw:
        for model in ("uniroute", "m"):
            answer = client(gw).chat.completions.create(model=model, messages=MESSAGES)
            assert answer.choices[0].message.content == "answer from m:negative_usage"
            assert answer.usage.prompt_tokens == -1
            chunks = list(client(gw).chat.completions.create(model=model, messages=MESSAGES, stream=True))
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "answer from m:negative_usage"
            assert chunks[-1].choices[0].finish_reason == "stop"


def test_an_upstream_client_error_is_not_billed_nor_marks_the_model_healthy(priced):
    upstream, make = priced
    with make(budget={"target": 1000.0}, retries=0, cooldown_failures=2) as gw:
        upstream.set_fault("m", Fault(status=500))
        with pytest.raises(openai.APIStatusError):
            client(gw).chat.completions.create(model="m", messages=MESSAGES)
        upstream.set_fault("m", Fault(status=400))
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError):
                client(gw).chat.completions.create(model="m", messages=MESSAGES, stream=stream)
        assert metric(gw, "uniroute_budget_spent_total") == 0
        upstream.set_fault("m", Fault(status=500))
        with pytest.raises(openai.APIStatusError):
            client(gw).chat.completions.create(model="m", messages=MESSAGES)
        # the 400s did not clear the failure count: the second 500 cools the model down
        assert metric(gw, 'uniroute_model_cooldowns_total{model="m"}') == 1


def test_overhead_leaves_out_the_upstream_time_to_first_token(priced, fault_upstream, model_config, make_gateway):
    _, url = fault_upstream
    slow = model_config("slow", url, upstream_model="slow:first_token=2")
    with make_gateway(models=[slow]) as gw:
        chunks = list(client(gw).chat.completions.create(model="slow", messages=MESSAGES, stream=True))
        assert chunks
        assert metric(gw, "uniroute_overhead_seconds_count") == 1
        # the upstream kept the first token 2 s: none of it is the gateway's
        assert metric(gw, 'uniroute_overhead_seconds_bucket{le="1.0"}') == 1


def test_every_response_is_counted_with_its_status(make_gateway, fault_upstream, model_config):
    _, url = fault_upstream
    models = [model_config("ok", url), model_config("down", url, upstream_model="down:status=500"),
              model_config("cut", url, upstream_model="cut:interrupt"),
              model_config("slow", url, upstream_model="slow:delay=3")]
    with make_gateway(models=models, max_body_bytes=5000, timeouts={"read_s": 0.5}) as gw:
        def post(**kwargs) -> int:
            return httpx.post(gw + "/v1/chat/completions", timeout=30, **kwargs).status_code

        assert post(content=b"{not json", headers={"content-type": "application/json"}) == 400
        assert post(json={"model": "nope", "messages": MESSAGES}) == 404
        assert post(json={"model": "ok", "messages": MESSAGES, "pad": "x" * 6000}) == 413
        assert post(json={"model": "down", "messages": MESSAGES}) == 502
        assert post(json={"model": "slow", "messages": MESSAGES}) == 504
        assert post(json={"model": "ok", "messages": MESSAGES}) == 200
        assert post(json={"model": "cut", "messages": MESSAGES, "stream": True}) == 200
        assert httpx.get(gw + "/v1/models/nope", timeout=5).status_code == 404
        for status, model in [("400", "none"), ("404", "none"), ("413", "none"), ("502", "none"), ("504", "none"),
                              ("200", "ok"), ("cut", "cut")]:
            assert metric(gw, f'uniroute_requests_total{{model="{model}",route="chat",status="{status}"}}') == 1, status
        assert metric(gw, 'uniroute_requests_total{model="cut",route="chat",status="200"}') == 0
        assert metric(gw, 'uniroute_requests_total{model="none",route="models",status="404"}') == 1


def test_a_gateway_bug_on_a_routed_request_is_an_openai_500_that_is_counted(make_gateway, fault_upstream,
                                                                          model_config, monkeypatch, caplog):
    _, url = fault_upstream
    with make_gateway(models=[model_config("ok", url)]) as gw:
        # The server's own log of an error ("Exception in ASGI application") skips the root logger.
        monkeypatch.setattr(logging.getLogger("uvicorn.error"), "handlers", [caplog.handler])

        def broken(*_: object) -> dict:
            raise RuntimeError("a bug")

        monkeypatch.setattr("app.api.openai.routing_headers", broken)
        r = httpx.post(gw + "/v1/chat/completions", json={"model": "ok", "messages": MESSAGES}, timeout=30)
        assert r.status_code == 500
        assert r.json()["error"]["message"] == "internal error in the gateway" and r.json()["error"]["type"] == "api_error"
        assert caplog.text.count("RuntimeError: a bug") == 1  # logged with its traceback, once
        assert metric(gw, 'uniroute_requests_total{model="ok",route="chat",status="500"}') == 1
        monkeypatch.undo()
        assert httpx.post(gw + "/v1/chat/completions", json={"model": "ok", "messages": MESSAGES},
                          timeout=30).status_code == 200


@pytest.mark.parametrize(("path", "route"), [("/v1/chat/completions", "chat"), ("/v1/route", "route")])
def test_a_client_that_hangs_up_before_its_body_arrives_is_a_499_not_a_gateway_error(
        make_gateway, fault_upstream, model_config, caplog, path, route):
    # app/api/hot.py serves the chat POST; FastAPI's route and its error handlers answer /v1/route.
    caplog.set_level(logging.INFO, logger="uniroute")
    _, url = fault_upstream
    with make_gateway(models=[model_config("ok", url)]) as gw:
        with hanging_post(gw, path, b'{"model": "ok", "mess', content_length=500):
            time.sleep(0.2)  # let the gateway start reading the body before the client leaves
        assert wait_for(lambda: metric(gw, f'uniroute_requests_total{{model="none",route="{route}",status="499"}}') == 1,
                        timeout_s=30)
        assert metric(gw, f'uniroute_requests_total{{model="none",route="{route}",status="500"}}') == 0
        assert "unhandled error" not in caplog.text and "Traceback" not in caplog.text
        assert "closed the connection" in caplog.text
        assert httpx.post(gw + "/v1/chat/completions", json={"model": "ok", "messages": MESSAGES},
                          timeout=30).status_code == 200
