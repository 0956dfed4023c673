"""A stand-in for remote LLM providers: answers OpenAI-format requests from recorded answers.

This is a demo and test tool, not an LLM. `create_replay_app(responses, latency_scale, judges)`
serves every model in `responses` (model -> joined prompt text -> recorded answer; the demo's
come from `app.demo.replay_data`: RouterBench's and arena-bench-v1's) and every judge in
`judges` (model -> a function from the request's prompt to the reply text, e.g.
`app.demo.replay_judge`) under OpenAI's wire format:

- `POST /v1/chat/completions` — the prompt is the LAST user message's text (a string, or its
  text parts joined by newlines, as `app.routing.prompts.content_text` reads them);
- `POST /v1/completions` — the prompt is the `prompt` field (a string or a one-string list);
- `POST /v1/responses` — the Responses API: the prompt is `input` when it is a string, else the
  last user message of its items; `max_output_tokens` cuts the answer (status "incomplete");
- `GET /v1/models`, `GET /v1/models/{model}`.

Lookup: the exact prompt, then the prompt with whitespace runs collapsed. A prompt the model has
no recorded answer to is answered by who asks:
- the gateway profiling the model (header `x-uniroute-purpose: profiling`,
  `app.upstream.forwarding.PURPOSE_HEADER`): HTTP 422 with an OpenAI error body, code
  `no_recorded_answer` (`NO_RECORDED_ANSWER`). The job stores it as unanswered (an error
  answer, left out of the profile), never as wrong;
- anyone else (routed traffic, someone trying the demo): a clearly marked stand-in answer
  (`STAND_IN_MARK`) in valid OpenAI format, so the demo answers whatever it is sent.
An unknown model is a 404 with OpenAI's `model_not_found` error body.

Responses echo the requested model name. An answer ends before the first of the request's `stop`
sequences, and `max_tokens` / `max_completion_tokens` cut it, as a provider would
(finish_reason "length"). Streams (`stream: true`) are SSE
`data: {json}\\n\\n` chunks of "chat.completion.chunk" / "text_completion" objects split at word
boundaries, a last chunk carrying finish_reason, a usage chunk (empty `choices`) when
`stream_options.include_usage` is set, then `data: [DONE]\\n\\n`. A Responses API stream is
its typed events (`event: response.created` ... `response.completed`, each with its
`sequence_number`), the text in `response.output_text.delta` events, and no `[DONE]`.

Token counts are approximate: ceil(characters / 4), the usual rule of thumb for English text
with OpenAI's tokenisers; chat prompt tokens count the text of every message.

Latency imitates a hosted model: a time to first token, then a time per generated token, both
from `LATENCY` (illustrative figures of the order that public 2024 provider measurements
reported for these models; bigger and older models are slower — they are not measured by us):

| model                               | first token (s) | per token (ms) |
| ----------------------------------- | --------------- | -------------- |
| gpt-4-1106-preview                  | 0.60            | 40             |
| gpt-3.5-turbo-1106                  | 0.35            | 14             |
| claude-v2                           | 1.00            | 30             |
| claude-v1                           | 0.90            | 28             |
| claude-instant-v1                   | 0.45            | 11             |
| meta/llama-2-70b-chat               | 0.50            | 33             |
| meta/code-llama-instruct-34b-chat   | 0.45            | 25             |
| zero-one-ai/Yi-34B-Chat             | 0.45            | 28             |
| mistralai/mixtral-8x7b-chat         | 0.30            | 16             |
| WizardLM/WizardLM-13B-V1.2          | 0.25            | 12             |
| mistralai/mistral-7b-chat           | 0.20            | 10             |
| gpt-4-0314                          | 0.70            | 45             |
| gpt-3.5-turbo                       | 0.35            | 14             |
| palm-2-chat-bison-001               | 0.40            | 18             |
| vicuna-33b-v1.3                     | 0.45            | 28             |
| Starling-LM-7B-alpha                | 0.20            | 10             |
| openchat_3.5                        | 0.20            | 10             |
| replay-judge (GPT-4's judgments)    | 0.70            | 45             |
| any other model                     | 0.40            | 20             |

Both are multiplied by `latency_scale` (0 = instant, as in tests). A non-streamed answer
arrives after first-token time + all its tokens; a stream paces each chunk by its own tokens.

The wire-format builders here (`CompletionRequest`, `CannedAnswer`, `response_body`,
`stream_chunks`, `responses_events`, `sse_event`) are shared with the fault-injecting upstream of
the tests.
"""
from __future__ import annotations

