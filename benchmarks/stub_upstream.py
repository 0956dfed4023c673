"""A fast OpenAI-format upstream stub for benchmarks: `python -m benchmarks.stub_upstream --port N`.

Answers `POST /v1/chat/completions` and `POST /v1/completions`, streamed or not, for any model
name, after a fixed delay (`--delay-ms`, default 5): a stand-in for an LLM whose own speed is
taken out of the measurement, so what remains of a request's time through the gateway is the
gateway's. The answer is a fixed text of `--answer-tokens` tokens (cut by the request's
`max_tokens`); `usage` counts the prompt's and the answer's tokens as ceil(characters / 4), like
the replay upstream whose wire builders it uses. A stream sends all its chunks at once after
the delay.

Faults, for the soak (`--fail-rate`, `--cut-rate`, fractions of requests drawn from a seeded
random stream): a failed request is HTTP 500 with OpenAI's error body; a cut request sends part
of its body (a stream: its first two chunks) and then drops the connection. `GET /_stats` gives
`{"requests", "failed", "cut"}`.

Served by uvicorn (uvloop and httptools when installed); loopback only by default.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import sys
from dataclasses import dataclass

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from app.api.errors import APIError, install_error_handlers
from app.demo.replay_upstream import (
    SSE_DONE,
    CannedAnswer,
    CompletionRequest,
    CutResponse,
    add_completion_routes,
    json_response,
    model_object,
    response_body,
    sse_event,
    stream_chunks,
)

ANSWER_WORD = "answer "  # 7 characters: about two tokens at 4 characters a token
# The model name under which the stub judges (router_core.judging's prompts): a fixed verdict of
# each kind, so profiling with llm_judge items can be timed with no real judge.
JUDGE_MODEL = "stub-judge"
JUDGE_VERDICTS = {"rating": "Rating: [[7]]", "pairwise": "[[C]]", "correct": "CORRECT"}
STREAM_CHUNKS_BEFORE_CUT = 2


@dataclass
class StubOptions:
    """How the stub answers: its delay, its answer's length, and the share of faulty requests."""

    delay_s: float = 0.005
    answer_tokens: int = 20
    fail_rate: float = 0.0
    cut_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.delay_s < 0 or self.answer_tokens < 1:
            raise ValueError("delay must be >= 0 and answer_tokens >= 1")
        if min(self.fail_rate, self.cut_rate) < 0 or self.fail_rate + self.cut_rate > 1:
            raise ValueError("fail_rate and cut_rate must be >= 0 and add up to at most 1")


@dataclass
class StubStats:
    """Requests answered, and how many of them were made to fail or cut."""

    requests: int = 0
    failed: int = 0
    cut: int = 0


def _answer_text(tokens: int) -> str:
    return (ANSWER_WORD * ((tokens + 1) // 2)).rstrip()


def judge_verdict(prompt: str) -> str:
    """The stub judge's verdict for a judge prompt of any kind."""
    if "[The Start of Assistant A's Answer]" in prompt:
        return JUDGE_VERDICTS["pairwise"]
    if "[The Start of Assistant's Answer]" in prompt:
        return JUDGE_VERDICTS["rating"]
    return JUDGE_VERDICTS["correct"]


def create_stub_app(options: StubOptions) -> FastAPI:
    """The stub as an ASGI app."""
    stats = StubStats()
    rng = random.Random(options.seed)
    text = _answer_text(options.answer_tokens)
    app = FastAPI(title="uniroute benchmark upstream stub", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)

    def draw_fault() -> str | None:
        """"fail", "cut" or None for the next request, in the configured proportions."""
        x = rng.random()
        if x < options.fail_rate:
            return "fail"
        if x < options.fail_rate + options.cut_rate:
            return "cut"
        return None

    async def respond(request: CompletionRequest, _: Request) -> Response:
        stats.requests += 1
        fault = draw_fault()
        if options.delay_s:
            await asyncio.sleep(options.delay_s)
        if fault == "fail":
            stats.failed += 1
            raise APIError(500, "The server had an error while processing your request (injected fault).",
                           type="server_error")
        answer = CannedAnswer.for_request(request, judge_verdict(request.prompt) if request.model == JUDGE_MODEL else text)
        if request.stream:
            events = [sse_event(chunk) for _, chunk in stream_chunks(request, answer)]
            if fault == "cut":
                stats.cut += 1
                return CutResponse(events[:STREAM_CHUNKS_BEFORE_CUT], media_type="text/event-stream")
            return StreamingResponse([b"".join(events) + SSE_DONE], media_type="text/event-stream")
        if fault == "cut":
            stats.cut += 1
            body = orjson.dumps(response_body(request, answer))
            return CutResponse([body[: len(body) // 2]], media_type="application/json",
                                    headers={"content-length": str(len(body))})
        return json_response(response_body(request, answer))

    add_completion_routes(app, respond)

    @app.get("/v1/models")
    async def list_models() -> Response:
        return json_response({"object": "list", "data": [model_object("stub")]})

    @app.get("/_stats")
    async def get_stats() -> Response:
        return json_response({"requests": stats.requests, "failed": stats.failed, "cut": stats.cut})

    return app


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stub_upstream", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--delay-ms", type=float, default=5.0, help="delay before each answer (default %(default)s)")
    p.add_argument("--answer-tokens", type=int, default=20, help="answer length in tokens (default %(default)s)")
    p.add_argument("--fail-rate", type=_fraction, default=0.0, help="share of requests answered HTTP 500")
    p.add_argument("--cut-rate", type=_fraction, default=0.0, help="share of requests whose connection is cut mid-body")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    args = p.parse_args(argv)
    try:
        options = StubOptions(args.delay_ms / 1000, args.answer_tokens, args.fail_rate, args.cut_rate, args.seed)
    except ValueError as exc:
        p.error(str(exc))
    import uvicorn

    # uvicorn logs every cut ("ASGI callable returned without completing response.") as an
    # error: with cuts asked for, only critical lines are worth printing.
    uvicorn.run(create_stub_app(options), host=args.host, port=args.port, access_log=False,
                log_level="critical" if options.cut_rate else "warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
