"""Upstream faults against a real HTTP upstream: retries, fallback to the next-best model,
cut streams and cooldowns. The client always gets an answer or an OpenAI-style error."""
from __future__ import annotations

import math
import time
from dataclasses import replace

import httpx
import openai
import orjson
import pytest

from app.runtime.metrics import Metrics
from app.upstream.faults import (
    MESSAGE_CHARS,
    exceeds_context,
    names_model,
    refuses_feature,
    retry_after,
)
from app.upstream.forwarding import Health, error_instead, upstream_url
from tests.models_registry.helpers import make_record
from tests.support.clients import client, hanging_post, metric, wait_for
from tests.support.fault_upstream import Fault, closed_port, hangup_server

ADMIN = {"authorization": "Bearer admin-key"}

MESSAGES = [{"role": "user", "content": "Name a prime number."}]


def routed_stream_text(gw: str) -> str:
    """The text of a routed (`uniroute:0`) streamed answer to MESSAGES, read to its end."""
    stream = client(gw).chat.completions.create(model="uniroute:0", messages=MESSAGES, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


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


@pytest.mark.parametrize("spec,reason,calls", [(":status=500", "server", 2), (":status=503", "server", 2),
                                               (":status=429", "rate_limit", 2), (":bad_json", "bad_body", 1),
                                               (":ok_error", "bad_body", 1), (":status=424", "server", 2),
                                               (":status=408", "request_timeout", 2),
                                               (":status=503,cut=1", "server", 2)])
def test_failing_model_is_retried_when_its_class_allows_then_the_next_best_answers(pair, spec, reason, calls):
    """429, 5xx, TGI's 424 (its generation failed; it was relayed as the client's error) and 408
    (the upstream gave up waiting for the request; it was relayed as the client's error too)
    refuse the work: retried once, a 5xx whose body broke off mid-way too (it was classed by the
    broken read, `disconnect`, as if the work might have been done). A 200 with a broken body did
    it: not asked again.
    Nor one whose body is an error (LM Studio's 200 `{"error": "..."}`), which was relayed to the
    client as a success with no answer in it."""
    upstream, make = pair
    with make(spec) as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert raw.headers["x-uniroute-model"] == "second"
        assert raw.parse().choices[0].message.content == "answer from second"
        assert upstream.calls[f"first{spec}"] == calls
        assert metric(gw, f'uniroute_upstream_failures_total{{model="first",reason="{reason}"}}') == calls
        assert metric(gw, "uniroute_fallbacks_total") == 1


def test_refused_connection_falls_back(pair):
    _, make = pair
    with make("", first_url=f"http://127.0.0.1:{closed_port()}/v1") as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert raw.headers["x-uniroute-model"] == "second"
        assert metric(gw, 'uniroute_upstream_failures_total{model="first",reason="connect"}') == 2


def test_first_byte_later_than_the_timeout_falls_back_without_asking_again(pair):
    """The request was sent: asking the same model again may bill twice."""
    upstream, make = pair
    with make(":delay=3", timeouts={"read_s": 0.3}) as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert raw.headers["x-uniroute-model"] == "second"
        assert metric(gw, 'uniroute_upstream_failures_total{model="first",reason="timeout"}') == 1
        assert upstream.calls["first:delay=3"] == 1


def test_a_transient_failure_is_absorbed_by_the_retry(pair):
    upstream, make = pair
    with make(":fail_first=1,status=502") as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert raw.headers["x-uniroute-model"] == "first"
        assert upstream.calls["first:fail_first=1,status=502"] == 2
        assert upstream.calls["second"] == 0


# --- Retry-After: the upstream says when to come back ------------------------------------------------


def test_a_short_retry_after_is_waited_out_before_the_same_model_is_asked_again(pair):
    """A 429 asking for a 1 s pause, within `retry_after_max_s` (2 s): before, the retry went at
    once, into the same refusal."""
    upstream, make = pair
    spec = ":fail_first=1,status=429,retry_after=1"
    with make(spec) as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert raw.headers["x-uniroute-model"] == "first"
        refused, answered = (r.at for r in upstream.received)
        assert answered - refused >= 1  # a lower bound, which a loaded machine only makes easier
        assert upstream.calls["second"] == 0


@pytest.mark.parametrize("spec", [":status=429,retry_after=30", ":status=503,retry_after_date=30"])
def test_a_long_retry_after_sends_the_request_to_the_next_model_and_cools_the_model_down(pair, spec):
    """A wait longer than `retry_after_max_s`, in seconds or as an HTTP date: the next model
    answers now, and the model is left alone as its upstream asked. Before, it was asked again at
    once, and by the next requests too (a cooldown took `cooldown_failures` failures)."""
    upstream, make = pair
    with make(spec) as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert raw.headers["x-uniroute-model"] == "second"
        assert upstream.calls[f"first{spec}"] == 1
        assert metric(gw, 'uniroute_model_cooldowns_total{model="first"}') == 1
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert raw.headers["x-uniroute-model"] == "second"
        assert upstream.calls[f"first{spec}"] == 1  # not even tried while its upstream asked to wait


def test_a_retry_after_that_would_outlast_the_deadline_is_not_waited_out(pair):
    """Within `retry_after_max_s` but past the request's deadline: waiting would only end in a
    504; the next model answers now."""
    upstream, make = pair
    spec = ":status=429,retry_after=30"
    with make(spec, retry_after_max_s=60, deadline_s=20) as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert raw.headers["x-uniroute-model"] == "second"
        assert upstream.calls[f"first{spec}"] == 1


@pytest.mark.parametrize("spec,stream,error,status,kind,code", [
    (":status=429,retry_after=30", False, openai.RateLimitError, 429, "rate_limit_error", "upstream_rate_limited"),
    (":status=429,retry_after=30", True, openai.RateLimitError, 429, "rate_limit_error", "upstream_rate_limited"),
    (":status=429,retry_after=0.2", False, openai.RateLimitError, 429, "rate_limit_error", "upstream_rate_limited"),
    (":status=429", False, openai.RateLimitError, 429, "rate_limit_error", "upstream_rate_limited"),
    (":status=503,retry_after_date=30", False, openai.InternalServerError, 503, "service_unavailable",
     "upstream_unavailable"),
    (":status=503", False, openai.InternalServerError, 502, "upstream_error", "upstream_failed"),
    (":status=500,retry_after=30", False, openai.InternalServerError, 502, "upstream_error", "upstream_failed"),
])
def test_every_candidate_refused_with_a_rate_limit_or_a_retry_after_tells_the_client_when_to_come_back(
        make_gateway, fault_upstream, model_config, spec, stream, error, status, kind, code):
    """Every candidate answering 429 (or 503 with a Retry-After) longer than the gateway waits out:
    before, the client got a plain 502 "all upstream attempts failed" and no Retry-After, which
    the openai SDK asked again after its own short backoff, into the same refusal. Now a 429 (a
    503) with the upstream's Retry-After in whole seconds, rounded up; any other failure of every
    candidate is the 502 it was."""
    upstream, url = fault_upstream
    models = [model_config("a", url, upstream_model=f"a{spec}", score=0.9),
              model_config("b", url, upstream_model=f"b{spec}", score=0.6)]
    said = retry_after({"retry-after": spec.rpartition("=")[2]}, 0.0) if "retry_after" in spec else None
    with make_gateway(models=models) as gw:
        for _ in range(2):  # again with both cooling down as their upstreams asked: both still tried
            with pytest.raises(error) as err:
                answer = client(gw).chat.completions.create(model="uniroute:0", messages=MESSAGES, stream=stream)
                list(answer) if stream else answer
            assert err.value.status_code == status
            assert (err.value.body["type"], err.value.body["code"]) == (kind, code)
            waits = err.value.response.headers.get("retry-after")
            if status == 502 or said is None:
                assert waits is None
            elif "date" in spec:
                assert 0 < int(waits) <= said  # the date's seconds left: some went by
            elif said < 1:  # what is left of it when the client is answered: 1 s rounded up, or none
                assert waits in ("0", "1")
            else:
                assert waits == str(math.ceil(said))
        if status == 429:
            assert "the upstream is rate limited" in err.value.body["message"]


def test_the_client_is_told_to_come_back_when_the_first_model_that_asked_to_wait_is_back(make_gateway, fault_upstream,
                                                                                         model_config):
    """Every candidate rate limited, the first for 5 s, the last for 10 minutes: before, the
    client was told the last one's 600 s, while its next request could be routed to the first
    model after 5. Now the soonest Retry-After of the attempts, less the time gone since."""
    upstream, url = fault_upstream
    models = [model_config("a", url, upstream_model="a:status=429,retry_after=5", score=0.9),
              model_config("b", url, upstream_model="b:status=429,retry_after=600", score=0.6)]
    with make_gateway(models=models) as gw:
        with pytest.raises(openai.RateLimitError) as err:
            client(gw).chat.completions.create(model="uniroute:0", messages=MESSAGES)
        assert upstream.calls["b:status=429,retry_after=600"] == 1  # both were asked, b last
        assert 0 <= int(err.value.response.headers["retry-after"]) <= 5


def test_the_openai_sdk_does_not_hammer_a_rate_limited_upstream_through_the_gateway(make_gateway, fault_upstream,
                                                                                    model_config):
    """The openai SDK with its own retries: before, it asked the gateway's 502 again twice after a
    short backoff, so each upstream that asked for 10 minutes was asked three times. The 429's
    Retry-After, longer than the SDK waits (2 minutes), stops it at once."""
    upstream, url = fault_upstream
    spec = ":status=429,retry_after=600"
    models = [model_config("a", url, upstream_model=f"a{spec}", score=0.9),
              model_config("b", url, upstream_model=f"b{spec}", score=0.6)]
    with make_gateway(models=models) as gw:
        with pytest.raises(openai.RateLimitError) as err:
            client(gw, max_retries=2).chat.completions.create(model="uniroute:0", messages=MESSAGES)
        assert err.value.response.headers["retry-after"] == "600"
        assert (upstream.calls[f"a{spec}"], upstream.calls[f"b{spec}"]) == (1, 1)


@pytest.mark.parametrize("spec,settings,status,calls", [
    (":status=500", {}, 502, (2, 2)), (":status=401", {}, 502, (1, 1)),
    (":delay=3", {"timeouts": {"read_s": 0.3}}, 504, (1, 1)),
    (":delay=3", {"deadline_s": 1}, 504, (1, 0)),  # the gateway's whole deadline spent on the first
])
def test_the_openai_sdk_does_not_send_the_chain_of_attempts_again_when_every_candidate_failed(
        make_gateway, fault_upstream, model_config, spec, settings, status, calls):
    """The gateway's retries and fallbacks are the retry layer. Its final 502 (504 after a
    timeout) said nothing of retrying, so the openai SDK, with its default 2 retries, sent the
    whole request again twice: each failing upstream was asked three times as often (a timing
    out one held the client three deadlines), and a model disabled by its upstream's 401 in
    between came back as a 404 `model_not_found`. Now `x-should-retry: false` ends the call at
    the gateway's answer."""
    upstream, url = fault_upstream
    models = [model_config("a", url, upstream_model=f"a{spec}", score=0.9),
              model_config("b", url, upstream_model=f"b{spec}", score=0.6)]
    with make_gateway(models=models, **settings) as gw:
        with pytest.raises(openai.APIStatusError) as err:
            client(gw, max_retries=2).chat.completions.create(model="uniroute:0", messages=MESSAGES)
        assert err.value.status_code == status
        assert err.value.response.headers["x-should-retry"] == "false"
        assert (upstream.calls[f"a{spec}"], upstream.calls[f"b{spec}"]) == calls


@pytest.mark.parametrize("spec,status,should_retry", [(":status=429,retry_after=600", 429, "false"),
                                                        (":status=503,retry_after=300", 503, "false"),
                                                        (":status=429,retry_after=30", 429, None)])
def test_a_retry_after_longer_than_a_client_should_wait_in_one_call_says_not_to_retry(
        make_gateway, fault_upstream, model_config, spec, status, should_retry):
    """The Node openai SDK (openai 6.49.0 on Node 20) waits out any Retry-After before asking
    again, with no limit of its own (the Python SDK asks again only within 2 minutes): the
    gateway's 429 `Retry-After: 600` (a model whose upstream asked for 10 minutes) kept a
    `chat.completions.create()` with its default 2 retries asleep inside the call for 20 minutes,
    past its own 10-minute timeout, to be refused again. A Retry-After over 2 minutes now comes
    with `x-should-retry: false`, which both SDKs obey: the call fails at once and the application
    has the Retry-After to come back by. A shorter one leaves the SDK to wait it out."""
    upstream, url = fault_upstream
    with make_gateway(models=[model_config("a", url, upstream_model=f"a{spec}")]) as gw:
        answer = httpx.post(gw + "/v1/chat/completions", json={"model": "a", "messages": MESSAGES}, timeout=30)
        assert answer.status_code == status
        assert answer.headers["retry-after"] == spec.rpartition("=")[2]
        assert answer.headers.get("x-should-retry") == should_retry


@pytest.mark.parametrize("headers,seconds", [
    ({"retry-after": "5"}, 5.0),
    ({"retry-after": "1.5"}, 1.5),
    ({"retry-after": "Thu, 01 Jan 1970 00:01:40 GMT"}, 60.0),  # an HTTP date, 60 s after `now` (40)
    ({"retry-after": "Thu, 01 Jan 1970 00:00:10 GMT"}, 0.0),  # a date gone by
    ({"retry-after-ms": "250", "retry-after": "1"}, 0.25),  # OpenAI's, as the openai SDK reads it
    ({"retry-after": "-3"}, None), ({"retry-after": "soon"}, None), ({"retry-after": "nan"}, None), ({}, None),
])
def test_retry_after_is_read_as_seconds_or_an_http_date(headers, seconds):
    assert retry_after(headers, now=40.0) == seconds


def test_a_bogus_retry_after_cools_its_model_for_an_hour_at_most():
    """A Retry-After dated years ahead kept the model out of routing until the worker restarted."""
    health = Health(failures_to_cool=3, cooldown_s=30.0, metrics=Metrics())
    health.failure("m", retry_after=1e9)
    assert health.cooling() == {"m"}
    assert health._cool_until["m"] - time.monotonic() <= 3600.0
    health.failure("n", retry_after=120.0)  # a plausible one is kept as the upstream asked
    assert health._cool_until["n"] - time.monotonic() > 100.0


@pytest.mark.parametrize("spec", [":no_stream", ":html"])
def test_a_stream_answered_with_something_else_than_events_falls_back(pair, spec):
    """A server that ignores `stream` (its whole JSON answer) or a proxy's HTML page: before,
    its bytes went to the client as the event stream, with a stream_cut error after them."""
    upstream, make = pair
    with make(spec) as gw:
        text = routed_stream_text(gw)
        assert text == "answer from second" and upstream.calls[f"first{spec}"] == 1
        assert metric(gw, 'uniroute_upstream_failures_total{model="first",reason="bad_body"}') == 1


def test_stream_cut_before_any_byte_falls_back(pair):
    _, make = pair
    with make(":cut=0") as gw:
        text = routed_stream_text(gw)
        assert text == "answer from second"


@pytest.mark.parametrize("spec,reason", [(":stream_error", "cut"), (":ping,stream_error", "cut"),
                                         (":ping,cut=1", "cut"), (":ping,pace=3", "timeout")])
def test_a_stream_failing_before_its_first_data_falls_back(pair, spec, reason):
    """A stream opening with an error event instead of an answer, or failing after nothing but a
    comment (OpenRouter's `: OPENROUTER PROCESSING`): before, the comment or the error went to
    the client, which got an error while the next model could answer."""
    upstream, make = pair
    with make(spec, timeouts={"read_s": 0.5}) as gw:
        text = routed_stream_text(gw)
        assert text == "answer from second" and upstream.calls[f"first{spec}"] == 1
        assert metric(gw, f'uniroute_upstream_failures_total{{model="first",reason="{reason}"}}') == 1


def test_a_stream_to_an_upstream_refusing_the_usage_option_the_gateway_added_goes_again_without_it(pair):
    """The gateway asks a stream's usage when the client does not; an upstream that does not know
    `stream_options` refused it: before, the client got a 400 about a parameter it never sent.
    A client that sent its own `stream_options` gets the refusal: before, when its options did not
    ask for usage, the gateway set `include_usage` in them and, refused, asked again with none of
    them, the client's own options silently dropped."""
    upstream, make = pair
    with make(":no_stream_options") as gw:
        text = routed_stream_text(gw)
        assert text == "answer from first:no_stream_options"
        sent = [r.body for r in upstream.received]
        assert len(sent) == 2 and "stream_options" in sent[0] and "stream_options" not in sent[1]
        assert metric(gw, "uniroute_upstream_failures_total") == 0
        # the client's own stream_options is its own parameter: the refusal comes back as it is
        for options in ({"include_usage": True}, {"include_usage": False}, {}):
            with pytest.raises(openai.BadRequestError, match="stream_options"):
                client(gw).chat.completions.create(model="first", messages=MESSAGES, stream=True,
                                                   stream_options=options)
            assert "stream_options" in upstream.received[-1].body  # asked once, as the client asked
        assert len(upstream.received) == 5


def test_a_stream_opening_with_pings_is_relayed_whole_with_them(pair):
    _, make = pair
    with make(":ping") as gw:
        text = routed_stream_text(gw)
        assert text == "answer from first:ping"


def test_stream_cut_mid_way_ends_with_an_error_event_not_a_hang(pair):
    _, make = pair
    with make(":cut=2") as gw:
        stream = client(gw).chat.completions.create(model="uniroute:0", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError, match="cut the stream|ended the stream"):
            for _ in stream:
                pass
        assert metric(gw, 'uniroute_upstream_failures_total{model="first",reason="cut"}') == 1


def test_a_base_url_query_stays_a_query_after_the_path(make_gateway, fault_upstream, model_config):
    """Azure OpenAI's `?api-version=...`, a proxy's key in the query: before, the path went after
    the query ("...?api-version=1/chat/completions"), every request reached the upstream's root,
    and the model was disabled as a base_url that serves no /chat/completions."""
    upstream, url = fault_upstream
    assert upstream_url(replace(make_record(), base_url="https://h/v1/?v=1"), "/responses/r?limit=2") == \
        "https://h/v1/responses/r?v=1&limit=2"
    with make_gateway(models=[model_config("q", url + "?api-version=2024-10-21")]) as gw:
        chat = client(gw).chat.completions.create(model="uniroute:0", messages=[{"role": "user", "content": "Hi"}])
    assert chat.choices[0].message.content == "answer from q"
    assert (upstream.received[-1].path, upstream.received[-1].query) == ("/v1/chat/completions",
                                                                         "api-version=2024-10-21")


@pytest.mark.parametrize("stream", [False, True])
def test_a_redirecting_upstream_is_told_as_a_redirect_to_where_it_points(pair, stream):
    """A server serving https only answers an `http://` base_url with a 301 and a Location. Read
    as an answer, its empty body was told as "not JSON", and a stream as "closed the stream before
    any data": nothing said to fix the base_url, nor where to."""
    _, make = pair
    with make(":status=301") as gw:
        with pytest.raises(openai.APIStatusError) as err:  # a stream too: nothing was streamed yet
            client(gw).chat.completions.create(model="first", messages=MESSAGES, stream=stream)
        assert err.value.status_code == 502
        assert "answered HTTP 301, a redirect to https://" in err.value.body["message"]
        assert "/v1/chat/completions, which the gateway does not follow" in err.value.body["message"]


def test_every_upstream_failing_gives_an_openai_error(make_gateway, fault_upstream, model_config):
    _, url = fault_upstream
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


# --- the fault classes after the request was sent -------------------------------------------------


@pytest.mark.parametrize("mode,reason", [("reset", "read"), ("close", "disconnect")])
def test_a_connection_lost_after_the_request_was_sent_is_labelled_so_and_not_asked_again(pair, mode, reason):
    _, make = pair
    with hangup_server(mode) as url, make("", first_url=url) as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert raw.headers["x-uniroute-model"] == "second"
        assert metric(gw, f'uniroute_upstream_failures_total{{model="first",reason="{reason}"}}') == 1
        assert metric(gw, 'uniroute_upstream_failures_total{model="first",reason="connect"}') == 0


def test_a_body_cut_mid_way_is_a_disconnect_not_a_connect_error(pair):
    upstream, make = pair
    with make(":cut=1") as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert raw.headers["x-uniroute-model"] == "second"
        assert upstream.calls["first:cut=1"] == 1
        assert metric(gw, 'uniroute_upstream_failures_total{model="first",reason="disconnect"}') == 1


def test_a_5xx_whose_body_breaks_mid_read_keeps_its_retry_after(pair):
    """A 503 asking for 30 s whose error body broke off mid-way (the server or a proxy dropping
    the connection) was classed by the broken read: its Retry-After went unread, and the model
    was left in routing for the next requests to meet the same refusal."""
    upstream, make = pair
    spec = ":status=503,retry_after=30,cut=1"
    with make(spec) as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert raw.headers["x-uniroute-model"] == "second"
        assert metric(gw, 'uniroute_model_cooldowns_total{model="first"}') == 1
        assert upstream.calls[f"first{spec}"] == 1


# --- auth and not_found: the model leaves routing --------------------------------------------------


@pytest.fixture
def faulty(make_gateway, fault_upstream, model_config):
    """A gateway preferring `first` over `second`; the test sets `first`'s fault from Python."""
    upstream, url = fault_upstream
    models = [model_config("first", url, score=0.9), model_config("second", url, score=0.6)]
    return upstream, lambda **settings: make_gateway(models=models, admin_key="admin-key", **settings)


@pytest.mark.parametrize("status,reason", [(401, "auth"), (403, "auth"), (404, "not_found")])
def test_a_refused_key_or_retired_model_disables_the_model_and_falls_back_silently(faulty, status, reason):
    upstream, make = faulty
    upstream.set_fault("first", Fault(status=status))
    with make() as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert raw.headers["x-uniroute-model"] == "second"
        assert upstream.calls["first"] == 1  # refused for good: not asked again
        assert metric(gw, f'uniroute_upstream_failures_total{{model="first",reason="{reason}"}}') == 1
        assert metric(gw, f'uniroute_models_faulted{{reason="{reason}"}}') == 1
        record = httpx.get(gw + "/admin/models/first", headers=ADMIN, timeout=5).json()
        assert (record["state"], record["enabled"]) == ("disabled", False)
        assert record["error"].startswith(f"upstream fault {reason}:")
        # out of routing: the next request does not even try it
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert raw.headers["x-uniroute-model"] == "second"
        assert upstream.calls["first"] == 1
        # the operator fixes the upstream and re-enables the model: it routes again
        upstream.set_fault("first", None)
        patched = httpx.patch(gw + "/admin/models/first", json={"enabled": True}, headers=ADMIN, timeout=5)
        assert patched.json()["state"] == "ready"
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert raw.headers["x-uniroute-model"] == "first"
        assert metric(gw, "uniroute_models_faulted") == 0
        assert httpx.get(gw + "/admin/models/first", headers=ADMIN, timeout=5).json()["error"] is None


def test_a_base_url_without_v1_disables_the_model_saying_so_not_that_the_model_is_unknown(pair, fault_upstream):
    """vLLM, TGI and llama.cpp serve /v1/chat/completions: at `http://host:8000` the gateway asks
    /chat/completions and gets the 404 of a path the server does not serve (vLLM's, FastAPI's:
    `{"detail": "Not Found"}`, which the fault upstream sends too). Before, the model was disabled
    as `not_found`, its upstream said not to know the model: the operator looked for a wrong name."""
    upstream, make = pair
    _, url = fault_upstream
    with make("", first_url=url.removesuffix("/v1"), admin_key="admin-key") as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert raw.headers["x-uniroute-model"] == "second"
        assert metric(gw, 'uniroute_upstream_failures_total{model="first",reason="no_endpoint"}') == 1
        assert metric(gw, 'uniroute_upstream_failures_total{model="first",reason="not_found"}') == 0
        record = httpx.get(gw + "/admin/models/first", headers=ADMIN, timeout=5).json()
        assert (record["state"], record["enabled"]) == ("disabled", False)
        assert record["error"].startswith("upstream fault no_endpoint:")
        assert "base_url, which likely lacks the /v1" in record["error"] and "does not know" not in record["error"]
        assert "fix the model's base_url" in record["error"] and "fix the upstream" not in record["error"]
        assert wait_for(lambda: metric(gw, 'uniroute_models_faulted{reason="no_endpoint"}') == 1)


@pytest.mark.parametrize("body,about_the_model", [
    (b'{"detail":"Not Found"}', False),  # vLLM, SGLang (FastAPI) for a path they do not serve
    (b'{"error":{"message":"Invalid URL (POST /chat/completions)","type":"invalid_request_error","param":null,'
     b'"code":null}}', False),  # OpenAI
    (b'{"error":{"code":404,"message":"File Not Found","type":"not_found_error"}}', False),  # llama.cpp
    (b"", False),  # TGI
    (b"404 page not found", False),  # Ollama
    (b"<html><head><title>404 Not Found</title></head><body><center><h1>404 Not Found</h1></center>"
     b"<hr><center>nginx</center></body></html>", False),  # a proxy
    (b'{"object":"error","message":"The model `x` does not exist.","type":"NotFoundError","param":null,'
     b'"code":404}', True),  # vLLM for an unknown model
    (b'{"error":{"message":"The model `x` does not exist or you do not have access to it.",'
     b'"type":"invalid_request_error","param":null,"code":"model_not_found"}}', True),  # OpenAI
    (b'{"error":{"message":"model \"x\" not found, try pulling it first","type":"api_error"}}', True),  # Ollama
    (b'{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}',
     True),  # Azure OpenAI
])
def test_a_404_about_the_model_is_told_from_one_about_the_path(body, about_the_model):
    assert names_model(body) is about_the_model


def test_a_retired_model_name_is_fixed_in_place_and_the_model_routes_again_on_its_profile(faulty):
    """The README's way back from `not_found`: fix the model name, re-enable. Before, PATCH took
    only cost and enabled, so fixing the name meant deleting the model and its graded answers."""
    upstream, make = faulty
    upstream.set_fault("first", Fault(status=404))
    with make() as gw:
        client(gw).chat.completions.create(model="uniroute:0", messages=MESSAGES)
        before = httpx.get(gw + "/admin/models/first", headers=ADMIN, timeout=5).json()
        assert before["state"] == "disabled"
        patched = httpx.patch(gw + "/admin/models/first", json={"upstream_model": "first-v2", "enabled": True},
                              headers=ADMIN, timeout=5).json()
        assert (patched["upstream_model"], patched["state"]) == ("first-v2", "ready")
        assert patched["profile"] == before["profile"] and patched["profiled_at"] == before["profiled_at"]
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert raw.headers["x-uniroute-model"] == "first" and upstream.received[-1].model == "first-v2"
        # where it is reached changes the same way; a bad value is refused and changes nothing
        bad = httpx.patch(gw + "/admin/models/first", json={"base_url": "ftp://elsewhere/v1"}, headers=ADMIN,
                          timeout=5)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "base_url"
        moved = httpx.patch(gw + "/admin/models/first", json={"base_url": f"http://127.0.0.1:{closed_port()}/v1",
                                                              "api_key_env": "FIRST_API_KEY"}, headers=ADMIN, timeout=5)
        assert moved.json()["api_key_env"] == "FIRST_API_KEY" and moved.json()["state"] == "ready"
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert raw.headers["x-uniroute-model"] == "second"  # the new address refuses: fallback
        cleared = httpx.patch(gw + "/admin/models/first", json={"api_key_env": None}, headers=ADMIN, timeout=5)
        assert cleared.json()["api_key_env"] is None


def test_a_named_model_with_a_revoked_key_never_shows_the_provider_error(faulty):
    upstream, make = faulty
    upstream.set_fault("first", Fault(status=401))
    with make() as gw:
        with pytest.raises(openai.APIStatusError) as err:
            client(gw).chat.completions.create(model="first", messages=MESSAGES)
        assert err.value.status_code == 502
        assert not isinstance(err.value, openai.AuthenticationError)
        text = orjson.dumps(err.value.body).decode()
        assert "Incorrect API key" not in text and "***" not in text and "api-keys" not in text
        # client traffic disables the model, and says so
        assert "refused the gateway's credentials (HTTP 401); the model is taken out of routing" in \
            err.value.body["message"]
        assert upstream.calls["second"] == 0


def test_a_404_on_an_endpoint_the_model_was_not_profiled_through_does_not_disable_it(faulty):
    upstream, make = faulty
    upstream.set_fault("first", Fault(status=404))
    with make() as gw:
        with pytest.raises(openai.APIStatusError) as err:
            client(gw).completions.create(model="first", prompt="Name a prime number.")
        assert err.value.status_code == 502
        record = httpx.get(gw + "/admin/models/first", headers=ADMIN, timeout=5).json()
        assert (record["state"], record["enabled"]) == ("ready", True)


def test_a_client_error_goes_back_as_the_upstream_said_it_without_retry_or_fallback(faulty):
    upstream, make = faulty
    upstream.set_fault("first", Fault(status=400))
    with make() as gw:
        with pytest.raises(openai.BadRequestError) as err:
            client(gw).chat.completions.create(model="uniroute:0", messages=MESSAGES)
        assert err.value.body["message"] == "Injected fault: HTTP 400."
        assert (upstream.calls["first"], upstream.calls["second"]) == (1, 0)
        assert metric(gw, "uniroute_upstream_failures_total") == 0
        assert metric(gw, "uniroute_routing_decisions_total") == 0
        assert metric(gw, "uniroute_cost_total") == 0
        record = httpx.get(gw + "/admin/models/first", headers=ADMIN, timeout=5).json()
        assert record["enabled"] is True


@pytest.mark.parametrize("body,too_long", [
    ({"error": {"message": "This model's maximum context length is 8192 tokens. However, your messages resulted in "
                           "9000 tokens.", "type": "invalid_request_error", "param": "messages",
                "code": "context_length_exceeded"}}, True),  # OpenAI
    ({"object": "error", "message": "This model's maximum context length is 4096 tokens. However, you requested "
                                    "5000 tokens.", "type": "BadRequestError", "param": None, "code": 400}, True),  # vLLM
    ({"error": {"code": 400, "message": "the request exceeds the available context size, try increasing it",
                "type": "exceed_context_size_error", "n_prompt_tokens": 5000, "n_ctx": 4096}}, True),  # llama.cpp
    ({"error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 5000 `inputs` "
               "tokens and 16 `max_new_tokens`", "error_type": "validation"}, True),  # TGI
    ({"error": "The number of tokens to keep from the initial prompt is greater than the context length (n_keep: "
               "5000>= n_ctx: 4096). Try to load the model with a larger context length, or provide a shorter input."},
     True),  # LM Studio
    ({"error": {"code": 500, "message": "Context size has been exceeded.", "type": "server_error"}}, True),  # llama.cpp's 500
    ({"error": "Context size has been exceeded."}, True),  # LM Studio, with its 400
    ({"error": {"message": "The server had an error while processing your request.", "type": "server_error"}}, False),
    ({"error": "context deadline exceeded"}, False),  # a Go server's timeout: "context" and "exceeded" alone say nothing
    ({"error": "Input validation error: `temperature` must be strictly positive", "error_type": "validation"}, False),
    ({"error": {"message": "temperature must be at most 2", "type": "invalid_request_error", "code": None}}, False),
    ({"detail": "Not Found"}, False),
    (["not", "an", "object"], False),
])
def test_a_context_length_refusal_is_told_from_other_client_errors(body, too_long):
    assert exceeds_context(body) is too_long


@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_too_long_for_the_chosen_model_goes_to_the_next_one(pair, stream):
    upstream, make = pair
    long_prompt = [{"role": "user", "content": "Summarise this: " + "word " * 400}]  # ~500 tokens
    with make(":context=100") as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=long_prompt,
                                                                   stream=stream)
        assert raw.headers["x-uniroute-model"] == "second"
        assert (upstream.calls["first:context=100"], upstream.calls["second"]) == (1, 1)
        assert metric(gw, 'uniroute_upstream_failures_total{model="first",reason="context_length"}') == 1
        # a prompt that fits still goes to the better model, which no cooldown or disabling touched
        short = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert short.headers["x-uniroute-model"] == "first"