import asyncio
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Receive, Scope, Send

from app.api.errors import APIError, install_error_handlers
from app.routing.prompts import content_text
from app.upstream.forwarding import PURPOSE_HEADER
from router_core.pricing import CHARS_PER_TOKEN

STAND_IN_MARK = "[uniroute replay: no recorded answer for this prompt from {model}]"
NO_RECORDED_ANSWER = "no_recorded_answer"
SSE_DONE = b"data: [DONE]\n\n"

Kind = Literal["chat", "text", "responses"]


# --- OpenAI wire format -------------------------------------------------------------------------


class CutResponse(StreamingResponse):
    """Sends its parts, then returns without ending the body.

    uvicorn closes the connection when an app returns with its response unfinished (logging
    one line, "ASGI callable returned without completing response."): the client sees the
    TCP connection drop mid-body, with no traceback in the logs.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for part in self.body_iterator:
            await send({"type": "http.response.body", "body": part, "more_body": True})



class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict] | None = None


class _RequestBase(BaseModel):
    # Unknown OpenAI parameters (temperature, top_p, user, ...) are accepted and ignored.
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    stream: bool | None = False
    stream_options: _StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    # OpenAI's: a string, or up to 4 of them
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    # One recorded answer per prompt, so one choice per request.
    n: Literal[1] | None = 1

    def stop_sequences(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return tuple(s for s in stops if s)


class ChatCompletionBody(_RequestBase):
    """The body of `POST /v1/chat/completions`, as far as an upstream stand-in reads it."""

    messages: list[_Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class TextCompletionBody(_RequestBase):
    """The body of `POST /v1/completions`, as far as an upstream stand-in reads it."""

    prompt: str | list[str] | list[int] | list[list[int]]


class ResponsesBody(BaseModel):
    """The body of `POST /v1/responses`, as far as an upstream stand-in reads it."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    input: str | list[dict] | None = None  # optional, as OpenAI's: the instructions alone may be the prompt
    instructions: str | None = None
    stream: bool | None = False
    max_output_tokens: int | None = Field(default=None, ge=1)


@dataclass(frozen=True)
class CompletionRequest:
    """What an upstream stand-in needs of a completion request, either endpoint."""

    kind: Kind
    model: str
    prompt: str
    prompt_chars: int
    stream: bool
    include_usage: bool
    max_tokens: int | None
    stop: tuple[str, ...] = ()


# Turns a parsed completion request (and the raw HTTP request it came in) into the HTTP response.
Responder = Callable[[CompletionRequest, Request], Awaitable[Response]]


def chat_request(body: ChatCompletionBody) -> CompletionRequest:
    """The prompt of a chat request is its last user message; prompt size counts every message."""
    user = [m for m in body.messages if m.role == "user"]
    if not user:
        raise APIError(400, "messages: at least one message must have role 'user'", param="messages")
    return CompletionRequest(
        kind="chat",
        model=body.model,
        prompt=content_text(user[-1].content),
        prompt_chars=sum(len(content_text(m.content)) for m in body.messages),
        stream=bool(body.stream),
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        max_tokens=body.max_completion_tokens or body.max_tokens,
        stop=body.stop_sequences(),
    )


