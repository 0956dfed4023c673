"""Reading upstream SSE streams on their way (app/upstream/streams.py): whole events whatever the
chunking and line ends, completeness, the held-back [DONE], the usage chunk."""
from __future__ import annotations

import orjson
import pytest

from app.demo.replay_upstream import (
    CannedAnswer,
    CompletionRequest,
    sse_event,
    stream_chunks,
)
from app.upstream import streams
from app.upstream.faults import exceeds_context
from app.upstream.streams import (
    EventSplitter,
    StreamWatch,
    event_data,
    first_event,
    opening_error,
    opens_event_stream,
)


def chunk(choices: list[dict], usage: dict | None = None) -> bytes:
    return b"data: " + orjson.dumps({"object": "chat.completion.chunk", "choices": choices, "usage": usage}) + b"\n\n"


def choice(index: int = 0, text: str = "", finish: str | None = None) -> dict:
    return {"index": index, "delta": {"content": text}, "finish_reason": finish}


USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
STREAM = [chunk([choice(text="a")]), chunk([choice(text="b")]), chunk([choice(finish="stop")]),
          chunk([], USAGE), b"data: [DONE]\n\n"]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_events_come_out_whole_however_the_bytes_are_cut(newline):
    body = b"".join(STREAM).replace(b"\n", newline)
    splitter = EventSplitter()
    events = [e for i in range(len(body)) for e in splitter.feed(body[i:i + 1])]
    assert splitter.rest() == b""
    assert b"".join(events) == body
    assert [event_data(e) for e in events][-1] == b"[DONE]"


@pytest.mark.parametrize("event,data", [
    (b"data: {}\n\n", b"{}"),
    (b"data:{}\n\n", b"{}"),
    (b"data: a\ndata: b\n\n", b"a\nb"),
    (b"data: a\rdata: b\n\n", b"a\nb"),
    (b"event: x\ndata: y\n\n", b"y"),
    (b"data: [DONE]\r\n\r\n", b"[DONE]"),
    (b": keep-alive\n\n", None),
])
def test_an_events_data_is_read_from_every_line_end_and_line_count(event, data):
    assert event_data(event) == data


def test_many_events_in_one_chunk_come_out_in_order_with_the_rest_kept():
    splitter = EventSplitter()
    body = b"".join(STREAM)
    assert splitter.feed(body + b"data: par") == STREAM
    assert splitter.feed(b"tial\n\n") == [b"data: partial\n\n"] and splitter.rest() == b""


def test_a_stream_with_every_finish_reason_is_complete_and_done_is_held_back():
    watch = StreamWatch()
    out = [watch.see(e) for e in STREAM]
    assert watch.complete and watch.usage == USAGE
    assert out[:-1] == STREAM[:-1] and out[-1] == b"" and watch.done == STREAM[-1]


def test_done_with_a_choice_still_open_is_not_complete():
    watch = StreamWatch()
    for e in [chunk([choice(0, "a"), choice(1, "b")]), chunk([choice(0, finish="stop")]), b"data: [DONE]\n\n"]:
        watch.see(e)
    assert not watch.complete  # choice 1 never finished


@pytest.mark.parametrize("usage_asked", [False, True])
def test_an_answer_is_whole_once_every_choice_finished_and_the_usage_asked_for_came(usage_asked):
    """What the relay waits `[DONE]` for only briefly: after it nothing but `[DONE]` is to come."""
    watch = StreamWatch(usage_asked=usage_asked)
    seen = []
    for e in [chunk([choice(0, "a"), choice(1, "b")]), chunk([choice(0, finish="stop")]),
              chunk([choice(1, finish="length")]), chunk([], USAGE)]:
        watch.see(e)
        seen.append(watch.at_end)
    assert seen == [False, False, not usage_asked, True]


def test_the_usage_chunk_the_gateway_asked_for_is_read_and_stripped():
    watch = StreamWatch(strip_usage=True)
    assert watch.see(chunk([], USAGE)) == b""
    rewritten = watch.see(chunk([choice(finish="stop")], USAGE))  # usage on a chunk with a choice
    assert "usage" not in orjson.loads(event_data(rewritten))
    assert watch.usage == USAGE and watch.complete


