"""Sending a request to upstream models: retries, fallback to the next-best model, cooldowns, streams.

What a failed attempt leads to (retry, fallback, cooldown, disabling the model) is decided by
its fault class (app/upstream/faults.py). Once a byte has reached the client nothing can be
retried: a stream cut after that ends with an OpenAI-style error event, never a hang, and
before any `[DONE]` (app/upstream/streams.py). Until then a stream fails as a whole answer does:
one opening with an error event instead of an answer goes to the next model, and with none left
the client gets what that error in a whole answer would give it (a prompt too long for the
context, or a feature the model cannot take: the upstream's refusal, as a 400).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.errors import GatewayError, error_body
from app.runtime.metrics import Metrics
from app.upstream.faults import (
    READ_BODY,
    REFUSALS,
    FaultClass,
    UpstreamFault,
    describe,
    disables,
    elsewhere,
    error_answer,
    error_message,
    exceeds_context,
    names_model,
    refuses_stream_options,
    retry_after,
    status_class,
    transport_class,
)
from app.upstream.http1 import Reply, UpstreamClient, UpstreamError
from app.upstream.parameters import RENAMED, adaptable, for_upstream, refused_parameter
from app.upstream.streams import (
    EventSplitter,
    StreamWatch,
    asks_usage,
    first_event,
    opening_error,
    opens_event_stream,
)
from models_registry.records import ModelRecord

log = logging.getLogger("uniroute.forwarding")

# Marks the gateway's own calls by purpose ("profiling"), so an upstream can tell them from routed
# traffic: the demo's replay upstream answers a profiling call it has no recorded answer for
# with an error (unanswered), routed traffic with a marked stand-in. A client's own value passes
# too: it names no account and changes nothing but such an upstream's answer.
PURPOSE_HEADER = "x-uniroute-purpose"
# What the gateway sends on to the upstream from the client's headers. The rest stays at the
# gateway: the client's Authorization above all, and its OpenAI-Organization / OpenAI-Project,
# which name the client's own account, not the one of the gateway's key.
_PASS_HEADERS = ("user-agent", PURPOSE_HEADER)

# The status the client gets for a prompt too long for the model's context (or a feature the
# model cannot take) that the upstream told otherwise than by a 4xx (a 200 body, a stream's
# opening event, a 5xx): OpenAI's for it.
REFUSED = 400

# The longest an upstream's Retry-After keeps its model out of routing. A provider out of its
# daily quota may ask for hours, but a bogus value (a date years ahead) would keep the model out
# until the worker restarts; after this the model is tried again, and a new Retry-After cools it
# again.
RETRY_AFTER_COOL_MAX_S = 3600.0

# How long the relay waits, after a stream is over (or its answer whole), for `[DONE]` and its
# body's end (`_drain`): they most often come within a millisecond; a server holding the response
# open is not waited for longer.
DRAIN_S = 1.0

# Called with a model and the fault that should take it out of routing.
Disable = Callable[[ModelRecord, UpstreamFault], Awaitable[None]]


@dataclass
class Health:
    """Consecutive failures per model; a model that keeps failing is cooled down for a while.
    Each worker process keeps its own (README: Workers)."""

    failures_to_cool: int
    cooldown_s: float
    metrics: Metrics
    _failures: dict[str, int] = field(default_factory=dict)
    _cool_until: dict[str, float] = field(default_factory=dict)

    def cooling(self) -> frozenset[str]:
        """Models not to route to now."""
        now = time.monotonic()
        expired = [m for m, t in self._cool_until.items() if t <= now]
        for m in expired:
            del self._cool_until[m]
        self.metrics.cooling.set(len(self._cool_until))
        return frozenset(self._cool_until)

    def failure(self, model: str, retry_after: float | None = None) -> None:
        """Count a failed attempt; cool the model down when failures reach the threshold, and at
        once for `retry_after` seconds (at most RETRY_AFTER_COOL_MAX_S) when its upstream asked
        not to be called for that long."""
        n = self._failures.get(model, 0) + 1
        self._failures[model] = n
        if n >= self.failures_to_cool and model not in self._cool_until:
            self._cool(model, self.cooldown_s, f"after {n} failures")
        if retry_after:
            self._cool(model, min(retry_after, RETRY_AFTER_COOL_MAX_S), "as its upstream asked (Retry-After)")

    def _cool(self, model: str, seconds: float, why: str) -> None:
        """Keep `model` out of routing for `seconds` from now, unless it is out longer already."""
        now = time.monotonic()
        was = self._cool_until.get(model, 0.0)
        if now + seconds <= was:
            return
        self._cool_until[model] = now + seconds
        self._failures[model] = 0
        self.metrics.cooling.set(len(self._cool_until))
        # Under several workers the gauge is this worker's: bring it down when the cooldown
        # ends even if no request comes here to look.
        with contextlib.suppress(RuntimeError):  # no event loop: the next look does it
            asyncio.get_running_loop().call_later(seconds, self.cooling)
        if was <= now:  # a new cooldown, not a running one made longer
            self.metrics.cooldowns.labels(model).inc()
            log.warning("model %s cooled down for %.0f s %s", model, seconds, why)

    def success(self, model: str) -> None:
        """A good answer clears the model's failure count."""
        self._failures.pop(model, None)