def text_request(body: TextCompletionBody) -> CompletionRequest:
    """The prompt of a completions request: a string, or a list holding exactly one string; or
    token ids (a list, or a list holding one list), which have no text to look up, each counted
    as a token's characters."""
    prompt = body.prompt
    if isinstance(prompt, list) and not all(type(t) is int for t in prompt):
        if len(prompt) != 1:
            raise APIError(400, "prompt: this upstream answers one prompt per request", param="prompt")
        prompt = prompt[0]
    text = prompt if isinstance(prompt, str) else ""
    return CompletionRequest(
        kind="text",
        model=body.model,
        prompt=text,
        prompt_chars=len(text) or int(len(prompt) * CHARS_PER_TOKEN),
        stream=bool(body.stream),
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        max_tokens=body.max_tokens,
        stop=body.stop_sequences(),
    )


def responses_request(body: ResponsesBody) -> CompletionRequest:
    """The prompt of a Responses API request: its `input` string, the last user message of its
    input items, or without input its instructions; prompt size counts the instructions and every
    item's text."""
    if body.input is None:
        if body.instructions is None:
            raise APIError(400, "input: give `input` or `instructions`", param="input")
        prompt, texts = body.instructions, []
    elif isinstance(body.input, str):
        prompt, texts = body.input, [body.input]
    else:
        texts = [content_text(item.get("content")) for item in body.input]
        user = [text for item, text in zip(body.input, texts) if item.get("role") == "user"]
        if not user:
            raise APIError(400, "input: at least one item must be a message with role 'user'", param="input")
        prompt = user[-1]
    return CompletionRequest(
        kind="responses",
        model=body.model,
        prompt=prompt,
        prompt_chars=len(body.instructions or "") + sum(map(len, texts)),
        stream=bool(body.stream),
        include_usage=False,
        max_tokens=body.max_output_tokens,
    )


def approx_tokens(text: str) -> int:
    """Token count estimate: ceil(characters / 4)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


@dataclass(frozen=True)
class CannedAnswer:
    """The text sent back for a request, with its finish reason and approximate usage."""

    text: str
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int

    @classmethod
    def for_request(cls, request: CompletionRequest, text: str) -> CannedAnswer:
        """`text` as the answer to `request`, ended before its first stop sequence and cut to its
        max_tokens, as a provider would."""
        finish: Literal["stop", "length"] = "stop"
        ends = [i for i in (text.find(s) for s in request.stop) if i >= 0]
        if ends:
            text = text[:min(ends)]
        if request.max_tokens is not None and approx_tokens(text) > request.max_tokens:
            text, finish = text[: int(request.max_tokens * CHARS_PER_TOKEN)], "length"
        return cls(text, finish, math.ceil(request.prompt_chars / CHARS_PER_TOKEN), approx_tokens(text))

    def usage(self) -> dict:
        """OpenAI's `usage` object."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


@dataclass(frozen=True)
class _Envelope:
    """The fields every object of one response shares."""

    id: str
    created: int
    model: str

    @classmethod
    def new(cls, request: CompletionRequest) -> _Envelope:
        prefix = {"chat": "chatcmpl-", "text": "cmpl-", "responses": "resp_"}[request.kind]
        return cls(prefix + uuid.uuid4().hex, int(time.time()), request.model)

    def wrap(self, obj: str, choices: list[dict], **extra: object) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "choices": choices, **extra}


def response_body(request: CompletionRequest, answer: CannedAnswer) -> dict:
    """The non-streamed response: a "chat.completion", a "text_completion" or a Responses API
    "response" object."""
    env = _Envelope.new(request)
    if request.kind == "responses":
        return _response_object(env, answer, _output_message(answer.text, "completed"), done=True)
    if request.kind == "chat":
        message = {"role": "assistant", "content": answer.text, "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": answer.finish_reason}
        return env.wrap("chat.completion", [choice], usage=answer.usage())
    choice = {"index": 0, "text": answer.text, "logprobs": None, "finish_reason": answer.finish_reason}
    return env.wrap("text_completion", [choice], usage=answer.usage())


