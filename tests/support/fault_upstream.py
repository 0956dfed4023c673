"""A fault-injecting upstream in OpenAI's wire format, for the gateway's tests.

One ASGI app (`FaultUpstream().app`, serve it with `tests.support.servers.serve`) answers
`POST /v1/chat/completions` and `POST /v1/completions`, streamed or not, exactly as the replay
upstream does (same wire builders). A healthy answer is the text "answer from <model>", where
<model> is the model name exactly as requested.

Choosing a fault — by the requested model name, `<name>:<directive>[,<directive>...]`:

    delay=S         wait S seconds before the first byte (status line and headers included)
    status=C        answer HTTP C (e.g. 429, 500, 502, 503) with an OpenAI error body; a 3xx
                    redirects to the same path on https:// (what a server serving https only
                    answers an http:// base_url), with an empty body
    fail_first=N    only the first N requests for this model name fail (HTTP `status`,
                    503 by default); later ones are healthy
    cut=N           streamed: send the first N chunks, then drop the TCP connection (no final
                    chunk, no [DONE], no end of the chunked body); cut=0 drops it right after
                    the headers. Non-streamed: send half the body, then drop the connection.
                    With a failing `status` (not 401 or 424): half its error body, then the drop
    bad_json        HTTP 200 whose body is not JSON (streamed: an SSE event whose data is not
                    JSON, then [DONE])
    interrupt       streamed: the answer's chunks without the one carrying finish_reason, then
                    [DONE] (llama-cpp-python ends an in-flight stream so when another arrives)
    first_token=S   streamed: send the headers at once, then wait S seconds before the first chunk
    pace=S          streamed: wait S seconds between chunks (tokens arriving one by one)
    ping            streamed: a comment `: ping` before the first event (OpenRouter's
                    `: OPENROUTER PROCESSING` while it waits for its provider); it counts as a
                    chunk for `cut` and `pace`
    stream_error    streamed: an error event `data: {"error": {...}}` in place of the answer's
                    chunks, then the end of the stream (OpenRouter's and LiteLLM's provider failure)
    error_field_after=N  streamed: the first N chunks, then llama.cpp's failure mid-stream in an
                    `error` field of its own, `error: {"code": 500, "message": "Context size has
                    been exceeded.", "type": "server_error"}`, then `data: [DONE]` (its 2025 builds)
    crlf            streamed: frame events with CRLF line ends, as sse-starlette (so
                    llama-cpp-python) does
    no_stream       streamed: the whole JSON answer instead, as a server that ignores `stream`
    html            HTTP 200 with an HTML page (a proxy's), streamed or not
    no_stream_options  a request carrying `stream_options` gets HTTP 400 "Unrecognized request
                    argument supplied: stream_options", as Azure OpenAI's older API versions answer
    reasoning       refuse parameters as OpenAI's reasoning models (o-series, gpt-5) do, HTTP 400 with
                    `param` naming the parameter: chat's `max_tokens` ("Unsupported parameter:
                    'max_tokens' is not supported with this model. Use 'max_completion_tokens'
                    instead.", code `unsupported_parameter`), a `temperature` other than 1 ("Unsupported
                    value: 'temperature' does not support 0 with this model. Only the default (1)
                    value is supported.", code `unsupported_value`), a `top_p` other than 1 and
                    `logprobs` (code `unsupported_parameter`)
    ollama          read the request as Ollama does: chat's `max_completion_tokens` is ignored (only
                    `max_tokens` cuts the answer), as its releases to 0.32 at least do
    no_developer    refuse a `developer` message (chat or Responses API) as vLLM does under a chat template
                    without that role (Qwen's): HTTP 400 "Unexpected message role."
    no_reasoning    refuse `reasoning_effort` as OpenAI's models without reasoning do: HTTP 400
                    "Unrecognized request argument supplied: reasoning_effort" (`code` and `param` null)
    groq            refuse OpenAI's `store` as Groq does: HTTP 400 "property 'store' is unsupported, did you
                    mean 'stop'?" (no `code` nor `param`)
    ok_error        HTTP 200 whose body is an error, `{"error": "<message>"}`, as LM Studio
                    sends some of its failures, streamed or not
    negative_usage  the answer's usage reports -1 prompt tokens (a provider's bookkeeping bug),
                    streamed (when asked for usage) or not
    context=N       a context of N tokens (a token taken as 4 characters of the request's
                    messages, prompt or input): a longer request gets OpenAI's HTTP 400
                    `context_length_exceeded`
    context_as=S    with context=N, the longer request refused as server S does instead: `tgi`
                    (HTTP 422 `{"error": "Input validation error: ...", "error_type": "validation"}`)
                    or `lmstudio` (HTTP 400 `{"error": "The number of tokens to keep ..."}`)
                    or `llamacpp` (HTTP 400 `{"error": {..., "type": "exceed_context_size_error"}}`;
                    streamed, as its 2025 builds did: HTTP 200, the error object in an `error`
                    field of its own, `error: {"code": 400, ...}`, then `data: [DONE]`)
                    or `llamacpp_500` (HTTP 500 `{"error": {"code": 500, "message": "Context size
                    has been exceeded.", "type": "server_error"}}`, streamed or not, as llama.cpp
                    also answers: its issue #19774)
    no_vision=S     a request carrying an image (chat's `image_url` part, the Responses API's
                    `input_image`) refused as server S refuses it for a text-only model: `openai`
                    (HTTP 400 "Invalid content type. image_url is only supported by certain
                    models.", `code` null), `vllm` (HTTP 400 `{"object": "error", "message": "<model>
                    is not a multimodal model", ...}`) or `llamacpp` (HTTP 500 "image input is not
                    supported - hint: ... provide the mmproj", type `server_error`)
    no_tools=S      a request carrying `tools` refused as server S refuses it when not set up for
                    them: `vllm` (HTTP 400 '"auto" tool choice requires --enable-auto-tool-choice
                    and --tool-call-parser to be set'; when `tool_choice` is absent or "auto"),
                    `llamacpp` (HTTP 500 "tools param requires --jinja flag") or `ollama` (HTTP 400
                    "registry.ollama.ai/library/<model> does not support tools")
    retry_after=S   a failing status carries `Retry-After: S` (seconds)
    retry_after_date=S  a failing status carries `Retry-After` as the HTTP date S seconds from now

e.g. "m1:status=429", "m2:delay=0.5", "m3:fail_first=2,status=500", "m4:delay=0.2,cut=3".
Statuses 401, 403 and 404 carry OpenAI's own bodies, with the provider's message (for 401, a
masked fragment of the key the request carried), as a revoked key or a retired model gets;
424 carries TGI's body for a generation that failed on its side (the one server sending it).

Besides completions, `POST /v1/responses` (streamed or not, OpenAI's Responses API events) and
`POST /v1/embeddings` (floats, or base64 as the openai SDK asks by default) answer under the same
faults. Every answer carries an `x-request-id` header (`req_...`), as OpenAI's do.

Stored responses: every response created (streamed or not) is kept, unless its request said
`store: false`, in `upstream.stored` (id -> StoredResponse), and answered as OpenAI does:
`GET /v1/responses/{id}`, `DELETE /v1/responses/{id}` (`response.deleted`),
`GET /v1/responses/{id}/input_items` (a page of the input's messages: `limit`, `order`, `after`)
and `POST /v1/responses/{id}/cancel` (400: nothing here runs in the background), each under the
faults of the model that made the response; an unknown id is OpenAI's 404.
`delay` applies to every request; a failing status wins over bad_json, and over cut but for its
own body. A malformed directive is answered with HTTP 400 saying what is wrong.

Or from Python, for a plain model name: `upstream.set_fault("m1", Fault(status=503))`, and
`set_fault("m1", None)` to make it healthy again mid-test. A fault set so overrides any spec
in the name, and its `fail_first` counts the requests from the moment it was set.
`Fault(raw=(b"data: ...", ...))` answers a streamed request with exactly those bytes, each part
its own write (a provider's own wire format, split where a test wants it; `pace_s` makes each
part arrive on its own), and `hold_open_s` keeps the response open that long after the last.

Connection refused: point a model at `http://127.0.0.1:{closed_port()}/v1`. A server that
reads the request and then resets the connection (`ReadError`) or closes it without an answer
(`RemoteProtocolError`): `with hangup_server("reset" | "close") as url:`.

Counting: `upstream.calls[model]` counts the completion requests per requested model name
(only requests whose body parsed), and the requests about its stored responses; `GET /_stats` returns `{"calls": {model: n}}` for code in
another process; `upstream.received` keeps each request's path, model, JSON body, headers and
arrival time (`at`, time.monotonic());
`upstream.abandoned[model]` counts streams whose reader hung up before their last chunk.
`upstream.reset()` clears counts, log and faults.

A cut is an app returning with its response unfinished, which makes the ASGI server close the
socket (uvicorn logs "ASGI callable returned without completing response." — expected).
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import APIError, install_error_handlers
from app.demo.replay_upstream import (
    SSE_DONE,
    CannedAnswer,
    CompletionRequest,
    CutResponse,
    ResponsesBody,
    add_completion_routes,
    approx_tokens,
    json_response,
    model_object,
    response_body,
    responses_events,
    responses_request,
    sse_event,
    stream_chunks,
)
from app.errors import error_body
from app.routing.prompts import content_text

DEFAULT_FAIL_STATUS = 503

# OpenAI's error type, code and message for the statuses tests inject.
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests (injected fault)."),
    500: ("server_error", None, "The server had an error while processing your request (injected fault)."),
    502: ("server_error", None, "Bad gateway (injected fault)."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later (injected fault)."),
    403: ("invalid_request_error", "unsupported_country_region_territory",
          "Country, region, or territory not supported"),
    404: ("invalid_request_error", "model_not_found",
          "The model `{model}` has been deprecated, learn more here: https://platform.openai.com/docs/deprecations"),
}


def _tgi_refusal(context: int, tokens: int) -> tuple[int, dict]:
    return 422, {"error": f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= {context}. "
                          f"Given: {tokens} `inputs` tokens and 16 `max_new_tokens`", "error_type": "validation"}


def _lmstudio_refusal(context: int, tokens: int) -> tuple[int, dict]:
    return 400, {"error": f"The number of tokens to keep from the initial prompt is greater than the context "
                          f"length (n_keep: {tokens}>= n_ctx: {context}). Try to load the model with a larger "
                          "context length, or provide a shorter input."}


def _llamacpp_refusal(context: int, tokens: int) -> tuple[int, dict]:
    return 400, {"error": {"code": 400, "message": f"request ({tokens} tokens) exceeds the available context size "
                                                   f"({context} tokens), try increasing it",
                           "type": "exceed_context_size_error", "n_prompt_tokens": tokens, "n_ctx": context}}


def _llamacpp_500_refusal(context: int, tokens: int) -> tuple[int, dict]:
    return 500, {"error": {"code": 500, "message": "Context size has been exceeded.", "type": "server_error"}}


# How other servers than OpenAI refuse a prompt longer than the context: (status, body) for
# (context, the prompt's tokens).
CONTEXT_REFUSALS: dict[str, Callable[[int, int], tuple[int, dict]]] = {"tgi": _tgi_refusal,
                                                                      "lmstudio": _lmstudio_refusal,
                                                                      "llamacpp": _llamacpp_refusal,
                                                                      "llamacpp_500": _llamacpp_500_refusal}


def _openai_no_vision(model: str) -> tuple[int, dict]:
    return 400, error_body("Invalid content type. image_url is only supported by certain models.",
                           "invalid_request_error", param="messages.[0].content.[1].type")


def _vllm_error(message: str) -> tuple[int, dict]:
    """vLLM's 400 in the shape its releases before 0.10 send (the fields at the top level)."""
    return 400, {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": 400}


def _llamacpp_500(message: str) -> tuple[int, dict]:
    """llama.cpp's HTTP 500 for what its server was not started for (a std::runtime_error)."""
    return 500, {"error": {"code": 500, "message": message, "type": "server_error"}}


# How servers refuse a request using a feature the model (or the server, as started) cannot
# take: (status, body) for the requested model's name.
NO_VISION: dict[str, Callable[[str], tuple[int, dict]]] = {
    "openai": _openai_no_vision,
    "vllm": lambda model: _vllm_error(f"{model} is not a multimodal model None"),
    "llamacpp": lambda _: _llamacpp_500("image input is not supported - hint: if this is unexpected, you may need "
                                        "to provide the mmproj"),
}
NO_TOOLS: dict[str, Callable[[str], tuple[int, dict]]] = {
    "vllm": lambda _: _vllm_error('"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser '
                                  "to be set"),
    "llamacpp": lambda _: _llamacpp_500("tools param requires --jinja flag"),
    "ollama": lambda model: (400, error_body(f"registry.ollama.ai/library/{model} does not support tools",
                                             "api_error")),
}
_IMAGE_PARTS = ("image_url", "input_image")


def reasoning_refusal(body: dict) -> dict | None:
    """OpenAI's error body refusing the first parameter of `body` a reasoning model does not take."""
    def unsupported(param: str, extra: str = "") -> dict:
        return error_body(f"Unsupported parameter: '{param}' is not supported with this model.{extra}",
                          "invalid_request_error", param=param, code="unsupported_parameter")

    if "max_tokens" in body:
        return unsupported("max_tokens", " Use 'max_completion_tokens' instead.")
    if body.get("temperature", 1) != 1:
        return error_body(f"Unsupported value: 'temperature' does not support {body['temperature']} with this model. "
                          "Only the default (1) value is supported.", "invalid_request_error", param="temperature",
                          code="unsupported_value")
    if body.get("top_p", 1) != 1:
        return unsupported("top_p")
    return unsupported("logprobs") if body.get("logprobs") else None


def carries_image(body: dict) -> bool:
    """Whether a chat `messages` or Responses API `input` holds an image part."""
    items = body.get("messages") or body.get("input")
    return isinstance(items, list) and any(
        isinstance(item, dict) and isinstance(item.get("content"), list)
        and any(isinstance(part, dict) and part.get("type") in _IMAGE_PARTS for part in item["content"])
        for item in items)


def refuses_tools(server: str, body: dict) -> bool:
    """Whether `server`, not set up for tools, refuses `body`: any tools, for vLLM only with
    `tool_choice` left to "auto" (a named or "none" choice needs no tool parser)."""
    return bool(body.get("tools")) and (server != "vllm" or body.get("tool_choice", "auto") == "auto")


# llama.cpp's server failing mid-stream (its 2025 builds): an `error` field of its own, out of
# the KV cache it shares among its slots.
LLAMACPP_STREAM_FAILURE = (b'error: {"code":500,"message":"Context size has been exceeded.","type":"server_error"}'
                           b"\n\n")


class Answered(Exception):
    """An answer given as it is, not in OpenAI's error shape (another server's)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def retry_after_header(fault: Fault) -> str:
    """The Retry-After value of a fault: seconds, or the HTTP date that many seconds from now."""
    assert fault.retry_after is not None
    if fault.retry_after_date:
        return email.utils.formatdate(time.time() + fault.retry_after, usegmt=True)
    return f"{fault.retry_after:g}"


def masked_key(authorization: str | None) -> str:
    """The key fragment OpenAI's 401 shows: its first and last characters."""
    key = (authorization or "").removeprefix("Bearer ").strip()
    return f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"


@dataclass(frozen=True)
class Fault:
    """How the upstream misbehaves for one model; the default is healthy."""

    delay_s: float = 0.0
    status: int | None = None
    fail_first: int | None = None
    cut_after: int | None = None
    bad_json: bool = False
    interrupt: bool = False
    first_token_s: float = 0.0
    pace_s: float = 0.0
    ping: bool = False
    stream_error: bool = False
    error_field_after: int | None = None
    crlf: bool = False
    no_stream: bool = False
    html: bool = False
    ok_error: bool = False
    no_stream_options: bool = False
    reasoning: bool = False
    groq: bool = False
    ollama: bool = False
    no_developer: bool = False
    no_reasoning: bool = False
    negative_usage: bool = False
    context: int | None = None
    context_as: str | None = None
    no_vision: str | None = None
    no_tools: str | None = None
    retry_after: float | None = None
    retry_after_date: bool = False  # Retry-After sent as an HTTP date, not as seconds
    # streamed (chat, completions or Responses API): exactly these bytes, each part its own write
    # (paced by `pace`), in place of the answer's events; set from Python only
    raw: tuple[bytes, ...] | None = None
    # streamed: after the last part, the response stays open this long before it ends (a server or
    # proxy keeping the connection open after `[DONE]`); set from Python only
    hold_open_s: float = 0.0

    def failing_status(self, nth: int) -> int | None:
        """The error status for the `nth` request (1-based) under this fault, or None to answer."""
        if self.fail_first is not None:
            return (self.status or DEFAULT_FAIL_STATUS) if nth <= self.fail_first else None
        return self.status


# The directives without a value.
FLAGS = ("bad_json", "interrupt", "ping", "stream_error", "crlf", "no_stream", "html", "ok_error",
         "no_stream_options", "reasoning", "no_reasoning", "groq", "ollama", "no_developer", "negative_usage")


def parse_fault(spec: str) -> Fault:
    """The Fault a directive list such as "delay=0.5,status=503" describes; ValueError if malformed."""
    fields: dict[str, object] = {}
    for directive in filter(None, (d.strip() for d in spec.split(","))):
        key, _, value = directive.partition("=")
        try:
            if key in FLAGS and not value:
                fields[key] = True
            elif key in ("delay", "first_token", "pace"):
                fields[f"{key}_s"] = float(value)
            elif key in ("retry_after", "retry_after_date"):
                fields["retry_after"] = float(value)
                fields["retry_after_date"] = key == "retry_after_date"
            elif key in ("status", "fail_first", "cut", "context", "error_field_after"):
                fields["cut_after" if key == "cut" else key] = int(value)
            elif key == "context_as" and value in CONTEXT_REFUSALS:
                fields[key] = value
            elif key == "no_vision" and value in NO_VISION or key == "no_tools" and value in NO_TOOLS:
                fields[key] = value
            else:
                raise ValueError("unknown directive")
        except ValueError:
            raise ValueError(f"bad fault directive {directive!r}; use delay=S, status=C, "
                             "fail_first=N, cut=N, bad_json, interrupt, first_token=S, pace=S, ping, stream_error, "
                             "error_field_after=N, "
                             "crlf, no_stream, html, ok_error, no_stream_options, reasoning, no_reasoning, groq, ollama, "
                             "no_developer, negative_usage, context=N, "
                             "context_as=tgi|lmstudio|llamacpp|llamacpp_500, no_vision=openai|vllm|llamacpp, "
                             "no_tools=vllm|llamacpp|ollama, retry_after=S or retry_after_date=S") from None
    fault = Fault(**fields)  # type: ignore[arg-type]
    if fault.status is not None and not 300 <= fault.status <= 599:
        raise ValueError(f"fault status must be 300-599, got {fault.status}")
    return fault


def split_model(model: str) -> tuple[str, Fault]:
    """A requested model name -> (its plain name, the fault its `:directives` suffix asks for)."""
    name, sep, spec = model.partition(":")
    return name, parse_fault(spec) if sep else Fault()


_HELD_PORTS: list[socket.socket] = []


def closed_port(host: str = "127.0.0.1") -> int:
    """A port on `host` where every connection is refused.

    The port stays bound (never listening) for the life of the test process, so no other
    server can take it meanwhile.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    _HELD_PORTS.append(sock)
    return sock.getsockname()[1]


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the upstream received it (one about a stored response: no body, and the
    model that made the response)."""

    path: str
    model: str
    body: dict
    headers: dict[str, str]
    query: str = ""
    at: float = field(default_factory=time.monotonic)  # when it arrived
    peer: tuple[str, int] | None = None  # the client's address: one per connection


@dataclass(frozen=True)
class StoredResponse:
    """A response the upstream keeps: the response object, and its input as OpenAI's input items."""

    response: dict
    items: list[dict]


def input_items(body: ResponsesBody) -> list[dict]:
    """A request's `input` as OpenAI lists it back: each message an item with an id, its text an
    `input_text` part (an assistant's earlier turn: `output_text`); none without input (the
    instructions are not an input item)."""
    messages = [{"role": "user", "content": body.input}] if isinstance(body.input, str) else body.input or []
    return [{"id": "msg_" + uuid.uuid4().hex, "type": "message", "role": m.get("role", "user"), "status": "completed",
             "content": [{"type": "output_text" if m.get("role") == "assistant" else "input_text",
                          "text": content_text(m.get("content"))}]}
            for m in messages]


def page(items: list[dict], http: Request) -> dict:
    """One page of `items` (in input order) as OpenAI's list endpoints answer: `order` (desc by
    default), `limit` (20), `after` (the id the page starts after)."""
    params = http.query_params
    ordered = items if params.get("order") == "asc" else items[::-1]
    after = params.get("after")
    ids = [item["id"] for item in ordered]
    if after is not None:
        ordered = ordered[ids.index(after) + 1:] if after in ids else []
    limit = int(params.get("limit", 20))
    data = ordered[:limit]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(ordered) > limit}


