"""Client keys guard the OpenAI endpoints; /metrics reports requests, decisions, timings and cost."""
from __future__ import annotations

import httpx
import openai
import pytest
from openai import OpenAI

MESSAGES = [{"role": "user", "content": "Which planet is largest? A) Mars B) Jupiter"}]


def test_client_keys_are_required_when_configured(make_gateway):
    with make_gateway(api_keys=["k-one", "k-two"]) as gw:
        with pytest.raises(openai.AuthenticationError) as err:
            OpenAI(base_url=gw + "/v1", api_key="wrong", max_retries=0).chat.completions.create(
                model="uniroute", messages=MESSAGES)
        assert err.value.body["code"] == "invalid_api_key"
        assert httpx.get(gw + "/v1/models", timeout=5).status_code == 401
        reply = OpenAI(base_url=gw + "/v1", api_key="k-two").chat.completions.create(
            model="uniroute", messages=MESSAGES)
        assert reply.choices[0].message.content
        # health and metrics stay reachable for probes and scrapers
        assert httpx.get(gw + "/healthz", timeout=5).status_code == 200
        assert httpx.get(gw + "/metrics", timeout=5).status_code == 200


def test_metrics_count_requests_decisions_tokens_and_cost(demo_gateway):
    client = OpenAI(base_url=demo_gateway + "/v1", api_key="unused")
    raws = [client.chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
            for _ in range(3)]
    model = raws[0].headers["x-uniroute-model"]
    text = httpx.get(demo_gateway + "/metrics", timeout=5).text
    assert f'uniroute_requests_total{{model="{model}",route="chat",status="200"}} 3.0' in text
    assert f'uniroute_routing_decisions_total{{model="{model}"}} 3.0' in text
    assert "uniroute_routing_seconds_count 3.0" in text
    assert "uniroute_overhead_seconds_count 3.0" in text
    usage = raws[0].parse().usage
    assert f'uniroute_tokens_total{{kind="completion",model="{model}"}} {3.0 * usage.completion_tokens}' in text
    assert f'uniroute_cost_total{{model="{model}"}}' in text
    assert 'uniroute_models{state="ready"} 11.0' in text
