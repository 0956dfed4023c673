"""Reading an upstream's server-sent events on their way to the client.

The relay passes each event through as the upstream framed it, but it reads what it needs:
whether the answer is complete, and the usage the upstream reports. Upstream errors the openai
SDK would not show are rewritten: llama.cpp's own `error` field (how its 2025 builds fail
mid-stream), which the SDK skips as a field it does not know, and TGI's error event with a bare
message, which it raises without the message, go on as OpenAI's error event.
A stream can end without being complete: cut mid-way, or ended with `[DONE]` while a choice's
`finish_reason` is still null (llama-cpp-python interrupts an answer so when another request
arrives), or with the upstream's own error (then no error of the gateway's follows it). Since
the openai SDK stops reading at `[DONE]`, the relay holds `[DONE]` back until it knows, and
puts its error event before it. A stream is over at `[DONE]` (a Responses API stream, which has
none, at its last event): what the upstream sends after it is not read. That last event (`[DONE]`,
or a Responses API stream's `response.completed` / `response.incomplete`) is held back until the
stream has been read and its books are done: a client continuing the conversation as soon as it
reads `response.completed` must find its response remembered (app/routing/conversations.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import orjson

DONE = b"[DONE]"
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE = re.compile(rb"\r\n|\n|\r")
# Responses API events that end an answer (failed carries the upstream's own error).
_RESPONSE_ENDS = {"response.completed", "response.incomplete"}


# What a stream of server-sent events can begin with (after a byte-order mark or blank lines):
# the standard fields, a comment, or the `error` field llama.cpp's server (its 2025 builds)
# reports a failure in, such as a prompt longer than its context (`error: {"code": 400, ...}`).
_EVENT_STARTS = (b"data:", b"event:", b"id:", b"retry:", b":", b"error:")


def opens_event_stream(first: bytes) -> bool:
    """Whether a stream's first bytes can begin server-sent events: a field, a comment, or too
    few bytes to tell. A server that ignores `stream` sends its whole JSON answer, a proxy an
    HTML page: neither may reach the client as if it were events."""
    head = first.removeprefix(b"\xef\xbb\xbf").lstrip(b"\r\n")
    return not head or any(head.startswith(start) or start.startswith(head) for start in _EVENT_STARTS)


def first_event(opening: bytes) -> bytes | None:
    """The first event with data (or an `error` field) in a stream's opening bytes; None while they
    hold only comments, blank lines or an event not yet whole. Reads no further than that event."""
    plain = b"\r" not in opening  # the usual line ends: a plain search, as in EventSplitter.feed
    start = 0
    while True:
        if plain:
            end = opening.find(b"\n\n", start) + 2
            if end < 2:
                return None
        elif (match := _EVENT_END.search(opening, start)) is not None:
            end = match.end()
        else:
            return None
        event = opening[start:end]
        if event_data(event) is not None or event_field(event, b"error") is not None:
            return event
        start = end


def opening_error(event: bytes) -> dict | None:
    """The error a stream's first event carries instead of an answer, as an error body
    `{"error": ...}`: data `{"error": ...}` (OpenRouter's and LiteLLM's provider failure), a
    Responses API `error` event, or the error object of an event named `error` or of llama.cpp's
    `error` field (its 2025 builds: `error: {"code": 400, "message": ..., "type":
    "exceed_context_size_error"}`, then `data: [DONE]`); None for an answer."""
    if b"error" not in event:
        return None  # the usual first chunk: no parse
    field = event_field(event, b"error")
    named = field is not None or event_field(event, b"event") == b"error"
    data = (field if field is not None else event_data(event)) or b""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        return {"error": data.decode(errors="replace")} if named else None
    if obj.get("error") is not None:
        return obj
    # the error's fields at the top level: an error body is `{"error": {...}}`
    return {"error": obj} if named or obj.get("type") == "error" else None


def error_field_event(event: bytes) -> bytes:
    """An event holding llama.cpp's `error` field (`error: {"code": 500, "message": ..., "type":
    "server_error"}`, then `data: [DONE]`) as OpenAI's error event, `data: {"error": {...}}`.
    The openai SDK skips a field it does not know, which would leave the client only the
    gateway's generic error; this event it raises as an APIError with llama.cpp's message."""
    body = opening_error(event)
    assert body is not None  # an `error` field always reads as an error body
    error = body["error"]
    if not isinstance(error, dict):  # a bare message (`error: overloaded`): the SDK reads `message`
        error = {"message": str(error)}
    return b"data: " + orjson.dumps({"error": error}) + b"\n\n"


def _error_body(obj: dict) -> dict:
    """An error event's error as an error body `{"error": ...}`: a chunk's own, a Responses API
    `error` event's fields, or the error of the response a `response.failed` event carries."""
    if obj.get("error") is not None:
        return obj
    if obj.get("type") == "response.failed" and isinstance(obj.get("response"), dict):
        return {"error": obj["response"].get("error")}
    return {"error": obj}


def message_error_event(body: dict) -> bytes:
    """An error event whose `error` is a bare message, as TGI fails mid-stream (`{"error": "Request
    failed during generation: ...", "error_type": "generation"}`), as OpenAI's error event with
    that message (and `error_type` as its type). The openai SDK reads a message only inside an
    error object: it would raise TGI's event as "An error occurred during streaming"."""
    error = {"message": body["error"]}
    if isinstance(body.get("error_type"), str):
        error["type"] = body["error_type"]
    return b"data: " + orjson.dumps({"error": error}) + b"\n\n"


def asks_usage(body: dict | None) -> bool:
    """Whether a request asks for a stream's usage chunk (`stream_options.include_usage`)."""
    options = body.get("stream_options") if body is not None else None
    return isinstance(options, dict) and options.get("include_usage") is True


class EventSplitter:
    """Cuts a byte stream into whole SSE events (each with its terminating blank line)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The events completed by `chunk` (the buffer is cut once, not once per event)."""
        buffer = self._buffer + chunk if self._buffer else chunk
        events = []
        start = 0
        if b"\r" not in buffer:  # the usual line ends: a plain search, no match objects
            while (end := buffer.find(b"\n\n", start)) >= 0:
                events.append(buffer[start:end + 2])
                start = end + 2
        else:
            while (match := _EVENT_END.search(buffer, start)) is not None:
                events.append(buffer[start:match.end()])
                start = match.end()
        self._buffer = buffer[start:]
        return events

    def rest(self) -> bytes:
        """What came after the last whole event (an unterminated event, or nothing)."""
        rest, self._buffer = self._buffer, b""
        return rest


def event_data(event: bytes) -> bytes | None:
    """The `data:` field of an event (several data lines joined by newlines), None if it has none."""
    if (event.startswith(b"data: ") and event.find(b"\n") == len(event) - 2 and event.endswith(b"\n\n")
            and b"\r" not in event):
        return event[6:-2]  # the usual event, one `data: ` line: no line splitting needed
    return event_field(event, b"data")


def event_field(event: bytes, name: bytes) -> bytes | None:
    """The field `name` of an event (several lines of it joined by newlines), None if it has none."""
    prefix = name + b":"
    lines = [line[len(prefix):] for line in _LINE.split(event) if line.startswith(prefix)]
    if not lines:
        return None
    return b"\n".join(line[1:] if line.startswith(b" ") else line for line in lines)


@dataclass
class StreamWatch:
    """Reads a chat/completions (or Responses API) stream event by event.

    `strip_usage`: the gateway asked for the usage chunk the client did not ask for, so it is
    read and not passed on. `usage_asked`: the request asked for the usage chunk (the gateway or
    the client). `over`: the stream has ended by its protocol (`[DONE]`, or a Responses API
    stream's `response.completed` / `response.incomplete`); later events are not passed on.
    `at_end`: nothing but `[DONE]` is still to come, the stream being over or its answer whole
    (chat/completions: every choice has its finish_reason, and the usage asked for has come).
    After the stream: `usage` (the upstream's, or None), `complete`, `upstream_error` (the error
    body the upstream sent in its stream, `{"error": ...}`: an error event, or llama.cpp's `error`
    field, passed on as an error event; None if it sent none), `cut`."""

    responses_api: bool = False
    strip_usage: bool = False
    usage_asked: bool = False
    usage: dict | None = None
    response: dict | None = None  # the Responses API's response object, as its last event carried it
    upstream_error: dict | None = None
    done: bytes | None = None  # the held-back last event: [DONE], or a Responses API stream's end
    cut: bool = False  # set by the relay: the stream did not deliver a complete answer
    ended: bool = False  # set by the relay once the upstream's stream is read, before its last events go out
    over: bool = False
    at_end: bool = False
    _finished: dict[int, bool] = field(default_factory=dict)
    _ended: bool = False

    @property
    def complete(self) -> bool:
        """Every choice has its finish_reason (chat/completions), or the response ended (Responses API)."""
        if self.responses_api:
            return self._ended
        return bool(self._finished) and all(self._finished.values())

    def see(self, event: bytes) -> bytes:
        """The bytes to pass on for one upstream event: itself, a rewrite, or nothing (held back or stripped)."""
        if self.over:
            return b""
        if not self.responses_api and self._more_text(event):
            return event
        data = event_data(event)
        if data is None:
            if event_field(event, b"error") is None:
                return event  # a comment or a keep-alive
            self.upstream_error = opening_error(event)
            return error_field_event(event)
        if data.strip() == DONE:
            self.done = event
            self.over = self.at_end = True
            return b""
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return event
        if not isinstance(obj, dict):
            return event
        if obj.get("error") is not None or obj.get("type") in ("error", "response.failed"):
            self.upstream_error = _error_body(obj)
            return message_error_event(obj) if isinstance(obj.get("error"), str) else event
        if self.responses_api:
            return self._see_response_event(event, obj)
        return self._see_chunk(event, obj)

    def _more_text(self, event: bytes) -> bool:
        """Whether an event is a chunk that only carries more of choice 0's answer, once choice 0
        has been seen: one `data: ` line holding one choice, index 0, finish_reason null, no
        usage, no error. Such a chunk changes nothing the watch keeps, and most of a stream is
        such chunks; telling one by its bytes costs a fraction of parsing it. A key's bytes cannot
        occur inside a JSON string (its quotes would be escaped there), so these counts see only
        the chunk's own keys; a chunk written otherwise (spaces after colons, a tool call's own
        index) is simply parsed."""
        return (0 in self._finished
                and event.startswith(b"data: {") and event.find(b"\n") == len(event) - 2
                and event.count(b'"finish_reason"') == 1 and b'"finish_reason":null' in event
                and event.count(b'"index"') == 1 and (b'"index":0,' in event or b'"index":0}' in event)
                and b'"error"' not in event and b'"type"' not in event
                and (b'"usage"' not in event or (event.count(b'"usage"') == 1 and b'"usage":null' in event)))

    def _see_response_event(self, event: bytes, obj: dict) -> bytes:
        response = obj.get("response")
        if isinstance(response, dict):
            self.response = response
        if obj.get("type") in _RESPONSE_ENDS:
            self._ended = self.over = self.at_end = True
            if isinstance(response, dict) and isinstance(response.get("usage"), dict):
                self.usage = response["usage"]
            self.done = event
            return b""
        return event

    def _see_chunk(self, event: bytes, obj: dict) -> bytes:
        choices = obj.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict):
                    index = choice.get("index", 0)
                    # An empty finish_reason is none yet: TGI's /v1/completions chunks carry `""`
                    # until the last (as SGLang's and Ollama's chat chunks once did).
                    self._finished[index] = self._finished.get(index, False) or bool(choice.get("finish_reason"))
        out = self._see_usage(event, obj, choices)
        # The usage chunk follows the last finish_reason: the answer is whole only with it, when asked for.
        self.at_end = self.complete and (self.usage is not None or not self.usage_asked)
        return out

    def _see_usage(self, event: bytes, obj: dict, choices: object) -> bytes:
        """The bytes to pass on for a chunk (its `choices` as parsed), once its usage is read."""
        usage = obj.get("usage")
        if not isinstance(usage, dict):
            # Groq reports a stream's token counts in a field of its own on its last chunk,
            # `"x_groq": {"id": ..., "usage": {"prompt_tokens": ..., ...}}`, with no `usage`. It is
            # not the usage chunk the gateway asked for: it passes on with its chunk.
            groq = obj.get("x_groq")
            if isinstance(groq, dict) and isinstance(groq.get("usage"), dict):
                self.usage = groq["usage"]
            return event
        self.usage = usage
        if not self.strip_usage:
            return event
        if not choices:
            return b""
        return b"data: " + orjson.dumps({k: v for k, v in obj.items() if k != "usage"}) + b"\n\n"