@pytest.mark.parametrize("server,status", [("tgi", 422), ("lmstudio", 400)])
def test_a_prompt_too_long_told_as_a_plain_error_string_goes_to_the_next_model(pair, server, status):
    """TGI and LM Studio say it in `{"error": "<message>"}`: before, it was relayed to the client as a
    client error, with another model there that had room for the prompt."""
    upstream, make = pair
    spec = f":context=100,context_as={server}"
    long_prompt = [{"role": "user", "content": "Summarise this: " + "word " * 400}]
    with make(spec) as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=long_prompt)
        assert raw.headers["x-uniroute-model"] == "second"
        assert (upstream.calls[f"first{spec}"], upstream.calls["second"]) == (1, 1)
        assert metric(gw, 'uniroute_upstream_failures_total{model="first",reason="context_length"}') == 1
        with pytest.raises(openai.APIStatusError) as err:  # a named model: its refusal as it said it
            client(gw).chat.completions.create(model="first", messages=long_prompt)
        assert err.value.status_code == status and isinstance(err.value.body, str)


@pytest.mark.parametrize("stream", [False, True])
def test_llamacpps_500_saying_the_context_is_exceeded_goes_to_the_next_model_as_too_long(pair, stream):
    """llama.cpp answers some prompts longer than its context with HTTP 500 "Context size has been
    exceeded." (its issue #19774). Before, that was a `server` fault: the same model was asked
    again (the prompt will not fit), each refusal counted toward its cooldown, and with no model
    left the client got the gateway's 502 instead of the refusal."""
    upstream, make = pair
    spec = ":context=100,context_as=llamacpp_500"
    long_prompt = [{"role": "user", "content": "Summarise this: " + "word " * 400}]
    with make(spec, cooldown_failures=1) as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=long_prompt,
                                                                   stream=stream)
        assert raw.headers["x-uniroute-model"] == "second"
        assert (upstream.calls[f"first{spec}"], upstream.calls["second"]) == (1, 1)  # not asked again
        assert metric(gw, 'uniroute_upstream_failures_total{model="first",reason="context_length"}') == 1
        assert metric(gw, 'uniroute_upstream_failures_total{model="first",reason="server"}') == 0
        assert metric(gw, "uniroute_models_cooling") == 0
        with pytest.raises(openai.BadRequestError) as err:  # a named model: its refusal, as a 400
            answer = client(gw).chat.completions.create(model="first", messages=long_prompt, stream=stream)
            list(answer) if stream else answer
        assert err.value.body == {"code": 500, "message": "Context size has been exceeded.", "type": "server_error"}
        assert (upstream.calls[f"first{spec}"], upstream.calls["second"]) == (2, 1)
        # a prompt that fits still goes to the better model
        short = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert short.headers["x-uniroute-model"] == "first"


