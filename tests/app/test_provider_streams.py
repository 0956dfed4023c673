"""Streams as OpenAI-compatible servers other than OpenAI really send them, relayed through a real
gateway to the openai SDK: what the client reads, and that a complete answer counts no cut and no
failure against its model. The upstream sends each provider's exact bytes (`Fault(raw=...)`)."""
from __future__ import annotations

import openai
import orjson
import pytest

from app.demo.replay_upstream import sse_event
from tests.support.clients import client, metric, wait_for
from tests.support.fault_upstream import Fault

MESSAGES = [{"role": "user", "content": "Name a prime number."}]
DONE = b"data: [DONE]\n\n"


def chunk(choices: list[dict], **fields) -> bytes:
    return sse_event({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": choices, **fields})


def text(content: str | None, finish: str | None = None, index: int = 0) -> dict:
    return {"index": index, "delta": {} if content is None else {"content": content}, "finish_reason": finish}


ANSWER = [chunk([text("Seven")]), chunk([text(None, "stop")])]


def response_event(kind: str, **fields) -> bytes:
    return b"event: " + kind.encode() + b"\n" + sse_event({"type": kind, "sequence_number": 0, **fields})


RESPONSE = {"id": "resp_1", "object": "response", "created_at": 1, "model": "m", "output": [], "error": None,
            "incomplete_details": None, "instructions": None, "metadata": {}, "parallel_tool_calls": True,
            "temperature": 1.0, "tool_choice": "auto", "tools": [], "top_p": 1.0}
COMPLETED = {**RESPONSE, "status": "completed",
             "output": [{"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
                         "content": [{"type": "output_text", "text": "Seven", "annotations": []}]}],
             "usage": {"input_tokens": 5, "output_tokens": 1, "total_tokens": 6,
                       "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}}
RESPONSES_ANSWER = [response_event("response.created", response={**RESPONSE, "status": "in_progress"}),
                    response_event("response.output_text.delta", item_id="msg_1", output_index=0, content_index=0,
                                   delta="Seven", logprobs=[]),
                    response_event("response.completed", response=COMPLETED)]


@pytest.fixture
def raw(make_gateway, fault_upstream, model_config):
    """(upstream, make): `with make(**settings) as gw:` a gateway whose one model, `raw`, the
    upstream answers as the test sets it (`upstream.set_fault("raw", Fault(raw=...))`)."""
    upstream, url = fault_upstream

    def make(**settings):
        return make_gateway(models=[model_config("raw", url)], **settings)

    return upstream, make


@pytest.mark.parametrize("route", ["chat", "responses"])
def test_a_stream_the_upstream_keeps_open_after_its_end_ends_there(raw, route):
    """A server or proxy may keep the response open after `[DONE]` (openai-node's "finish SSE
    streams immediately after [DONE]", #2317), or after a Responses API stream's
    `response.completed` (OpenCode Zen, OmniRoute #11384); the openai SDK stops reading at
    `[DONE]`. The gateway read on, holding `[DONE]` back: silent, the upstream ran out `read_s`,
    and the complete answer ended with a `stream_cut` error (the SDK raised it) and counted a cut
    against its model; sending keep-alives, it kept the client from ever seeing the end."""
    upstream, make = raw
    with make(timeouts={"read_s": 1.5}) as gw:
        if route == "chat":
            upstream.set_fault("raw", Fault(raw=(*ANSWER, DONE), hold_open_s=5))
            stream = client(gw).chat.completions.create(model="raw", messages=MESSAGES, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Seven"
        else:
            upstream.set_fault("raw", Fault(raw=tuple(RESPONSES_ANSWER), hold_open_s=5))
            events = list(client(gw).responses.create(model="raw", input="Name a prime number.", stream=True))
            assert events[-1].type == "response.completed"
        assert metric(gw, "uniroute_upstream_failures_total") == 0
        assert metric(gw, f'uniroute_requests_total{{model="raw",route="{route}",status="200"}}') == 1



USAGE_CHUNK = chunk([], usage={"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6})


@pytest.mark.parametrize("pace_s,client_usage", [(0.0, False), (1.5, False), (1.5, True)])
def test_a_stream_its_upstream_leaves_open_after_its_answer_without_done_ends_there(raw, pace_s, client_usage):
    """An upstream that sends every choice's finish_reason and the usage chunk, then neither
    `[DONE]` nor the body's end: the gateway waited `read_s` for more, then ended the complete
    answer with a `stream_cut` error (the SDK raised it) and counted a cut against the model,
    cooling a working one. The usage chunk comes after the last finish_reason: the stream is not
    ended before it (here it comes 1.5 s after it, longer than the gateway waits for `[DONE]`),
    whether the gateway asked for it or the client did."""
    upstream, make = raw
    with make(timeouts={"read_s": 4}, cooldown_failures=1) as gw:
        upstream.set_fault("raw", Fault(raw=(*ANSWER, USAGE_CHUNK), pace_s=pace_s, hold_open_s=60))
        options = {"stream_options": {"include_usage": True}} if client_usage else {}
        chunks = list(client(gw).chat.completions.create(model="raw", messages=MESSAGES, stream=True, **options))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Seven"
        assert [c.usage.completion_tokens for c in chunks if c.usage] == ([1] if client_usage else [])
        assert metric(gw, 'uniroute_tokens_total{kind="completion",model="raw"}') == 1
        assert metric(gw, "uniroute_upstream_failures_total") == 0
        assert metric(gw, 'uniroute_requests_total{model="raw",route="chat",status="200"}') == 1
        assert metric(gw, "uniroute_model_cooldowns_total") == 0



def test_a_stream_whose_upstream_drops_the_connection_after_its_answer_without_done_is_complete(raw):
    """The same answer, then the connection dropped instead of `[DONE]`: the client had all of it,
    yet got a `stream_cut` error after it, and the model a failure."""
    upstream, make = raw
    with make(cooldown_failures=1) as gw:
        upstream.set_fault("raw", Fault(raw=(*ANSWER, USAGE_CHUNK), cut_after=3))
        stream = client(gw).chat.completions.create(model="raw", messages=MESSAGES, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Seven"
        assert metric(gw, "uniroute_upstream_failures_total") == 0
        assert metric(gw, 'uniroute_requests_total{model="raw",route="chat",status="200"}') == 1



@pytest.mark.parametrize("route", ["chat", "responses"])
def test_a_stream_whose_body_ends_just_after_its_end_leaves_its_connection_for_the_next_request(raw, route):
    """The relay stops reading at `[DONE]` (or `response.completed`), but the body's end most
    often comes right behind it, as a write of its own (uvicorn's, so vLLM's): here 50 ms later.
    A connection left there, half read, was closed, and every stream opened a new one (a TLS
    handshake each, to a remote upstream)."""
    upstream, make = raw
    parts = (*ANSWER, DONE) if route == "chat" else tuple(RESPONSES_ANSWER)
    upstream.set_fault("raw", Fault(raw=parts, hold_open_s=0.05))
    with make() as gw:
        for _ in range(3):
            if route == "chat":
                stream = client(gw).chat.completions.create(model="raw", messages=MESSAGES, stream=True)
                assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Seven"
            else:
                events = list(client(gw).responses.create(model="raw", input="Name a prime number.", stream=True))
                assert events[-1].type == "response.completed"
        assert len({r.peer for r in upstream.received if r.model == "raw"}) == 1  # one connection, reused
        assert metric(gw, "uniroute_upstream_failures_total") == 0


def test_a_stream_its_upstream_failed_counts_against_its_model_when_the_client_leaves_at_the_error(raw):
    """The openai SDK raises an error event and hangs up there. The relay counted a failed
    stream only once it had read the upstream's end: a client gone first (always, when the
    upstream holds its response open a while after the error) took the count with it, and the
    model's failures went unseen by its cooldown and its metrics."""
    upstream, make = raw
    failure = sse_event({"error": {"message": "the engine died", "type": "server_error"}})
    with make() as gw:
        upstream.set_fault("raw", Fault(raw=(ANSWER[0], failure), hold_open_s=60))
        stream = client(gw).chat.completions.create(model="raw", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError, match="the engine died"):
            for _ in stream:
                pass
        assert wait_for(lambda: metric(gw, 'uniroute_upstream_failures_total{model="raw",reason="cut"}') == 1,
                        timeout_s=30)


# Groq's chat stream (api.groq.com/openai/v1): its own `x_groq` field names the request on the
# first chunk, and on the last, the one with the finish_reason, carries the stream's usage (with
# Groq's timings) in place of OpenAI's `usage`.
GROQ_USAGE = {"queue_time": 0.02, "prompt_tokens": 21, "prompt_time": 0.003, "completion_tokens": 4,
              "completion_time": 0.01, "total_tokens": 25, "total_time": 0.013}
GROQ_ANSWER = [chunk([{**text(None), "delta": {"role": "assistant", "content": ""}}], x_groq={"id": "req_1"}),
               chunk([text("Seven")]),
               chunk([text(None, "stop")], x_groq={"id": "req_1", "usage": GROQ_USAGE})]


def test_groqs_usage_in_its_own_field_is_counted(raw):
    """Groq puts a stream's token counts in `x_groq.usage` on its last chunk, not in `usage`: the
    gateway read none, and Groq's streams went uncounted in the token and cost metrics (and the
    budget guard took each at its expected cost)."""
    upstream, make = raw
    with make() as gw:
        upstream.set_fault("raw", Fault(raw=(*GROQ_ANSWER, DONE)))
        stream = client(gw).chat.completions.create(model="raw", messages=MESSAGES, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Seven"
        assert wait_for(lambda: metric(gw, 'uniroute_tokens_total{kind="prompt",model="raw"}') == 21)
        assert metric(gw, 'uniroute_tokens_total{kind="completion",model="raw"}') == 4
        assert metric(gw, 'uniroute_cost_total{model="raw"}') == 1.0  # the model's price: 1 a request


def tgi_completion(text: str, finish: str, **fields) -> bytes:
    """A chunk of TGI's /v1/completions stream (its router's `Chunk` and `CompletionFinal`): the
    finish_reason is an empty string until the last chunk, which carries the usage too."""
    return b"data:" + orjson.dumps({"id": "", "object": "text_completion", "created": 1, "model": "tgi",
                                     "system_fingerprint": "3.0.0-native", **fields,
                                     "choices": [{"index": 0, "text": text, "logprobs": None,
                                                  "finish_reason": finish}]}) + b"\n\n"


TGI_FAILURE = "Request failed during generation: Server error: CUDA out of memory"


@pytest.mark.parametrize("ending,cut", [
    ([tgi_completion(" seven", "length", usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})],
     False),
    ([b"data:" + orjson.dumps({"error": TGI_FAILURE, "error_type": "generation"}) + b"\n\n"], True),
])
def test_an_empty_finish_reason_is_no_finish(raw, ending, cut):
    """TGI's /v1/completions stream sends `"finish_reason": ""` until its last chunk (so did
    SGLang 0.4.3's chat chunks, sglang #3912, and Ollama's, ollama #4357). The gateway took `""`
    for a finish: the first chunk made the answer complete, and a stream TGI then failed
    (its error event, then `[DONE]`) counted as a whole answer, no failure against the model."""
    upstream, make = raw
    with make() as gw:
        upstream.set_fault("raw", Fault(raw=(tgi_completion("Five or", ""), *ending, b"data:[DONE]\n\n")))
        stream = client(gw).completions.create(model="raw", prompt="Name a prime number.", stream=True)
        if cut:
            with pytest.raises(openai.APIError):
                for _ in stream:
                    pass
        else:
            assert "".join(c.choices[0].text for c in stream) == "Five or seven"
        # The SDK raises at the error event and hangs up, while the gateway reads the upstream's end.
        assert wait_for(lambda: metric(gw, 'uniroute_requests_total{model="raw",route="completions",') == 1)
        assert wait_for(lambda: metric(gw, 'uniroute_upstream_failures_total{model="raw",reason="cut"}') == cut)
        assert metric(gw, 'uniroute_requests_total{model="raw",route="completions",status="200"}') == (not cut)


def test_tgis_error_mid_stream_reaches_the_client_with_its_message(raw):
    """TGI fails mid-stream with an event whose `error` is a bare message, `{"error": "...",
    "error_type": "generation"}` (its router's `Event::from(InferError)`), then `[DONE]`. The
    openai SDK shows an error event's message only from an error object: passed on as it came,
    the client read "An error occurred during streaming", never TGI's reason."""
    upstream, make = raw
    failure = b"data:" + orjson.dumps({"error": TGI_FAILURE, "error_type": "generation"}) + b"\n\n"
    with make() as gw:
        upstream.set_fault("raw", Fault(raw=(tgi_completion("Five or", ""), failure, b"data:[DONE]\n\n")))
        stream = client(gw).completions.create(model="raw", prompt="Name a prime number.", stream=True)
        with pytest.raises(openai.APIError, match="CUDA out of memory") as err:
            for _ in stream:
                pass
        assert err.value.body == {"message": TGI_FAILURE, "type": "generation"}
        # The SDK raises at the error event and hangs up: the upstream's failure is counted all the same.
        assert wait_for(lambda: metric(gw, 'uniroute_upstream_failures_total{model="raw",reason="cut"}') == 1)