@dataclass
class UpstreamReply:
    """An upstream answer: a parsed body (a success, or a client error to relay as it is), or a
    stream whose first chunk has arrived (`watch` tells, once it is read, how it ended).
    `upstream_seconds` is the time spent in upstream attempts, each from sending the request to
    the whole body (or a stream's first chunk), and in waiting out their Retry-After."""

    record: ModelRecord
    status: int
    upstream_seconds: float
    body: bytes | None = None
    json: dict | None = None
    stream: AsyncIterator[bytes] | None = None
    watch: StreamWatch | None = None
    request_id: str | None = None
    attempts: int = 1


def upstream_url(record: ModelRecord, path: str) -> str:
    """`base_url` is the OpenAI-style base, e.g. `http://host:8000/v1`; `path` is `/chat/completions`,
    or a stored response's path with its own query. A base_url's query (Azure OpenAI's
    `?api-version=...`, a proxy's key) stays a query, ahead of the path's own."""
    base, sep, query = record.base_url.partition("?")
    if not sep:
        return base.rstrip("/") + path
    path, _, own = path.partition("?")
    return f"{base.rstrip('/')}{path}?{query}" + (f"&{own}" if own else "")


def upstream_headers(record: ModelRecord, client_headers: Mapping[str, str]) -> dict[str, str]:
    """Headers for the upstream: its own key (from the environment), never the client's."""
    headers = {k: v for k, v in client_headers.items() if k in _PASS_HEADERS}
    headers["content-type"] = "application/json"
    if record.api_key_env:
        key = os.environ.get(record.api_key_env)
        if key:
            headers["authorization"] = f"Bearer {key}"
        else:
            log.warning("model %s: environment variable %s is not set", record.name, record.api_key_env)
    return headers