def groq_chunk(choices: list[dict], groq_usage: dict, usage: dict | None = None) -> bytes:
    """A chunk as Groq sends it: its own `x_groq` field, here with the stream's usage."""
    return b"data: " + orjson.dumps({"object": "chat.completion.chunk", "choices": choices, "usage": usage,
                                     "x_groq": {"id": "req_1", "usage": groq_usage}}) + b"\n\n"


GROQ_USAGE = {"queue_time": 0.01, "prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9, "total_time": 0.02}


def test_groqs_usage_in_its_own_field_is_read_and_passes_on_untouched():
    """Groq's last chunk carries the stream's usage in `x_groq.usage`, its `usage` absent (or
    null): it was not read. It is Groq's own field, not the usage chunk the gateway asked for."""
    last = groq_chunk([choice(finish="stop")], GROQ_USAGE)
    watch = StreamWatch(strip_usage=True)
    assert [watch.see(e) for e in (chunk([choice(text="a")]), last)] == [chunk([choice(text="a")]), last]
    assert watch.usage == GROQ_USAGE and watch.complete
    watch = StreamWatch()
    watch.see(groq_chunk([choice(finish="stop")], GROQ_USAGE, usage=USAGE))
    assert watch.usage == USAGE  # OpenAI's, where the chunk has it


def test_an_upstream_error_event_passes_and_is_noted():
    watch = StreamWatch()
    event = b'data: {"error": {"message": "overloaded"}}\n\n'
    assert watch.see(event) == event and watch.upstream_error == {"error": {"message": "overloaded"}}
    assert not exceeds_context(watch.upstream_error)


TOO_LONG = {"code": "context_length_exceeded", "message": "Your input exceeds the context window of this model."}


@pytest.mark.parametrize("responses_api,event", [
    (False, {"error": TOO_LONG}),
    (True, {"type": "error", **TOO_LONG, "param": None, "sequence_number": 3}),
    (True, {"type": "response.failed", "sequence_number": 3,
            "response": {"id": "resp_1", "object": "response", "status": "failed", "error": TOO_LONG}}),
])
def test_an_error_event_saying_the_context_ran_out_is_kept_as_an_error_body_that_says_so(responses_api, event):
    """The relay reads the kept body to tell a stream that ran out of context (this request's
    length: no cooldown) from one that failed (the model's health), whichever form it came in."""
    watch = StreamWatch(responses_api=responses_api)
    raw = b"data: " + orjson.dumps(event) + b"\n\n"
    assert watch.see(raw) == raw and exceeds_context(watch.upstream_error)


@pytest.mark.parametrize("field,error", [
    (b'error: {"code":500,"message":"Context size has been exceeded.","type":"server_error"}\n\n',
     {"code": 500, "message": "Context size has been exceeded.", "type": "server_error"}),
    (b'error: {"code":500,"message":"boom","type":"server_error"}\r\n\r\n',
     {"code": 500, "message": "boom", "type": "server_error"}),
    (b"error: overloaded\n\n", {"message": "overloaded"}),
])
def test_llamacpps_error_field_mid_stream_goes_on_as_an_openai_error_event(field, error):
    """The openai SDK skips a field it does not know: passed on as it came, llama.cpp's error
    never reached the client, only the gateway's generic error after it."""
    watch = StreamWatch()
    out = [watch.see(e) for e in [chunk([choice(text="a")]), field, b": keep-alive\n\n", b"data: [DONE]\n\n"]]
    assert out[1] == b"data: " + orjson.dumps({"error": error}) + b"\n\n"
    assert out[2] == b": keep-alive\n\n"  # a comment is still no error
    assert watch.upstream_error and not watch.complete and watch.done == b"data: [DONE]\n\n"


def test_a_responses_stream_is_complete_at_response_completed_with_its_usage():
    watch = StreamWatch(responses_api=True)
    watch.see(b'event: response.output_text.delta\ndata: {"type": "response.output_text.delta", "delta": "a"}\n\n')
    assert not watch.complete
    done = {"type": "response.completed", "response": {"usage": {"input_tokens": 4, "output_tokens": 1}}}
    watch.see(b"event: response.completed\ndata: " + orjson.dumps(done) + b"\n\n")
    assert watch.complete and watch.usage == {"input_tokens": 4, "output_tokens": 1}


def test_a_stream_is_over_at_done_or_at_a_responses_streams_last_event_and_nothing_after_passes():
    watch = StreamWatch()
    assert [watch.see(e) for e in [*STREAM[:3], b"data: [DONE]\n\n", b": keep-alive\n\n", chunk([], USAGE)]] == [
        *STREAM[:3], b"", b"", b""]
    assert watch.over and watch.complete and watch.usage is None
    watch = StreamWatch(responses_api=True)
    done = b'data: {"type": "response.completed", "response": {"usage": {"input_tokens": 4}}}\n\n'
    assert watch.see(done) == b"" and watch.done == done and watch.over  # held back, as [DONE] is
    assert watch.see(b": keep-alive\n\n") == b""


def replayed(kind: str, include_usage: bool, text: str) -> list[bytes]:
    """A stream as the replay upstream writes it (OpenAI's wire format, compact JSON), then [DONE]."""
    request = CompletionRequest(kind, "m", "hi", 2, True, include_usage, None)
    return [sse_event(c) for _, c in stream_chunks(request, CannedAnswer.for_request(request, text))] + [b"data: [DONE]\n\n"]


# Streams whose chunks look like a text chunk of choice 0 to a careless byte test, but are not one.
TRICKY = [
    # the answer's text spells keys; inside a JSON string their quotes are escaped
    [chunk([choice(text="a")]), chunk([choice(text='"finish_reason":"stop","usage":{"total_tokens":1}')]),
     b"data: [DONE]\n\n"],
    # a second choice that never finishes, opened after choice 0 and in a chunk of its own
    [chunk([choice(0, "a")]), chunk([choice(1, "b")]), chunk([choice(0, finish="stop")]), b"data: [DONE]\n\n"],
    # choice 0 opened by a text chunk and never finished, choice 1 finished
    [chunk([choice(0, "a")]), chunk([choice(1, finish="stop")]), b"data: [DONE]\n\n"],
    # usage on a chunk that also carries text
    [chunk([choice(text="a")]), chunk([choice(text="b")], USAGE), chunk([choice(finish="stop")]), b"data: [DONE]\n\n"],
    # an error event shaped like a text chunk
    [chunk([choice(text="a")]),
     b'data: {"choices":[{"index":0,"delta":{},"finish_reason":null}],"error":{"message":"x"}}\n\n'],
    # text chunks with an event name, a comment, or CR line ends
    [chunk([choice(text="a")]), b"event: delta\n" + chunk([choice(text="b")]), b": keep-alive\n\n",
     chunk([choice(text="c")]).replace(b"\n", b"\r\n"), chunk([choice(finish="stop")]), b"data: [DONE]\n\n"],
    # spaces after the colons: parsed, and still right
    [b'data: {"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": null}]}\n\n',
     b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}\n\n', b"data: [DONE]\n\n"],
    # Groq's: its usage in a field of its own on the last chunk
    [chunk([choice(text="a")]), groq_chunk([choice(finish="stop")], GROQ_USAGE), b"data: [DONE]\n\n"],
    # a tool call's own index
    [chunk([choice(text="")]),
     b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]},'
     b'"finish_reason":null}]}\n\n', chunk([choice(finish="tool_calls")]), b"data: [DONE]\n\n"],
]


