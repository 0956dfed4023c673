"""A fault-injecting upstream in OpenAI's wire format, for the gateway's tests.

One ASGI app (`FaultUpstream().app`, serve it with `tests.support.servers.serve`) answers
`POST /v1/chat/completions` and `POST /v1/completions`, streamed or not, exactly as the replay
upstream does (same wire builders). A healthy answer is the text "answer from <model>", where
<model> is the model name exactly as requested.

Choosing a fault — by the requested model name, `<name>:<directive>[,<directive>...]`:

    delay=S         wait S seconds before the first byte (status line and headers included)
    status=C        answer HTTP C (e.g. 429, 500, 502, 503) with an OpenAI error body
    fail_first=N    only the first N requests for this model name fail (HTTP `status`,
                    503 by default); later ones are healthy
    cut=N           streamed: send the first N chunks, then drop the TCP connection (no final
                    chunk, no [DONE], no end of the chunked body); cut=0 drops it right after
                    the headers. Non-streamed: send half the body, then drop the connection
    bad_json        HTTP 200 whose body is not JSON (streamed: an SSE event whose data is not
                    JSON, then [DONE])

e.g. "m1:status=429", "m2:delay=0.5", "m3:fail_first=2,status=500", "m4:delay=0.2,cut=3".
`delay` applies to every request; a failing status wins over bad_json and cut. A malformed
directive is answered with HTTP 400 saying what is wrong.

Or from Python, for a plain model name: `upstream.set_fault("m1", Fault(status=503))`, and
`set_fault("m1", None)` to make it healthy again mid-test. A fault set so overrides any spec
in the name, and its `fail_first` counts the requests from the moment it was set.

Connection refused: point a model at `http://127.0.0.1:{closed_port()}/v1`.

Counting: `upstream.calls[model]` counts the completion requests per requested model name
(only requests whose body parsed); `GET /_stats` returns `{"calls": {model: n}}` for code in
another process; `upstream.received` keeps each request's path, model, JSON body and headers.
`upstream.reset()` clears counts, log and faults.

A cut is an app returning with its response unfinished, which makes the ASGI server close the
socket (uvicorn logs "ASGI callable returned without completing response." — expected).
"""
from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from app.api.errors import APIError, install_error_handlers
from app.demo.replay_upstream import (
    SSE_DONE,
    Answer,
    CompletionRequest,
    CutResponse,
    add_completion_routes,
    json_response,
    model_object,
    response_body,
    sse_event,
    stream_chunks,
)

DEFAULT_FAIL_STATUS = 503

# OpenAI's error type, code and message for the statuses tests inject.
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests (injected fault)."),
    500: ("server_error", None, "The server had an error while processing your request (injected fault)."),
    502: ("server_error", None, "Bad gateway (injected fault)."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later (injected fault)."),
}


@dataclass(frozen=True)
class Fault:
    """How the upstream misbehaves for one model; the default is healthy."""

    delay_s: float = 0.0
    status: int | None = None
    fail_first: int | None = None
    cut_after: int | None = None
    bad_json: bool = False

    def failing_status(self, nth: int) -> int | None:
        """The error status for the `nth` request (1-based) under this fault, or None to answer."""
        if self.fail_first is not None:
            return (self.status or DEFAULT_FAIL_STATUS) if nth <= self.fail_first else None
        return self.status


def parse_fault(spec: str) -> Fault:
    """The Fault a directive list such as "delay=0.5,status=503" describes; ValueError if malformed."""
    fields: dict[str, object] = {}
    for directive in filter(None, (d.strip() for d in spec.split(","))):
        key, _, value = directive.partition("=")
        try:
            if key == "bad_json" and not value:
                fields["bad_json"] = True
            elif key == "delay":
                fields["delay_s"] = float(value)
            elif key in ("status", "fail_first", "cut"):
                fields["cut_after" if key == "cut" else key] = int(value)
            else:
                raise ValueError("unknown directive")
        except ValueError:
            raise ValueError(f"bad fault directive {directive!r}; use delay=S, status=C, "
                             "fail_first=N, cut=N or bad_json") from None
    fault = Fault(**fields)  # type: ignore[arg-type]
    if fault.status is not None and not 400 <= fault.status <= 599:
        raise ValueError(f"fault status must be 400-599, got {fault.status}")
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
    """One completion request as the upstream received it."""

    path: str
    model: str
    body: dict
    headers: dict[str, str]


class FaultUpstream:
    """The fault-injecting upstream: `app` to serve, `calls` / `received` to assert on."""

    def __init__(self, models: Iterable[str] = ()) -> None:
        """`models` are listed by `GET /v1/models` (every name is answered, listed or not)."""
        self.models = list(models)
        self.calls: Counter[str] = Counter()
        self.received: list[ReceivedRequest] = []
        self._faults: dict[str, tuple[Fault, int]] = {}
        self.app = self._build_app()

    def set_fault(self, model: str, fault: Fault | None) -> None:
        """Make requests for `model` misbehave as `fault` from now on (None: healthy again)."""
        if fault is None:
            self._faults.pop(model, None)
        else:
            self._faults[model] = (fault, self.calls[model])

    def reset(self) -> None:
        """Forget counts, received requests and faults set from Python."""
        self.calls.clear()
        self.received.clear()
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

    async def _respond(self, request: CompletionRequest, http: Request) -> Response:
        self.calls[request.model] += 1
        self.received.append(ReceivedRequest(http.url.path, request.model, orjson.loads(await http.body()),
                                             dict(http.headers)))
        fault, nth = self._fault_for(request.model)
        await asyncio.sleep(fault.delay_s)
        status = fault.failing_status(nth)
        if status is not None:
            kind, code, message = _ERRORS.get(
                status, ("server_error" if status >= 500 else "invalid_request_error", None,
                         f"Injected fault: HTTP {status}."))
            raise APIError(status, message, type=kind, code=code)
        answer = Answer.for_request(request, f"answer from {request.model}")
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
        events = [sse_event(chunk) for _, chunk in stream_chunks(request, answer)]
        if fault.cut_after is None:
            return StreamingResponse([*events, SSE_DONE], media_type="text/event-stream")
        return CutResponse(events[: fault.cut_after], media_type="text/event-stream")

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="uniroute fault-injecting test upstream", docs_url=None, redoc_url=None,
                      openapi_url=None)
        install_error_handlers(app)
        add_completion_routes(app, self._respond)

        @app.get("/v1/models")
        async def list_models() -> Response:
            return json_response({"object": "list", "data": [model_object(m) for m in self.models]})

        @app.get("/_stats")
        async def stats() -> Response:
            return json_response({"calls": dict(self.calls)})

        return app