def test_a_stream_llamacpp_refuses_in_its_own_error_field_goes_to_the_next_model_as_too_long(pair):
    """llama.cpp's 2025 builds refuse a streamed prompt longer than their context with HTTP 200 and
    `error: {..., "type": "exceed_context_size_error"}`: before, that stream was taken for a body
    that is not events (`bad_body`), which counts toward the model's cooldown for a prompt that
    was merely too long for it."""
    upstream, make = pair
    spec = ":context=100,context_as=llamacpp"
    long_prompt = [{"role": "user", "content": "Summarise this: " + "word " * 400}]
    with make(spec, cooldown_failures=1) as gw:
        stream = client(gw).chat.completions.create(model="uniroute:0", messages=long_prompt, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "answer from second"
        assert (upstream.calls[f"first{spec}"], upstream.calls["second"]) == (1, 1)
        assert metric(gw, 'uniroute_upstream_failures_total{model="first",reason="context_length"}') == 1
        assert metric(gw, "uniroute_models_cooling") == 0


def test_a_prompt_too_long_for_every_model_gets_the_last_refusal_as_the_upstream_said_it(pair):
    upstream, make = pair
    long_prompt = [{"role": "user", "content": "word " * 400}]
    with make(":context=100") as gw:
        with pytest.raises(openai.BadRequestError) as err:  # a named model: no other to try
            client(gw).chat.completions.create(model="first", messages=long_prompt)
        assert err.value.body["code"] == "context_length_exceeded"
        assert "maximum context length is 100 tokens" in err.value.body["message"]
        assert upstream.calls["second"] == 0


IMAGE_MESSAGES = [{"role": "user", "content": [
    {"type": "text", "text": "What is in this picture?"},
    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]
TOOLS = [{"type": "function", "function": {"name": "now", "description": "The time now",
                                           "parameters": {"type": "object", "properties": {}}}}]
# The refusals of a feature the model or its server cannot take: the fault spec, and what the
# request carries that it refuses.
UNSUPPORTED = [(":no_vision=openai", {"messages": IMAGE_MESSAGES}), (":no_vision=vllm", {"messages": IMAGE_MESSAGES}),
               (":no_vision=llamacpp", {"messages": IMAGE_MESSAGES}),
               (":no_tools=vllm", {"messages": MESSAGES, "tools": TOOLS}),
               (":no_tools=llamacpp", {"messages": MESSAGES, "tools": TOOLS}),
               (":no_tools=ollama", {"messages": MESSAGES, "tools": TOOLS})]


@pytest.mark.parametrize("spec,request_fields", UNSUPPORTED)
def test_a_model_refusing_a_feature_the_request_uses_sends_it_to_the_next_model(pair, spec, request_fields):
    """Images to a text-only model, tools to a server not set up for them, as OpenAI, vLLM,
    llama.cpp (with HTTP 500) and Ollama refuse them. Before, the router's choice answered the
    client with that refusal (llama.cpp's 500s were asked again and counted toward its cooldown,
    then a 502), with another model there that takes the request."""
    upstream, make = pair
    with make(spec, cooldown_failures=1) as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", **request_fields)
        assert raw.headers["x-uniroute-model"] == "second"
        assert raw.parse().choices[0].message.content == "answer from second"
        assert (upstream.calls[f"first{spec}"], upstream.calls["second"]) == (1, 1)  # not asked again
        assert metric(gw, 'uniroute_upstream_failures_total{model="first",reason="unsupported"}') == 1
        assert metric(gw, "uniroute_models_cooling") == 0
        # a request without the feature still goes to the better model, which nothing cooled or disabled
        plain = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert plain.headers["x-uniroute-model"] == "first"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("spec,status,said", [(":no_vision=vllm", 400, "is not a multimodal model"),
                                              (":no_vision=llamacpp", 400, "image input is not supported")])
def test_a_feature_no_candidate_takes_gets_the_last_refusal_as_a_400(make_gateway, fault_upstream, model_config,
                                                                     stream, spec, status, said):
    """With no model left the client gets the last upstream's refusal as it is (llama.cpp's
    HTTP 500 as a 400, so that the openai SDK does not send it again), not the gateway's 502."""
    upstream, url = fault_upstream
    models = [model_config("a", url, upstream_model=f"a{spec}", score=0.9),
              model_config("b", url, upstream_model=f"b{spec}", score=0.6)]
    with make_gateway(models=models) as gw:
        with pytest.raises(openai.APIStatusError) as err:
            answer = client(gw).chat.completions.create(model="uniroute:0", messages=IMAGE_MESSAGES, stream=stream)
            list(answer) if stream else answer
        assert err.value.status_code == status and said in err.value.body["message"]
        assert err.value.response.headers["x-uniroute-model"] == "b"
        assert (upstream.calls[f"a{spec}"], upstream.calls[f"b{spec}"]) == (1, 1)
        for model in ("a", "b"):
            assert metric(gw, f'uniroute_upstream_failures_total{{model="{model}",reason="unsupported"}}') == 1
        assert metric(gw, "uniroute_cost_total") == 0


@pytest.mark.parametrize("body,unsupported", [
    ({"error": {"message": "Invalid content type. image_url is only supported by certain models.",
                "type": "invalid_request_error", "param": "messages.[1].content.[1].type", "code": None}}, True),
    ({"object": "error", "message": "facebook/opt-125m is not a multimodal model None", "type": "BadRequestError",
      "param": None, "code": 400}, True),  # vLLM
    ({"error": {"code": 500, "message": "image input is not supported - hint: if this is unexpected, you may need to "
                                        "provide the mmproj", "type": "server_error"}}, True),  # llama.cpp
    ({"object": "error", "message": '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to '
                                    "be set", "type": "BadRequestError", "param": None, "code": 400}, True),  # vLLM
    ({"error": {"code": 500, "message": "tools param requires --jinja flag", "type": "server_error"}}, True),
    ({"error": {"message": "registry.ollama.ai/library/gemma3:4b does not support tools", "type": "api_error",
                "param": None, "code": None}}, True),  # Ollama
    ({"error": {"message": "Invalid type for 'tools[0].function.name': expected a string, but got an integer instead.",
                "type": "invalid_request_error", "param": "tools[0].function.name", "code": "invalid_type"}}, False),
    ({"error": {"message": "The server had an error while processing your request.", "type": "server_error"}}, False),
])
def test_a_refusal_of_a_feature_is_told_from_other_errors(body, unsupported):
    assert refuses_feature(body) is unsupported


@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_too_long_for_every_candidate_gets_the_last_refusal_streamed_or_not(make_gateway, fault_upstream,
                                                                                     model_config, stream):
    """llama.cpp refuses a streamed prompt too long for it with HTTP 200 and an error field in the
    stream: before, with no model left, the client got the gateway's 502 "all upstream attempts
    failed", where the same prompt not streamed got llama.cpp's 400 saying what to do."""
    upstream, url = fault_upstream
    spec = ":context=100,context_as=llamacpp"
    models = [model_config("a", url, upstream_model=f"a{spec}", score=0.9),
              model_config("b", url, upstream_model=f"b{spec}", score=0.6)]
    long_prompt = [{"role": "user", "content": "word " * 400}]
    with make_gateway(models=models) as gw:
        with pytest.raises(openai.BadRequestError) as err:
            answer = client(gw).chat.completions.create(model="uniroute:0", messages=long_prompt, stream=stream)
            list(answer) if stream else answer
        assert err.value.status_code == 400
        assert err.value.body["type"] == "exceed_context_size_error" and err.value.body["n_ctx"] == 100
        assert "exceeds the available context size (100 tokens)" in err.value.body["message"]
        assert err.value.response.headers["x-uniroute-model"] == "b"
        assert (upstream.calls[f"a{spec}"], upstream.calls[f"b{spec}"]) == (1, 1)
        for model in ("a", "b"):
            assert metric(gw, f'uniroute_upstream_failures_total{{model="{model}",reason="context_length"}}') == 1
        assert metric(gw, "uniroute_cost_total") == 0


@pytest.mark.parametrize("spec,stream,said", [(":stream_error", True, "Provider returned error (injected fault)"),
                                              (":ok_error", False, 'Failed to load model "first:ok_error"')])
def test_an_error_in_place_of_the_last_models_answer_reaches_the_client_with_its_message(pair, spec, stream, said):
    """A stream opening with an error event (OpenRouter's provider failure), or a 200 whose body is
    an error (LM Studio's): the upstream wrote it for the client. Before, the client's 502 said
    only that the model "opened its stream with an error", not what the provider said."""
    upstream, make = pair
    with make(spec) as gw:
        with pytest.raises(openai.APIStatusError) as err:  # a named model: no other to try
            answer = client(gw).chat.completions.create(model="first", messages=MESSAGES, stream=stream)
            list(answer) if stream else answer
        assert err.value.status_code == 502 and err.value.body["code"] == "upstream_failed"
        assert said in err.value.body["message"]
        assert upstream.calls["second"] == 0


@pytest.mark.parametrize("error,kind,said", [
    ({"error": "The number of tokens to keep from the initial prompt is greater than the context length (n_keep: "
               "5000>= n_ctx: 4096)."}, "context_length", None),  # LM Studio's refusal, were it sent with a 200
    ({"error": "Failed to load model (injected fault)."}, "bad_body", "Failed to load model (injected fault)."),
    ({"object": "error", "message": "engine dead", "type": "InternalServerError", "code": 500}, "bad_body",
     "engine dead"),  # earlier vLLM
    ({"error": {"message": "x" * 2000}}, "bad_body", "x" * MESSAGE_CHARS),
    ({"error": {"code": 500}}, "bad_body", None),
])
def test_an_error_in_place_of_an_answer_is_told_by_what_it_says(error, kind, said):
    fault = error_instead(make_record("m"), error, "bad_body", "answered HTTP 200 with an error", 0.1, "req_1")
    assert fault.kind == kind
    if kind == "context_length":  # answered as a refusal with its status would be
        assert (fault.reply.status, fault.reply.json, fault.reply.request_id) == (400, error, "req_1")
        assert orjson.loads(fault.reply.body) == error
    else:
        assert fault.reply is None
        assert str(fault) == "m answered HTTP 200 with an error" + (f": {said}" if said else "")


@pytest.mark.parametrize("stream", [False, True])
def test_a_body_too_large_for_the_chosen_upstream_goes_to_the_next_model(pair, stream):
    """A 413 from one upstream is its own limit (the gateway took the body, under max_body_bytes):
    another model may take it. Before, it was relayed to the client as its own error."""
    upstream, make = pair
    with make(":status=413", cooldown_failures=1) as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES,
                                                                   stream=stream)
        assert raw.headers["x-uniroute-model"] == "second"
        assert (upstream.calls["first:status=413"], upstream.calls["second"]) == (1, 1)
        assert metric(gw, 'uniroute_upstream_failures_total{model="first",reason="too_large"}') == 1
        assert metric(gw, "uniroute_model_cooldowns_total") == 0  # the model is as healthy as before
        with pytest.raises(openai.APIStatusError) as err:  # a named model: its refusal as it said it
            client(gw).chat.completions.create(model="first", messages=MESSAGES, stream=stream)
        assert err.value.status_code == 413 and err.value.body["message"] == "Injected fault: HTTP 413."
        assert upstream.calls["second"] == 1


# --- streams that end early ---------------------------------------------------------------------------


def sse_data(body: bytes) -> list[str]:
    """The data of each event of an SSE body, in order."""
    return [line[6:] for line in body.decode().splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize("spec", [":interrupt", ":interrupt,crlf"])
def test_a_stream_ended_with_done_but_no_finish_reason_is_a_cut_reported_before_done(pair, spec):
    _, make = pair
    with make(spec) as gw:
        stream = client(gw).chat.completions.create(model="uniroute:0", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError, match="before the answer was complete"):
            for _ in stream:
                pass
        body = {"model": "uniroute:0", "messages": MESSAGES, "stream": True}
        raw = httpx.post(gw + "/v1/chat/completions", json=body, timeout=30).content
        data = sse_data(raw)
        assert len(data) > 3
        errors = [i for i, d in enumerate(data) if '"error"' in d]
        assert errors and data[-1] == "[DONE]" and errors[0] < len(data) - 1
        assert wait_for(lambda: metric(gw, 'uniroute_upstream_failures_total{model="first",reason="cut"}') == 2)


@pytest.mark.parametrize("spec", [":error_field_after=2", ":error_field_after=2,crlf"])
def test_llamacpps_failure_mid_stream_reaches_the_client_with_its_message_and_no_other_error(pair, spec):
    """llama.cpp's 2025 builds fail mid-stream in an `error` field of their own, then `[DONE]`.
    Before, the field went on as it came, the openai SDK skipped it, and the client got only the
    gateway's generic "ended the stream before the answer was complete": never llama.cpp's reason.
    Its message says the context ran out: that is this request's length, not the model's health,
    so it counts as `context_length` and toward no cooldown (before, each was a `cut`, and
    `cooldown_failures` long requests took a working model from everyone)."""
    _, make = pair
    with make(spec, cooldown_failures=1) as gw:
        stream = client(gw).chat.completions.create(model="uniroute:0", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError, match="Context size has been exceeded") as err:
            for _ in stream:
                pass
        assert err.value.body["type"] == "server_error"
        body = {"model": "uniroute:0", "messages": MESSAGES, "stream": True}
        raw = httpx.post(gw + "/v1/chat/completions", json=body, timeout=30).content
        assert not any(line.startswith(b"error:") for line in raw.splitlines())
        data = sse_data(raw)
        errors = [i for i, d in enumerate(data) if '"error"' in d]
        assert errors == [len(data) - 2] and data[-1] == "[DONE]"  # one error, the upstream's, before [DONE]
        assert orjson.loads(data[-2]) == {"error": {"code": 500, "message": "Context size has been exceeded.",
                                                    "type": "server_error"}}
        too_long = 'uniroute_upstream_failures_total{model="first",reason="context_length"}'
        assert wait_for(lambda: metric(gw, too_long) == 2)
        assert metric(gw, 'uniroute_upstream_failures_total{model="first",reason="cut"}') == 0
        assert metric(gw, "uniroute_model_cooldowns_total") == 0
        # the model still takes the next request
        answer = client(gw).chat.completions.with_raw_response.create(model="uniroute:0", messages=MESSAGES)
        assert answer.headers["x-uniroute-model"] == "first"


def test_a_stream_cut_mid_way_has_its_error_event_and_no_done(pair):
    _, make = pair
    with make(":cut=3") as gw:
        body = {"model": "uniroute:0", "messages": MESSAGES, "stream": True}
        data = sse_data(httpx.post(gw + "/v1/chat/completions", json=body, timeout=30).content)
        assert '"stream_cut"' in data[-1]
        assert "[DONE]" not in data


@pytest.mark.parametrize("spec", ["", ":crlf"])
def test_a_complete_stream_passes_untouched_with_its_done(pair, spec):
    _, make = pair
    with make(spec) as gw:
        body = {"model": "uniroute:0", "messages": MESSAGES, "stream": True,
                "stream_options": {"include_usage": True}}
        data = sse_data(httpx.post(gw + "/v1/chat/completions", json=body, timeout=30).content)
        assert data[-1] == "[DONE]"
        assert not any('"error"' in d for d in data)
        assert orjson.loads(data[-2])["usage"]["completion_tokens"] > 0


def test_a_client_that_hangs_up_mid_stream_stops_the_upstream_stream_and_is_counted(pair):
    """The relay notices the client going (app/api/event_stream.py): the upstream's stream is
    closed there and then, not read to its end at the provider's expense, and the request is
    still counted. Paced at 2 s a chunk, the upstream's stream would otherwise run for 10 s or more."""
    upstream, make = pair
    with make(":pace=2") as gw:
        body = {"model": "uniroute:0", "messages": MESSAGES, "stream": True}
        with httpx.stream("POST", gw + "/v1/chat/completions", json=body, timeout=30) as response:
            assert response.status_code == 200 and response.headers["x-uniroute-model"] == "first"
            assert next(response.iter_raw()).startswith(b"data: ")
        # A stream read to its end is not abandoned, however long this waits: no timing is asserted.
        assert wait_for(lambda: upstream.abandoned["first:pace=2"] == 1, timeout_s=60)
        assert wait_for(lambda: metric(gw, 'uniroute_requests_total{model="first",route="chat",status="200"}') == 1)


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_hangs_up_while_the_upstream_thinks_is_let_go_with_no_fallback_tried(pair, stream):
    """A client that gives up (its own timeout) while the first choice is slow: the gateway stops
    waiting there and then (app/api/hangup.py). Before, it waited out `read_s`, counted a timeout
    against the model and asked the next one, for nobody."""
    upstream, make = pair
    # read_s of 5 s: a loaded machine still sees the hang-up long before the timeout would come.
    with make(":delay=8", timeouts={"read_s": 5}) as gw:
        body = orjson.dumps({"model": "uniroute:0", "messages": MESSAGES, "stream": stream})
        with hanging_post(gw, "/v1/chat/completions", body):
            assert wait_for(lambda: upstream.calls["first:delay=8"] == 1)
        assert wait_for(lambda: metric(gw, 'uniroute_requests_total{model="none",route="chat",status="499"}') == 1,
                        timeout_s=60)
        # Counted once the gateway is done with the request: nothing more can be asked for it.
        assert upstream.calls["second"] == 0
        assert metric(gw, 'uniroute_upstream_failures_total{model="first",reason="timeout"}') == 0
        assert client(gw).chat.completions.create(model="second", messages=MESSAGES).choices[0].message.content