def outcome(stream: list[bytes], strip_usage: bool) -> tuple:
    watch = StreamWatch(strip_usage=strip_usage, usage_asked=strip_usage)
    out = [watch.see(e) for e in stream]
    return out, watch.usage, watch.complete, watch.at_end, watch.upstream_error, watch.done


@pytest.mark.parametrize("stream", [
    *(replayed(kind, usage, "one two three four five") for kind in ("chat", "text") for usage in (False, True)),
    *TRICKY,
])
@pytest.mark.parametrize("strip_usage", [False, True])
def test_recognising_text_chunks_by_their_bytes_changes_no_outcome(stream, strip_usage, monkeypatch):
    fast = outcome(stream, strip_usage)
    monkeypatch.setattr(StreamWatch, "_more_text", lambda self, data: False)  # every chunk parsed
    assert fast == outcome(stream, strip_usage)


def test_a_usual_stream_parses_only_its_first_last_and_usage_chunks(monkeypatch):
    stream = replayed("chat", True, " ".join(["word"] * 20))
    parsed, loads = [], orjson.loads
    monkeypatch.setattr(streams.orjson, "loads", lambda data: parsed.append(data) or loads(data))
    watch = StreamWatch(strip_usage=True)
    for event in stream:
        watch.see(event)
    assert watch.complete and watch.usage is not None
    assert len(stream) > 20 and len(parsed) == 3  # the role chunk, the finish_reason chunk, the usage chunk


