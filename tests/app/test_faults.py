"""Upstream faults against a real HTTP upstream: retries, fallback to the next-best model,
cut streams and cooldowns. The client always gets an answer or an OpenAI-style error."""
from __future__ import annotations

import httpx
import openai
import pytest
from openai import OpenAI

from tests.support.fault_upstream import closed_port

MESSAGES = [{"role": "user", "content": "Name a prime number."}]


def client(base_url: str) -> OpenAI:
    return OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=30)


def metric(base_url: str, name: str) -> float:
    """Sum of a metric's samples whose line starts with `name` (labels included in `name`)."""
    text = httpx.get(base_url + "/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@pytest.fixture
def pair(make_gateway, fault_upstream, model_config):
    """A gateway preferring model `first` (more accurate) over `second` at cost weight 0.
    `first` is served with the fault spec the test gives."""
    upstream, url = fault_upstream

    def make(first_spec: str, first_url: str | None = None, **settings):
        models = [model_config("first", first_url or url, upstream_model=f"first{first_spec}", score=0.9),
                  model_config("second", url, upstream_model="second", score=0.6)]
        return make_gateway(models=models, **settings)

    return upstream, make


@pytest.mark.parametrize("spec,reason", [(":status=500", "status_5xx"), (":status=503", "status_5xx"),
                                         (":status=429", "status_429"), (":bad_json", "invalid_json")])
def test_failing_model_is_retried_once_then_the_next_best_answers(pair, spec, reason):
    upstream, make = pair
    with make(spec) as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert raw.headers["x-uniroute-model"] == "second"
        assert raw.parse().choices[0].message.content == "answer from second"
        assert upstream.calls[f"first{spec}"] == 2
        assert metric(gw, f'uniroute_upstream_failures_total{{model="first",reason="{reason}"}}') == 2
        assert metric(gw, "uniroute_fallbacks_total") == 1


def test_refused_connection_falls_back(pair):
    upstream, make = pair
    with make("", first_url=f"http://127.0.0.1:{closed_port()}/v1") as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert raw.headers["x-uniroute-model"] == "second"
        assert metric(gw, 'uniroute_upstream_failures_total{model="first",reason="connect"}') == 2


def test_first_byte_later_than_the_timeout_falls_back(pair):
    upstream, make = pair
    with make(":delay=3", timeouts={"read_s": 0.3}) as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert raw.headers["x-uniroute-model"] == "second"
        assert metric(gw, 'uniroute_upstream_failures_total{model="first",reason="timeout"}') == 2


def test_a_transient_failure_is_absorbed_by_the_retry(pair):
    upstream, make = pair
    with make(":fail_first=1,status=502") as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert raw.headers["x-uniroute-model"] == "first"
        assert upstream.calls["first:fail_first=1,status=502"] == 2
        assert upstream.calls["second"] == 0


def test_stream_cut_before_any_byte_falls_back(pair):
    upstream, make = pair
    with make(":cut=0") as gw:
        stream = client(gw).chat.completions.create(model="uniroute:0", messages=MESSAGES, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == "answer from second"


def test_stream_cut_mid_way_ends_with_an_error_event_not_a_hang(pair):
    upstream, make = pair
    with make(":cut=2") as gw:
        stream = client(gw).chat.completions.create(model="uniroute:0", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError, match="cut the stream|ended the stream"):
            for _ in stream:
                pass
        assert metric(gw, 'uniroute_upstream_failures_total{model="first",reason="stream_cut"}') >= 1


def test_every_upstream_failing_gives_an_openai_error(make_gateway, fault_upstream, model_config):
    upstream, url = fault_upstream
    models = [model_config("a", url, upstream_model="a:status=500"),
              model_config("b", url, upstream_model="b:status=503")]
    with make_gateway(models=models) as gw:
        with pytest.raises(openai.APIStatusError) as err:
            client(gw).chat.completions.create(model="uniroute", messages=MESSAGES)
        assert err.value.status_code == 502
        assert err.value.body["type"] == "upstream_error"
        assert "all upstream attempts failed" in err.value.body["message"]
        # and the gateway keeps serving
        assert httpx.get(gw + "/healthz", timeout=5).status_code == 200


def test_a_model_that_keeps_failing_is_cooled_down(pair):
    upstream, make = pair
    with make(":status=500", cooldown_failures=2, cooldown_s=60) as gw:
        for _ in range(2):
            client(gw).chat.completions.create(model="uniroute:0", messages=MESSAGES)
        assert metric(gw, 'uniroute_model_cooldowns_total{model="first"}') == 1
        assert metric(gw, "uniroute_models_cooling") == 1
        calls_before = upstream.calls["first:status=500"]
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert raw.headers["x-uniroute-model"] == "second"
        assert upstream.calls["first:status=500"] == calls_before  # not even tried while cooling


def test_named_model_is_retried_but_never_swapped(pair):
    upstream, make = pair
    with make(":status=500") as gw:
        with pytest.raises(openai.APIStatusError) as err:
            client(gw).chat.completions.create(model="first", messages=MESSAGES)
        assert err.value.status_code == 502
        assert upstream.calls["second"] == 0