_PIECE = re.compile(r"\s*\S+|\s+")


def split_pieces(text: str) -> list[str]:
    """Word-ish stream pieces (each word with the whitespace before it); they join back to `text`."""
    return _PIECE.findall(text)


def stream_chunks(request: CompletionRequest, answer: CannedAnswer) -> list[tuple[str, dict]]:
    """Every chunk of the streamed response, each with the answer text it carries ("" for none).

    Chat opens with a role chunk and closes with an empty delta carrying finish_reason; with
    `include_usage` every chunk has `usage: null` and a last chunk has empty `choices` and the usage.
    """
    env = _Envelope.new(request)
    obj = "chat.completion.chunk" if request.kind == "chat" else "text_completion"
    extra = {"usage": None} if request.include_usage else {}

    def choice(piece: str | None, finish: str | None, first: bool = False) -> dict:
        if request.kind == "text":
            return {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}
        delta: dict = {"role": "assistant", "content": "", "refusal": None} if first else {}
        if piece is not None:
            delta["content"] = piece
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    chunks: list[tuple[str, dict]] = []
    if request.kind == "chat":
        chunks.append(("", env.wrap(obj, [choice(None, None, first=True)], **extra)))
    chunks += [(p, env.wrap(obj, [choice(p, None)], **extra)) for p in split_pieces(answer.text)]
    chunks.append(("", env.wrap(obj, [choice(None, answer.finish_reason)], **extra)))
    if request.include_usage:
        chunks.append(("", env.wrap(obj, [], usage=answer.usage())))
    return chunks