# llama.cpp's server (its 2025 builds) refusing a streamed prompt longer than its context: HTTP 200,
# the error object in an `error` field of its own, then [DONE].
LLAMACPP_TOO_LONG = (b'error: {"code":400,"message":"request (5000 tokens) exceeds the available context size (4096 '
                     b'tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":5000,'
                     b'"n_ctx":4096}\n\n')


@pytest.mark.parametrize("first,events", [
    (b"data: {}\n\n", True), (b"\xef\xbb\xbf\r\nevent: response.created\n", True), (b": keep-alive\n\n", True),
    (LLAMACPP_TOO_LONG, True),
    (b"da", True), (b"\n\n", True), (b"", True),  # too few bytes to tell: not refused
    (b'{"id": "chatcmpl-1", "choices": []}', False), (b"<html>", False), (b"dat a", False),
])
def test_a_stream_is_told_from_another_body_by_its_first_bytes(first, events):
    assert opens_event_stream(first) is events


@pytest.mark.parametrize("opening,event", [
    (b": ping\n\n", None),
    (b": OPENROUTER PROCESSING\r\n\r\n\n\ndata: {}\r\n\r\n", b"data: {}\r\n\r\n"),
    (b"event: response.created\ndata: {}\n\n", b"event: response.created\ndata: {}\n\n"),
    (b"data: {\"par", None),  # not whole yet
    (LLAMACPP_TOO_LONG + b"data: [DONE]\n\n", LLAMACPP_TOO_LONG),  # an event with no data, but an error
])
def test_a_streams_first_event_is_found_past_comments_and_blank_lines(opening, event):
    assert first_event(opening) == event


@pytest.mark.parametrize("event,error,too_long", [
    (b'data: {"error": {"message": "Provider returned error", "code": 502}}\n\n', True, False),
    (b'data: {"type": "error", "code": "server_error", "message": "boom"}\n\n', True, False),  # Responses API
    (b'event: error\ndata: {"code": 503, "message": "Loading model", "type": "unavailable_error"}\n\n', True, False),
    (b"event: error\ndata: overloaded\n\n", True, False),
    (b'data: {"error": {"message": "This model\'s maximum context length is 8192 tokens", "code": '
     b'"context_length_exceeded"}}\n\n', True, True),
    (LLAMACPP_TOO_LONG, True, True),
    (LLAMACPP_TOO_LONG.replace(b"exceed_context_size_error", b"invalid_request_error"), True, True),  # before 2025-09
    (b'event: response.created\ndata: {"type": "response.created", "response": {"id": "resp_1", "error": null}}\n\n',
     False, False),
    (b'data: {"choices": [{"index": 0, "delta": {"content": "the \\"error\\" word"}}]}\n\n', False, False),
    (b"data: [DONE]\n\n", False, False),
])
def test_an_error_opening_a_stream_is_told_from_an_answer_and_read_as_an_error_body(event, error, too_long):
    """The error comes back as an error body, `{"error": ...}`, whatever its shape in the stream: so
    a prompt too long for the model is told as from a refusal with a status. llama.cpp's `error`
    field was read as no data at all: its stream went on to [DONE], and its refusal, a
    `context_length` fault, was taken for a body that is not events (`bad_body`)."""
    body = opening_error(event)
    assert (body is not None) is error
    assert body is None or "error" in body
    assert exceeds_context(body) is too_long