@dataclass
class Forwarder:
    """Sends requests to upstream models over one shared, pooled client (app/upstream/http1.py).
    `disable` takes a model out of routing after a fault whose class says so; `retry_after_max_s`
    is the longest Retry-After waited out before the same model is asked again."""

    client: UpstreamClient
    metrics: Metrics
    health: Health
    retries: int
    deadline_s: float
    retry_after_max_s: float
    disable: Disable | None = None
    # Per model (as registered: a new upstream model learns afresh) and path: the parameters its
    # upstream refused, renamed or left out of every later request (app/upstream/parameters.py).
    refused: dict[tuple[str, str, str, str], frozenset[str]] = field(default_factory=dict)

    async def send(
        self,
        path: str,
        body: dict | None,
        targets: list[ModelRecord],
        client_headers: Mapping[str, str],
        stream: bool,
        strip_usage: bool = False,
        options_added: bool = False,
        method: str = "POST",
    ) -> UpstreamReply:
        """The first good answer from `targets`, tried in order, each retried up to `retries` times
        when its fault class allows it (after the upstream's Retry-After, when it is short enough
        to wait out; after a longer one the next target is tried at once). A client error (4xx
        other than 401/403/404/408/429) is answered as it is, untried elsewhere, but for a prompt
        longer than the model's context, a feature of the request the model cannot take (images,
        tools) or a body larger than the upstream takes (413): the next target is tried, and the
        last one's refusal answered as it is (one told otherwise than by a 4xx, in a 5xx, a 200
        body or a stream's opening event, as a 400 with that error body), streamed or not. `strip_usage`: streams' usage chunks are read, not passed on (the gateway asked for
        them). `options_added`: the gateway added `stream_options` to ask for them, and a target
        refusing it is asked again without; a refusal of the client's own `stream_options` is
        answered as any client error. `body` None: the request (`method`) has none, and so names
        no model.

        Raises GatewayError when all fail (`all_failed`: by the last fault, 502, 504 after a
        timeout, or the upstream's 429, or its 503 with a Retry-After, passed on with that
        Retry-After), or `upstream_timeout` when the configured deadline passes first; its
        message ends with the last upstream's own when that one put an error in place of its answer.
        """
        last: UpstreamFault | None = None
        attempts = 0
        waited = 0.0
        usage_asked = stream and asks_usage(body)
        back_at: dict[str, float] = {}  # per model that asked to wait (its last ask): when it is back, monotonic
        try:
            async with asyncio.timeout(self.deadline_s) as deadline:
                for position, record in enumerate(targets):
                    headers = upstream_headers(record, client_headers)
                    url = upstream_url(record, path)
                    attempt = 0
                    while True:
                        attempts += 1
                        refused = self.refused.get(_refusal_key(record, path), frozenset())
                        payload = self._payload(body, record, refused, path)
                        start = time.perf_counter()
                        try:
                            answer = await self._attempt(record, path, url, payload, headers, stream, strip_usage,
                                                         usage_asked, method)
                        except UpstreamFault as fault:
                            waited += time.perf_counter() - start
                            last = fault
                            if fault.retry_after is not None:
                                back_at[record.name] = time.monotonic() + fault.retry_after
                            await self._failed(record, path, fault)
                            if fault.reply is not None and position == len(targets) - 1:
                                answer = fault.reply  # no model left: the upstream's own refusal
                                answer.upstream_seconds, answer.attempts = waited, attempts
                                return answer
                            if not fault.policy.retry or attempt == self.retries:
                                break
                            pause = await self._wait_to_retry(fault, deadline.when())
                            if pause is None:
                                break
                            waited += pause  # spent as the upstream asked: none of the gateway's overhead
                            attempt += 1
                            continue
                        if answer.status >= 400 and body is not None and self._learn_refusal(record, path, answer.json, refused):
                            # It did no work: asked again at once, without what it refused (not a retry).
                            waited += time.perf_counter() - start
                            continue
                        answer.upstream_seconds = waited + time.perf_counter() - start
                        answer.attempts = attempts
                        if options_added and answer.status >= 400 and refuses_stream_options(answer.body):
                            # The upstream refuses the `stream_options` the gateway added, not the client's
                            # request: it goes again without it, from this model on (its stream then
                            # counts at its expected cost). It did no work, so nothing is billed twice.
                            assert body is not None  # a stream's usage was asked for in its body
                            again = await self.send(path, {k: v for k, v in body.items() if k != "stream_options"},
                                                    targets[position:], client_headers, stream, method=method)
                            again.upstream_seconds += answer.upstream_seconds
                            again.attempts += attempts
                            return again
                        if answer.status < 400:
                            self.health.success(record.name)
                        return answer
        except TimeoutError:
            raise GatewayError(
                "upstream_timeout", f"no upstream answered within the gateway's deadline of {self.deadline_s:g} s",
                code="upstream_deadline", final=True) from None
        wait = max(0.0, min(back_at.values()) - time.monotonic()) if back_at else None
        raise all_failed(last, attempts, wait) from last  # a profiling job reads its class

    async def ask(self, method: str, path: str, record: ModelRecord, client_headers: Mapping[str, str]
                  ) -> UpstreamReply:
        """`method` (GET, DELETE, or a POST without a body) on something the upstream of `record`
        keeps, e.g. a stored response (`path`: `/responses/{id}`, its query string included). Its
        answer comes back whatever its status, the upstream's 404 included (the thing is gone, the
        model is not: app/upstream/faults.py); transport faults and 5xx are retried as for any
        request, then raise GatewayError."""
        return await self.send(path, None, [record], client_headers, stream=False, method=method)

    @staticmethod
    def _payload(body: dict | None, record: ModelRecord, refused: frozenset[str], path: str) -> bytes:
        """The request body `record`'s upstream gets on `path`: its model name, and its parameters
        as that model takes them, without those it `refused` (app/upstream/parameters.py)."""
        if body is None:
            return b""
        return orjson.dumps({**for_upstream(body, refused, path), "model": record.upstream_model})

    def _learn_refusal(self, record: ModelRecord, path: str, error: Any, sent_without: frozenset[str]) -> bool:
        """Whether `error` refuses a parameter this forwarder can rename or leave out, which the
        request sent still had (`sent_without` the others); from now on it is renamed or left out of
        every request to `record` on `path` (requests in flight meanwhile learn it too)."""
        param = refused_parameter(error)
        if param is None or not adaptable(param, path) or param in sent_without:
            return False
        key = _refusal_key(record, path)
        known = self.refused.get(key, frozenset())
        if param not in known:
            self.refused[key] = known | {param}
            log.warning("the upstream of %s refuses %r on %s: it is %s in every request to it from now on",
                        record.name, param, path, f"sent as {RENAMED[param]!r}" if param in RENAMED else "left out")
        return True

    def _describe(self, kind: FaultClass, record: ModelRecord, status: int, path: str) -> str:
        """`describe` for a status fault of `record`, saying the model is taken out of routing only
        where this forwarder does that (client traffic's; the profiling forwarder disables nothing)."""
        return describe(kind, record.name, status, path, record.base_url, disabling=self.disable is not None)

    def _status_fault(self, kind: FaultClass, record: ModelRecord, response: Reply, path: str) -> UpstreamFault:
        """The fault of a status whose answer the client never sees: the gateway's words for it
        (`_describe`), and how long the upstream asked not to be called (its Retry-After)."""
        return UpstreamFault(kind, self._describe(kind, record, response.status, path), response.status,
                             retry_after=retry_after(response.headers, time.time()))

    async def _wait_to_retry(self, fault: UpstreamFault, deadline: float | None) -> float | None:
        """Wait out the Retry-After of a fault before its model is asked again; the seconds waited.
        None, at once, when it is longer than `retry_after_max_s` or would end past the request's
        `deadline` (the event loop's time): better the next model now than this one late, or never."""
        wait = fault.retry_after
        if not wait:
            return 0.0
        if wait > self.retry_after_max_s or (deadline is not None
                                             and asyncio.get_running_loop().time() + wait >= deadline):
            return None
        await asyncio.sleep(wait)
        return wait

    async def _failed(self, record: ModelRecord, path: str, fault: UpstreamFault) -> None:
        """Count a failed attempt, and cool down or disable its model as its class says."""
        self.metrics.upstream_failures.labels(record.name, fault.kind).inc()
        log.info("upstream %s failed (%s): %s", record.name, fault.kind, fault)
        if fault.policy.cooldown:
            self.health.failure(record.name, fault.retry_after)
        if disables(fault.kind, path) and self.disable is not None:
            await self.disable(record, fault)

    async def _attempt(
        self, record: ModelRecord, path: str, url: str, payload: bytes, headers: dict[str, str], stream: bool,
        strip_usage: bool, usage_asked: bool, method: str,
    ) -> UpstreamReply:
        start = time.perf_counter()
        kind: FaultClass | None = None
        try:
            response = await self.client.request(method, url, payload, headers)
            if 300 <= response.status < 400:
                response.close()
                raise redirected(record, response)
            kind = status_class(response.status, path)
            if kind is not None and kind not in READ_BODY:
                response.close()  # its body is the provider's business, never the client's
                raise self._status_fault(kind, record, response, path)
            # A whole answer is read here, so that a body cut mid-way is this attempt's fault.
            content = await response.read() if kind is not None or not stream else b""
        except (UpstreamError, TimeoutError) as exc:
            if kind == "server":
                # The 5xx refused the work before its body broke (the server or a proxy dropping the
                # connection): it is still the 5xx, retried after its Retry-After, not a transport
                # fault of a request that may have been worked on.
                raise self._status_fault(kind, record, response, path) from exc
            raise UpstreamFault(transport_class(exc), f"{type(exc).__name__} calling {record.name}") from exc
        if kind == "not_found":
            # Read to tell whether the model is unknown or the URL: the operator must fix one or the other.
            kind = "not_found" if names_model(content) else "no_endpoint"
            raise UpstreamFault(kind, self._describe(kind, record, response.status, path), response.status)
        elapsed = time.perf_counter() - start
        request_id = response.headers.get("x-request-id")
        if kind == "server":
            # Read, never relayed: llama.cpp's server refuses some prompts longer than its context
            # with HTTP 500 "Context size has been exceeded." (issue #19774), and images or tools it
            # was not started for too, which asking this model again cannot mend and which another
            # model may not share.
            error = error_json(content)
            if refusal := elsewhere(error):
                raise refused(refusal, record, error, f"HTTP {response.status}", elapsed, request_id)
            raise self._status_fault(kind, record, response, path)
        self.metrics.child(self.metrics.upstream_seconds, record.name).observe(elapsed)
        if kind is not None:
            # Bad parameters, or a refusal the next model may not share: the client sees it as the
            # upstream said it (the latter when no model is left).
            parsed = error_json(content)
            reply = UpstreamReply(record, response.status, elapsed, body=orjson.dumps(parsed), json=parsed,
                                  request_id=request_id)
            if kind == "client_error":
                kind = elsewhere(parsed, path) or kind
            if kind != "client_error":
                raise UpstreamFault(kind, self._describe(kind, record, response.status, path), response.status,
                                    reply)
            return reply
        if not stream:
            try:
                parsed = orjson.loads(content)
            except orjson.JSONDecodeError as exc:
                raise UpstreamFault("bad_body", f"{record.name} sent a body that is not JSON") from exc
            if error_answer(parsed):
                # Relayed, it would reach the client as a success with no answer in it.
                raise error_instead(record, parsed, "bad_body", f"answered HTTP {response.status} with an error",
                                    elapsed, request_id)
            return UpstreamReply(record, response.status, elapsed, body=content, json=parsed,
                          request_id=request_id)
        chunks = response.iter_chunks()
        try:
            first, error = await self._opening(record, chunks)
            if error is not None:
                raise error_instead(record, error, "cut", "opened its stream with an error", elapsed, request_id)
        except UpstreamFault:
            response.close()
            raise
        watch = StreamWatch(responses_api=path == "/responses", strip_usage=strip_usage, usage_asked=usage_asked)
        return UpstreamReply(record, response.status, elapsed, stream=self._relay(record, first, chunks, response, watch),
                      watch=watch, request_id=request_id)

    async def _opening(self, record: ModelRecord, chunks: AsyncIterator[bytes]) -> tuple[bytes, dict | None]:
        """A stream's bytes up to its first event with data (or llama.cpp's `error` field), and the
        error body that event carries instead of an answer, if it does. Comments and blank lines
        before it (a provider's "processing" pings) are held back with it: until it comes nothing
        has reached the client, so a stream that fails first, or opens with an error event instead
        of an answer, still goes to the next model. Raises UpstreamFault."""
        try:
            opening = await anext(chunks)
            if not opens_event_stream(opening):
                raise UpstreamFault("bad_body", f"{record.name} answered a stream request with a body that is not "
                                    "server-sent events")
            while (event := first_event(opening)) is None:
                opening += await anext(chunks)
        except StopAsyncIteration:
            raise UpstreamFault("cut", f"{record.name} closed the stream before any data") from None
        except TimeoutError as exc:
            raise UpstreamFault("timeout", f"{record.name} sent no stream data in time") from exc
        except UpstreamError as exc:
            raise UpstreamFault("cut", f"{record.name} cut the stream: {type(exc).__name__}") from exc
        return opening, opening_error(event)

    async def _relay(
        self, record: ModelRecord, first: bytes, chunks: AsyncIterator[bytes], response: Reply,
        watch: StreamWatch,
    ) -> AsyncIterator[bytes]:
        """Pass the upstream's events on as they come; end an incomplete stream with an error event
        placed before the upstream's `[DONE]`, unless the upstream sent its own error (an error
        event, or llama.cpp's `error` field, rewritten as one: app/upstream/streams.py). The events
        that arrived together go out together: each piece sent is a write to the client's socket,
        the costliest step of a stream's relay. Reading stops once the stream is over (`[DONE]`,
        or a Responses API stream's last event), as the openai SDK's does: a server or proxy may
        keep the response open after it, silent until `read_s` runs out, or sending keep-alives.
        So does reading once the answer is whole (every choice finished, the usage asked for
        come), but for `[DONE]`, waited for DRAIN_S at most: an upstream silent (or gone) after
        its answer ends it there, complete."""
        events = EventSplitter()
        cut: str | None = None
        try:
            try:
                if out := b"".join(map(watch.see, events.feed(first))):
                    yield out
                if not watch.at_end:
                    async for chunk in chunks:
                        if out := b"".join(map(watch.see, events.feed(chunk))):
                            yield out
                        # After a whole answer, what is left of the stream is read on here if it has
                        # all arrived (no wait), else drained, DRAIN_S at most.
                        if watch.at_end and (watch.over or not response.complete):
                            break
                if (not response.complete or not watch.over and watch.at_end) and (
                        out := await _drain(chunks, events, watch)):
                    yield out
            except (UpstreamError, TimeoutError) as exc:
                cut = f"the upstream model {record.name} cut the stream mid-way"
                log.warning("upstream %s cut its stream: %s", record.name, type(exc).__name__)
            finally:
                # A stream read to its end has given its connection back to the pool already; one
                # left early (the client hung up, or a body that did not end after `[DONE]`) must
                # not be reused half-read.
                response.close()
            rest = events.rest()
            # A last event without its blank line: end it here.
            if cut is None and rest.strip() and (out := watch.see(rest + b"\n\n")):
                yield out
            if cut is None and not watch.complete:
                cut = f"the upstream model {record.name} ended the stream before the answer was complete"
            watch.cut = cut is not None
            watch.ended = True
            if cut is not None:
                self._stream_failed(record, watch)
                if watch.upstream_error is None:  # the upstream's own error event already tells the client
                    yield stream_error_event(cut)
            if watch.done is not None:
                yield watch.done
        finally:
            if not watch.ended and watch.upstream_error is not None:
                # The client left at the upstream's own error event, as the openai SDK does (it
                # raises it and hangs up): the stream failed all the same.
                self._stream_failed(record, watch)

    def _stream_failed(self, record: ModelRecord, watch: StreamWatch) -> None:
        """Count a stream that did not deliver its answer against its model. One that ran out of
        context mid-way (llama.cpp: "Context size has been exceeded.") failed for this request's
        length, not for the model's health: counted toward cooldown, a few long requests would
        take a working model from everyone."""
        too_long = exceeds_context(watch.upstream_error)
        self.metrics.upstream_failures.labels(record.name, "context_length" if too_long else "cut").inc()
        if not too_long:
            self.health.failure(record.name)