def _output_message(text: str, status: str) -> dict:
    """The Responses API's assistant message item holding `text`."""
    return {"type": "message", "id": "msg_" + uuid.uuid4().hex, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def _response_object(env: _Envelope, answer: CannedAnswer, message: dict | None, done: bool) -> dict:
    """A Responses API "response" object: in progress (no output yet), or finished with `message`
    ("incomplete" when max_output_tokens cut it)."""
    cut = answer.finish_reason == "length"
    status = ("incomplete" if cut else "completed") if done else "in_progress"
    usage = {"input_tokens": answer.prompt_tokens,
             "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
             "output_tokens": answer.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": answer.prompt_tokens + answer.completion_tokens} if done else None
    return {"id": env.id, "object": "response", "created_at": env.created, "status": status, "model": env.model,
            "output": [message] if done and message is not None else [], "usage": usage, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if done and cut else None,
            "instructions": None, "metadata": {}, "parallel_tool_calls": True, "temperature": 1.0,
            "tool_choice": "auto", "tools": [], "top_p": 1.0}


def responses_events(request: CompletionRequest, answer: CannedAnswer) -> list[tuple[str, bytes]]:
    """Every server-sent event of a streamed Responses API answer, each with the answer text it
    carries: the response created, its message and text part opened, a delta per piece, then
    everything closed and the response completed (or incomplete), numbered in order."""
    env = _Envelope.new(request)
    message = _output_message(answer.text, "completed")
    part, where = message["content"][0], {"item_id": message["id"], "output_index": 0, "content_index": 0}
    events: list[tuple[str, str, dict]] = [
        ("", "response.created", {"response": _response_object(env, answer, None, done=False)}),
        ("", "response.output_item.added", {"output_index": 0,
                                            "item": {**message, "status": "in_progress", "content": []}}),
        ("", "response.content_part.added", {**where, "part": {**part, "text": ""}}),
        *[(piece, "response.output_text.delta", {**where, "delta": piece}) for piece in split_pieces(answer.text)],
        ("", "response.output_text.done", {**where, "text": answer.text}),
        ("", "response.content_part.done", {**where, "part": part}),
        ("", "response.output_item.done", {"output_index": 0, "item": message}),
        ("", "response." + ("incomplete" if answer.finish_reason == "length" else "completed"),
         {"response": _response_object(env, answer, message, done=True)}),
    ]
    return [(piece, b"event: " + kind.encode() + b"\n" + sse_event({"type": kind, "sequence_number": n, **data}))
            for n, (piece, kind, data) in enumerate(events)]


def sse_event(obj: object) -> bytes:
    """One server-sent event carrying `obj` as JSON."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def json_response(obj: object, status_code: int = 200) -> Response:
    """A JSON response, serialised with orjson."""
    return Response(orjson.dumps(obj), status_code=status_code, media_type="application/json")


def model_object(model: str) -> dict:
    """An entry of `GET /v1/models`."""
    return {"id": model, "object": "model", "created": 0, "owned_by": "uniroute-replay"}


def model_not_found(model: str) -> APIError:
    """OpenAI's error for a model it does not serve."""
    return APIError(404, f"The model `{model}` does not exist or you do not have access to it.",
                    type="invalid_request_error", param="model", code="model_not_found")


def add_completion_routes(app: FastAPI, respond: Responder) -> None:
    """Mount both completion endpoints on `app`; each hands its parsed request to `respond`."""

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionBody, http: Request) -> Response:
        return await respond(chat_request(body), http)

    @app.post("/v1/completions")
    async def completions(body: TextCompletionBody, http: Request) -> Response:
        return await respond(text_request(body), http)


# --- the replay server ------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    """A model's simulated speed: time to first token, then time per generated token."""

    first_token_s: float
    per_token_s: float

    def scaled(self, factor: float) -> Latency:
        """This latency multiplied by `factor`."""
        return Latency(self.first_token_s * factor, self.per_token_s * factor)


LATENCY: dict[str, Latency] = {
    "gpt-4-1106-preview": Latency(0.60, 0.040),
    "gpt-3.5-turbo-1106": Latency(0.35, 0.014),
    "claude-v2": Latency(1.00, 0.030),
    "claude-v1": Latency(0.90, 0.028),
    "claude-instant-v1": Latency(0.45, 0.011),
    "meta/llama-2-70b-chat": Latency(0.50, 0.033),
    "meta/code-llama-instruct-34b-chat": Latency(0.45, 0.025),
    "zero-one-ai/Yi-34B-Chat": Latency(0.45, 0.028),
    "mistralai/mixtral-8x7b-chat": Latency(0.30, 0.016),
    "WizardLM/WizardLM-13B-V1.2": Latency(0.25, 0.012),
    "mistralai/mistral-7b-chat": Latency(0.20, 0.010),
    "gpt-4-0314": Latency(0.70, 0.045),
    "gpt-3.5-turbo": Latency(0.35, 0.014),
    "palm-2-chat-bison-001": Latency(0.40, 0.018),
    "vicuna-33b-v1.3": Latency(0.45, 0.028),
    "Starling-LM-7B-alpha": Latency(0.20, 0.010),
    "openchat_3.5": Latency(0.20, 0.010),
    "replay-judge": Latency(0.70, 0.045),
}
DEFAULT_LATENCY = Latency(0.40, 0.020)


def normalise_whitespace(text: str) -> str:
    """`text` with every whitespace run collapsed to one space, stripped at both ends."""
    return " ".join(text.split())


class ReplayBook:
    """Recorded answers per model, found by exact prompt, then by whitespace-normalised prompt."""

    def __init__(self, responses: Mapping[str, Mapping[str, str]]) -> None:
        self._responses = responses
        # One index over all models (they mostly share prompts, so each is normalised once):
        # normalised prompt -> the exact prompts that normalise to it.
        index: dict[str, list[str]] = {}
        for prompt in {p for prompts in responses.values() for p in prompts}:
            index.setdefault(normalise_whitespace(prompt), []).append(prompt)
        self._by_normalised = index

    @property
    def models(self) -> list[str]:
        """The models with recorded answers, sorted."""
        return sorted(self._responses)

    def __contains__(self, model: object) -> bool:
        return model in self._responses

    def lookup(self, model: str, prompt: str) -> str | None:
        """The recorded answer of `model` (which must be known) to `prompt`, or None."""
        answers = self._responses[model]
        found = answers.get(prompt)
        if found is not None:
            return found
        for exact in self._by_normalised.get(normalise_whitespace(prompt), ()):
            if exact in answers:
                return answers[exact]
        return None


def stand_in_answer(model: str) -> str:
    """The marked answer for a prompt `model` has no recorded answer to."""
    return (STAND_IN_MARK.format(model=model) + " This demo upstream only replays answers recorded "
            "in RouterBench and arena-bench-v1, and none was recorded for this prompt.")


def no_recorded_answer(model: str) -> APIError:
    """The error for a profiling request with a prompt `model` has no recorded answer to."""
    return APIError(422, f"The model `{model}` has no recorded answer for this prompt: the replay "
                         "upstream cannot answer it for profiling.",
                    type="invalid_request_error", param="messages", code=NO_RECORDED_ANSWER)


def stream_frames(request: CompletionRequest, answer: CannedAnswer) -> list[tuple[str, bytes]]:
    """Every frame of the streamed answer, each with the answer text it carries."""
    if request.kind == "responses":
        return responses_events(request, answer)
    return [(piece, sse_event(chunk)) for piece, chunk in stream_chunks(request, answer)] + [("", SSE_DONE)]


async def _paced_stream(frames: list[tuple[str, bytes]], latency: Latency) -> AsyncIterator[bytes]:
    await asyncio.sleep(latency.first_token_s)
    for piece, frame in frames:
        if piece:
            await asyncio.sleep(latency.per_token_s * approx_tokens(piece))
        yield frame


def create_replay_app(responses: Mapping[str, Mapping[str, str]], latency_scale: float = 1.0,
                      judges: Mapping[str, Callable[[str], str]] | None = None) -> FastAPI:
    """The replay upstream as an ASGI app over `responses` (model -> prompt -> recorded answer)
    and `judges` (model -> the reply text for a request's prompt)."""
    if not latency_scale >= 0:
        raise ValueError(f"latency_scale must be >= 0, got {latency_scale}")
    book = ReplayBook(responses)
    judges = dict(judges or {})
    served = sorted(set(book.models) | set(judges))
    app = FastAPI(title="uniroute replay upstream (demo and test tool, not an LLM)",
                  docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)

    def text_for(request: CompletionRequest, profiling: bool) -> str:
        judge = judges.get(request.model)
        if judge is not None:
            return judge(request.prompt)
        if request.model not in book:
            raise model_not_found(request.model)
        recorded = book.lookup(request.model, request.prompt)
        if recorded is not None:
            return recorded
        if profiling:
            raise no_recorded_answer(request.model)
        return stand_in_answer(request.model)

    async def respond(request: CompletionRequest, http: Request) -> Response:
        answer = CannedAnswer.for_request(request, text_for(request, http.headers.get(PURPOSE_HEADER) == "profiling"))
        latency = LATENCY.get(request.model, DEFAULT_LATENCY).scaled(latency_scale)
        if request.stream:
            return StreamingResponse(_paced_stream(stream_frames(request, answer), latency),
                                     media_type="text/event-stream")
        await asyncio.sleep(latency.first_token_s + latency.per_token_s * answer.completion_tokens)
        return json_response(response_body(request, answer))

    add_completion_routes(app, respond)

    @app.post("/v1/responses")
    async def responses(body: ResponsesBody, http: Request) -> Response:
        return await respond(responses_request(body), http)

    @app.get("/v1/models")
    async def list_models() -> Response:
        return json_response({"object": "list", "data": [model_object(m) for m in served]})

    @app.get("/v1/models/{model:path}")
    async def get_model(model: str) -> Response:
        if model not in served:
            raise model_not_found(model)
        return json_response(model_object(model))

    return app