def event_stream(fault: Fault, events: list[bytes], abandoned: Callable[[], None] | None = None) -> Response:
    """`events` as a server-sent event stream, after the fault's first-token delay and at its pace
    (`abandoned` is called when the reader hangs up before the last), or cut after `cut_after` of them."""
    if fault.cut_after is None:
        return StreamingResponse(_paced(fault.first_token_s, fault.pace_s, events, abandoned, fault.hold_open_s),
                                 media_type="text/event-stream")
    return CutResponse(events[: fault.cut_after], media_type="text/event-stream")


class FaultUpstream:
    """The fault-injecting upstream: `app` to serve, `calls` / `received` to assert on."""

    def __init__(self, models: Iterable[str] = ()) -> None:
        """`models` are listed by `GET /v1/models` (every name is answered, listed or not)."""
        self.models = list(models)
        self.calls: Counter[str] = Counter()
        self.received: list[ReceivedRequest] = []
        self.abandoned: Counter[str] = Counter()
        self.stored: dict[str, StoredResponse] = {}
        self._faults: dict[str, tuple[Fault, int]] = {}
        self.app = self._build_app()

    def set_fault(self, model: str, fault: Fault | None) -> None:
        """Make requests for `model` misbehave as `fault` from now on (None: healthy again)."""
        if fault is None:
            self._faults.pop(model, None)
        else:
            self._faults[model] = (fault, self.calls[model])

    def reset(self) -> None:
        """Forget counts, received requests, stored responses and faults set from Python."""
        self.calls.clear()
        self.received.clear()
        self.abandoned.clear()
        self.stored.clear()
        self._faults.clear()

    def _fault_for(self, model: str) -> tuple[Fault, int]:
        """The fault for this request to `model` and the request's number under it (1-based)."""
        if model in self._faults:
            fault, baseline = self._faults[model]
            return fault, self.calls[model] - baseline
        try:
            return split_model(model)[1], self.calls[model]
        except ValueError as exc:
            raise APIError(400, str(exc), param="model") from None

    async def _arrive(self, model: str, http: Request) -> Fault:
        """Count and log a request, wait its delay, and raise its failing status; its fault."""
        self.calls[model] += 1
        body = orjson.loads(await http.body() or b"{}")  # a stored response's requests have none
        peer = (http.client.host, http.client.port) if http.client else None
        self.received.append(ReceivedRequest(http.url.path, model, body, dict(http.headers), http.url.query,
                                             peer=peer))
        fault, nth = self._fault_for(model)
        await asyncio.sleep(fault.delay_s)
        tokens = approx_tokens(orjson.dumps([body.get(k) for k in ("messages", "prompt", "input")]).decode())
        if fault.context is not None and tokens > fault.context and fault.context_as is not None:
            status, refusal = CONTEXT_REFUSALS[fault.context_as](fault.context, tokens)
            if fault.context_as == "llamacpp" and body.get("stream"):
                raise Answered(Response(b"error: " + orjson.dumps(refusal["error"]) + b"\n\n" + SSE_DONE,
                                        media_type="text/event-stream"))
            raise Answered(json_response(refusal, status))
        if fault.context is not None and tokens > fault.context:
            raise APIError(400, f"This model's maximum context length is {fault.context} tokens. However, your "
                                f"messages resulted in {tokens} tokens. Please reduce the length of the messages.",
                           type="invalid_request_error", param="messages", code="context_length_exceeded")
        if fault.no_vision is not None and carries_image(body):
            status, refusal = NO_VISION[fault.no_vision](model)
            raise Answered(json_response(refusal, status))
        if fault.no_tools is not None and refuses_tools(fault.no_tools, body):
            status, refusal = NO_TOOLS[fault.no_tools](model)
            raise Answered(json_response(refusal, status))
        if fault.reasoning and (refusal := reasoning_refusal(body)) is not None:
            raise Answered(json_response(refusal, 400))
        if fault.no_developer and any(isinstance(m, dict) and m.get("role") == "developer"
                                      for m in body.get("messages") or body.get("input") or []):
            raise APIError(400, "Unexpected message role.", type="BadRequestError")
        if fault.no_reasoning and "reasoning_effort" in body:
            raise APIError(400, "Unrecognized request argument supplied: reasoning_effort", type="invalid_request_error")
        if fault.groq and "store" in body:
            raise APIError(400, "property 'store' is unsupported, did you mean 'stop'?", type="invalid_request_error")
        if fault.no_stream_options and "stream_options" in body:
            raise APIError(400, "Unrecognized request argument supplied: stream_options", type="invalid_request_error")
        status = fault.failing_status(nth)
        if status == 401:
            raise APIError(401, f"Incorrect API key provided: {masked_key(http.headers.get('authorization'))}. "
                                "You can find your API key at https://platform.openai.com/account/api-keys.",
                           type="invalid_request_error", code="invalid_api_key")
        if status is not None and status < 400:
            raise Answered(Response(status_code=status, headers={"location": f"https://{http.url.netloc}{http.url.path}"}))
        if status == 424:
            raise Answered(json_response({"error": "Request failed during generation: Server error: CUDA out of "
                                                   "memory (injected fault)", "error_type": "generation"}, 424))
        if status is not None:
            kind, code, message = _ERRORS.get(
                status, ("server_error" if status >= 500 else "invalid_request_error", None,
                         f"Injected fault: HTTP {status}."))
            headers = {} if fault.retry_after is None else {"retry-after": retry_after_header(fault)}
            if fault.retry_after is None and fault.cut_after is None:
                raise APIError(status, message.format(model=model), type=kind, code=code)
            body = orjson.dumps(error_body(message.format(model=model), kind, code=code))
            if fault.cut_after is not None:  # the error body breaks mid-way
                headers["content-length"] = str(len(body))
                raise Answered(CutResponse([body[: len(body) // 2]], status, headers, media_type="application/json"))
            raise Answered(Response(body, status, headers, media_type="application/json"))
        return fault

    async def _respond(self, request: CompletionRequest, http: Request) -> Response:
        fault = await self._arrive(request.model, http)
        if fault.ollama and request.kind == "chat":
            request = replace(request, max_tokens=orjson.loads(await http.body()).get("max_tokens"))
        answer = CannedAnswer.for_request(request, f"answer from {request.model}")
        if fault.negative_usage:
            answer = replace(answer, prompt_tokens=-1)
        if fault.html:
            return Response(b"<html><body>502 Bad Gateway</body></html>", media_type="text/html")
        if fault.ok_error:
            return json_response({"error": f"Failed to load model \"{request.model}\" (injected fault)."})
        if fault.no_stream and request.stream:
            return json_response(response_body(request, answer))
        if fault.bad_json:
            if request.stream:
                return Response(b"data: {not json\n\n" + SSE_DONE, media_type="text/event-stream")
            return Response(b'{"id": "broken", "choices": [', media_type="application/json")
        if not request.stream:
            if fault.cut_after is None:
                return json_response(response_body(request, answer))
            body = orjson.dumps(response_body(request, answer))
            return CutResponse([body[: len(body) // 2]], media_type="application/json",
                                headers={"content-length": str(len(body))})
        if fault.raw is not None:
            return event_stream(fault, list(fault.raw))
        chunks = stream_chunks(request, answer)
        if fault.interrupt:  # the chunk carrying finish_reason never comes
            chunks = [(text, obj) for text, obj in chunks
                      if not (obj["choices"] and obj["choices"][0]["finish_reason"] is not None)]
        events = [sse_event(chunk) for _, chunk in chunks] + [SSE_DONE]
        if fault.stream_error:
            events = [sse_event({"error": {"message": "Provider returned error (injected fault)", "code": 502}})]
        if fault.error_field_after is not None:
            events = [*events[:fault.error_field_after], LLAMACPP_STREAM_FAILURE, SSE_DONE]
        if fault.ping:
            events.insert(0, b": ping\n\n")
        if fault.crlf:
            events = [event.replace(b"\n", b"\r\n") for event in events]
        return event_stream(fault, events, lambda: self.abandoned.update([request.model]))

    async def _responses(self, body: ResponsesBody, http: Request) -> Response:
        """`POST /v1/responses`: the Responses API's response object, or its event stream."""
        fault = await self._arrive(body.model, http)
        request = responses_request(body)
        answer = CannedAnswer.for_request(request, f"answer from {body.model}")
        if not request.stream:
            return json_response(self._store(body, response_body(request, answer)))
        if fault.raw is not None:
            return event_stream(fault, list(fault.raw))
        frames = [frame for _, frame in responses_events(request, answer)]
        # The last event (response.completed or .incomplete) carries the whole response.
        self._store(body, orjson.loads(frames[-1].split(b"data: ", 1)[1])["response"])
        return event_stream(fault, frames)

    def _store(self, body: ResponsesBody, response: dict) -> dict:
        """Keep `response` with its input, unless the request said `store: false`; `response`."""
        if (body.model_extra or {}).get("store") is not False:
            self.stored[response["id"]] = StoredResponse(response, input_items(body))
        return response

    async def _stored(self, response_id: str, http: Request) -> StoredResponse:
        """The stored response a request is about, once arrived under its model's faults; OpenAI's
        404 for an id never stored, or deleted."""
        stored = self.stored.get(response_id)
        if stored is None:
            raise APIError(404, f"Response with id '{response_id}' not found.", type="invalid_request_error")
        await self._arrive(stored.response["model"], http)
        return stored

    async def _retrieve(self, response_id: str, http: Request) -> Response:
        """`GET /v1/responses/{id}`: the stored response object."""
        return json_response((await self._stored(response_id, http)).response)

    async def _delete(self, response_id: str, http: Request) -> Response:
        """`DELETE /v1/responses/{id}`: gone from the store."""
        await self._stored(response_id, http)
        del self.stored[response_id]
        return json_response({"id": response_id, "object": "response.deleted", "deleted": True})

    async def _input_items(self, response_id: str, http: Request) -> Response:
        """`GET /v1/responses/{id}/input_items`: a page of the response's input items."""
        return json_response(page((await self._stored(response_id, http)).items, http))

    async def _cancel(self, response_id: str, http: Request) -> Response:
        """`POST /v1/responses/{id}/cancel`: OpenAI's 400, as every response here was made at once
        (only a background response can be cancelled)."""
        await self._stored(response_id, http)
        raise APIError(400, "Cannot cancel a synchronous response.", type="invalid_request_error")

    async def _embeddings(self, http: Request) -> Response:
        """`POST /v1/embeddings`: one 4-dimensional vector per input, floats or base64 float32."""
        body = orjson.loads(await http.body())
        model = str(body.get("model"))
        await self._arrive(model, http)
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
        data = []
        for i, text in enumerate(inputs):
            vector = [float(len(str(text))), float(i), 0.5, -1.0]
            if body.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vector})
        tokens = sum(approx_tokens(str(t)) for t in inputs)
        return json_response({"object": "list", "data": data, "model": model,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="uniroute fault-injecting test upstream", docs_url=None, redoc_url=None,
                      openapi_url=None)
        install_error_handlers(app)
        app.add_exception_handler(Answered, lambda _, exc: exc.response)
        add_completion_routes(app, self._respond)
        app.add_api_route("/v1/responses", self._responses, methods=["POST"])
        app.add_api_route("/v1/responses/{response_id}", self._retrieve, methods=["GET"])
        app.add_api_route("/v1/responses/{response_id}", self._delete, methods=["DELETE"])
        app.add_api_route("/v1/responses/{response_id}/input_items", self._input_items, methods=["GET"])
        app.add_api_route("/v1/responses/{response_id}/cancel", self._cancel, methods=["POST"])
        app.add_api_route("/v1/embeddings", self._embeddings, methods=["POST"])
        app.add_middleware(RequestIds)

        @app.get("/v1/models")
        async def list_models() -> Response:
            return json_response({"object": "list", "data": [model_object(m) for m in self.models]})

        @app.get("/_stats")
        async def stats() -> Response:
            return json_response({"calls": dict(self.calls)})

        return app


class RequestIds:
    """Adds an `x-request-id` to every answer, as OpenAI does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", f"req_{uuid.uuid4().hex}".encode())]
            await send(message)

        await self.app(scope, receive, with_id)


async def _paced(delay_s: float, pace_s: float, parts: list[bytes],
                 abandoned: Callable[[], None] | None = None, hold_open_s: float = 0.0) -> AsyncIterator[bytes]:
    """`parts`, the first one `delay_s` seconds after the headers went out, then one every
    `pace_s` seconds, the body ending `hold_open_s` seconds after the last; `abandoned()` when the
    reader goes before the last."""
    sent = 0
    try:
        await asyncio.sleep(delay_s)
        for part in parts:
            if sent and pace_s:
                await asyncio.sleep(pace_s)
            yield part
            sent += 1
        await asyncio.sleep(hold_open_s)
    finally:
        if sent < len(parts) and abandoned is not None:
            abandoned()


@contextlib.contextmanager
def hangup_server(mode: str) -> Iterator[str]:
    """A server on a real socket that reads each request's head, then hangs up without answering:
    `reset` (an RST: the client's read fails, httpx.ReadError) or `close` (an orderly close: the
    server disconnected without a response, httpx.RemoteProtocolError). Yields its `/v1` base URL."""
    assert mode in ("reset", "close")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve_forever() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    conn.recv(65536)  # the request (its head at least): the server got it
                if mode == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    thread = threading.Thread(target=serve_forever, name=f"hangup-{mode}", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        stop.set()
        thread.join(5)
        listener.close()