async def _drain(chunks: AsyncIterator[bytes], events: EventSplitter, watch: StreamWatch) -> bytes:
    """Read what is left of a stream that is over, or whose answer is whole, for up to DRAIN_S;
    what `watch` passes on of the events before the stream is over (`[DONE]` is held back by it).
    The body's end most often comes right behind `[DONE]`, as a write of its own (uvicorn's, so
    vLLM's), and a connection read to its end goes back to the pool, where one left half read is
    closed and the next request pays a new connection (a TLS handshake, to a remote upstream). It
    is read before the held-back `[DONE]` goes out: the openai SDK hangs up at `[DONE]`, and the
    relay with it. Only an upstream holding the response open makes the client wait, DRAIN_S at
    most; one breaking it then, or sending no `[DONE]`, has given the whole answer all the same."""
    out: list[bytes] = []
    with contextlib.suppress(UpstreamError, TimeoutError):
        async with asyncio.timeout(DRAIN_S):
            async for chunk in chunks:
                if not watch.over:
                    out.extend(map(watch.see, events.feed(chunk)))
    return b"".join(out)


def _refusal_key(record: ModelRecord, path: str) -> tuple[str, str, str, str]:
    return record.name, record.base_url, record.upstream_model, path


def all_failed(last: UpstreamFault | None, attempts: int, wait: float | None = None) -> GatewayError:
    """The error when every attempt failed, told by the last fault. An upstream's rate limit (429)
    is the client's 429 (`upstream_rate_limited`), and a 503 saying when to come back the client's
    503 (`upstream_unavailable`), each with Retry-After `wait` (at most
    RETRY_AFTER_COOL_MAX_S, as a model's cooldown): without it the openai SDK asks again after its
    own short backoff, into the same refusal, and a client cannot tell "come back in 30 s" from a
    broken upstream. `wait` is what is left of the soonest Retry-After among the attempts, not the
    last one's: the model back first is the one the client's next request can be routed to. Any
    other: 502, or 504 after a timeout, `final`: the gateway's retries and fallbacks are the
    retry layer, and the openai SDKs, which ask a 5xx again twice by default, would send the
    whole chain of attempts three times over to upstreams that are failing."""
    detail = f"all upstream attempts failed ({attempts}); last: " + (f"{last.kind}: {last}" if last else
                                                                     "no upstream to try")
    wait = None if wait is None else min(wait, RETRY_AFTER_COOL_MAX_S)
    if last is not None and last.kind == "rate_limit":
        return GatewayError("rate_limited", f"the upstream is rate limited: {detail}", code="upstream_rate_limited",
                            retry_after=wait)
    if last is not None and last.kind == "server" and last.status == 503 and last.retry_after is not None:
        return GatewayError("unavailable", f"the upstream is unavailable for now: {detail}",
                            code="upstream_unavailable", retry_after=wait)
    kind = "upstream_timeout" if last is not None and last.kind == "timeout" else "upstream"
    return GatewayError(kind, detail, code="upstream_failed", final=True)


def redirected(record: ModelRecord, response: Reply) -> UpstreamFault:
    """The fault of a redirect (an `http://` base_url whose server sends it to `https://`, say).
    The gateway follows none: a POST's body does not survive every redirect, and the base_url is
    the operator's to fix. Read as an answer, its empty or HTML body was told as "not JSON", or
    a stream "closed before any data", which hid the cause."""
    where = response.headers.get("location")
    target = f"a redirect to {where}" if where else "a redirect without a Location"
    return UpstreamFault("bad_body", f"{record.name} answered HTTP {response.status}, {target}, which the gateway does "
                                     "not follow: give the model the base_url it redirects to")


def error_json(content: bytes) -> Any:
    """An upstream's error body, parsed; one that is not JSON as the gateway's error body with its text."""
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return error_body(content.decode(errors="replace")[:500], "upstream_error")


def refused(kind: FaultClass, record: ModelRecord, error: Any, what: str, elapsed: float,
            request_id: str | None) -> UpstreamFault:
    """The fault of a refusal of the request for what the model is (`kind`: `context_length` for a
    prompt longer than its context, `unsupported` for a feature it cannot take; `error`, its error
    body) told otherwise than by a 4xx, `what` saying how: when no model is left, the client gets
    that error body as a 400, OpenAI's status for it, as a 4xx refusal would reach it (not as a
    5xx, which clients such as the openai SDK would send again)."""
    reply = UpstreamReply(record, REFUSED, elapsed, body=orjson.dumps(error), json=error, request_id=request_id)
    return UpstreamFault(kind, f"{REFUSALS[kind].format(model=record.name)} ({what})", REFUSED, reply)


def error_instead(record: ModelRecord, error: dict, kind: FaultClass, what: str, elapsed: float,
                  request_id: str | None) -> UpstreamFault:
    """The fault of an answer that is an error body (`error`) where an answer should be, `what`
    saying how. A prompt longer than the model's context is `context_length`, a feature it cannot
    take `unsupported` (`refused`); any other error is `kind`, its message in the description: the
    upstream meant it for the client, who sees it in the gateway's 502 when no model is left."""
    if refusal := elsewhere(error):
        return refused(refusal, record, error, what, elapsed, request_id)
    message = error_message(error)
    return UpstreamFault(kind, f"{record.name} {what}" + (f": {message}" if message else ""))


def stream_error_event(message: str, type: str = "upstream_error") -> bytes:
    """An SSE event carrying an OpenAI-style error, `stream_cut`: the stream ends before its
    answer is whole. The openai SDK raises it as an APIError."""
    return b"data: " + orjson.dumps(error_body(message, type, code="stream_cut")) + b"\n\n"
