"""Sending a request to upstream models: retries, fallback to the next-best model, cooldowns, streams.

A fault (connect error, timeout, 429, 5xx, a body that is not JSON, a stream cut before its
first byte) is retried once on the same model, then the next model in the routing order is
tried. Once a byte has reached the client nothing can be retried: a stream cut after that ends
with an OpenAI-style error event, never a hang.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import orjson

from app.errors import GatewayError, error_body
from app.runtime.metrics import Metrics
from models_registry.records import ModelRecord

log = logging.getLogger("uniroute.forwarding")

# What the gateway sends on to the upstream from the client's headers; the rest (the client's
# own Authorization above all) stays at the gateway.
_PASS_HEADERS = ("openai-organization", "openai-project", "user-agent")


class UpstreamFault(Exception):
    """A failed attempt worth retrying elsewhere; `reason` labels the metric."""

    def __init__(self, reason: str, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.status = status


@dataclass
class Health:
    """Consecutive failures per model; a model that keeps failing is cooled down for a while."""

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

    def failure(self, model: str) -> None:
        """Count a failed attempt; cool the model down when failures reach the threshold."""
        n = self._failures.get(model, 0) + 1
        self._failures[model] = n
        if n >= self.failures_to_cool and model not in self._cool_until:
            self._cool_until[model] = time.monotonic() + self.cooldown_s
            self._failures[model] = 0
            self.metrics.cooldowns.labels(model).inc()
            self.metrics.cooling.set(len(self._cool_until))
            log.warning("model %s cooled down for %.0f s after %d failures", model, self.cooldown_s, n)

    def success(self, model: str) -> None:
        """A good answer clears the model's failure count."""
        self._failures.pop(model, None)


@dataclass
class Answer:
    """A good upstream answer: a parsed body, or a stream whose first chunk has arrived."""

    record: ModelRecord
    status: int
    upstream_seconds: float
    body: bytes | None = None
    json: dict | None = None
    stream: AsyncIterator[bytes] | None = None
    attempts: int = 1


def upstream_url(record: ModelRecord, path: str) -> str:
    """`base_url` is the OpenAI-style base, e.g. `http://host:8000/v1`; `path` is `/chat/completions`."""
    return record.base_url.rstrip("/") + path


def upstream_headers(record: ModelRecord, client_headers: dict[str, str]) -> dict[str, str]:
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


class Forwarder:
    """Sends requests to upstream models over one shared, pooled httpx client."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        metrics: Metrics,
        health: Health,
        retries: int,
        deadline_s: float,
    ) -> None:
        self.client = client
        self.metrics = metrics
        self.health = health
        self.retries = retries
        self.deadline_s = deadline_s

    async def send(
        self,
        path: str,
        body: dict,
        targets: list[ModelRecord],
        client_headers: dict[str, str],
        stream: bool,
    ) -> Answer:
        """The first good answer from `targets`, tried in order, each retried `retries` times.

        Raises GatewayError `upstream` (or `upstream_timeout` when the last fault was a timeout) when all fail, or when the
        configured deadline passes first.
        """
        last: UpstreamFault | None = None
        attempts = 0
        try:
            async with asyncio.timeout(self.deadline_s):
                for record in targets:
                    payload = orjson.dumps({**body, "model": record.upstream_model})
                    headers = upstream_headers(record, client_headers)
                    url = upstream_url(record, path)
                    for _ in range(1 + self.retries):
                        attempts += 1
                        try:
                            answer = await self._attempt(record, url, payload, headers, stream)
                        except UpstreamFault as fault:
                            last = fault
                            self.metrics.upstream_failures.labels(record.name, fault.reason).inc()
                            log.info("upstream %s failed (%s): %s", record.name, fault.reason, fault)
                            self.health.failure(record.name)
                            continue
                        self.health.success(record.name)
                        answer.attempts = attempts
                        return answer
        except TimeoutError:
            raise GatewayError(
                "upstream_timeout", f"no upstream answered within the gateway's deadline of {self.deadline_s:g} s",
                code="upstream_deadline") from None
        kind = "upstream_timeout" if last is not None and last.reason == "timeout" else "upstream"
        detail = f"{last.reason}: {last}" if last else "no upstream to try"
        raise GatewayError(kind, f"all upstream attempts failed ({attempts}); last: {detail}",
                           code="upstream_failed")

    async def _attempt(
        self, record: ModelRecord, url: str, payload: bytes, headers: dict[str, str], stream: bool
    ) -> Answer:
        start = time.perf_counter()
        request = self.client.build_request("POST", url, content=payload, headers=headers)
        try:
            response = await self.client.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            raise UpstreamFault("timeout", f"{type(exc).__name__} calling {record.name}") from exc
        except httpx.TransportError as exc:
            raise UpstreamFault("connect", f"{type(exc).__name__}: {exc}") from exc
        elapsed = time.perf_counter() - start
        self.metrics.upstream_seconds.labels(record.name).observe(elapsed)
        if response.status_code == 429 or response.status_code >= 500:
            await response.aclose()
            kind = "status_429" if response.status_code == 429 else "status_5xx"
            raise UpstreamFault(kind, f"HTTP {response.status_code} from {record.name}",
                                response.status_code)
        if not stream:
            try:
                parsed = orjson.loads(response.content)
            except orjson.JSONDecodeError as exc:
                raise UpstreamFault("invalid_json", f"{record.name} sent a body that is not JSON") from exc
            return Answer(record, response.status_code, elapsed, body=response.content, json=parsed)
        if response.status_code >= 400:
            # A client error (bad parameters): the client must see it as the upstream said it.
            content = await response.aread()
            await response.aclose()
            try:
                parsed = orjson.loads(content)
            except orjson.JSONDecodeError:
                parsed = error_body(content.decode(errors="replace")[:500], "upstream_error")
            return Answer(record, response.status_code, elapsed, body=orjson.dumps(parsed), json=parsed)
        chunks = response.aiter_bytes()
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            await response.aclose()
            raise UpstreamFault("stream_cut", f"{record.name} closed the stream before any data") from None
        except httpx.TimeoutException as exc:
            await response.aclose()
            raise UpstreamFault("timeout", f"{record.name} sent no stream data in time") from exc
        except httpx.TransportError as exc:
            await response.aclose()
            raise UpstreamFault("stream_cut", f"{record.name} cut the stream: {exc}") from exc
        return Answer(record, response.status_code, elapsed,
                      stream=self._relay(record, first, chunks, response))

    async def _relay(
        self, record: ModelRecord, first: bytes, chunks: AsyncIterator[bytes], response: httpx.Response
    ) -> AsyncIterator[bytes]:
        """Pass the upstream's SSE bytes through untouched; end a cut stream with an error event."""
        tail = first[-64:]
        try:
            yield first
            async for chunk in chunks:
                tail = (tail + chunk)[-64:]
                yield chunk
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            self.metrics.upstream_failures.labels(record.name, "stream_cut").inc()
            self.health.failure(record.name)
            log.warning("upstream %s cut its stream: %s", record.name, type(exc).__name__)
            yield stream_error_event(f"the upstream model {record.name} cut the stream mid-way")
            return
        finally:
            await response.aclose()
        if b"[DONE]" not in tail:
            self.metrics.upstream_failures.labels(record.name, "stream_cut").inc()
            self.health.failure(record.name)
            yield stream_error_event(f"the upstream model {record.name} ended the stream early")


def stream_error_event(message: str) -> bytes:
    """An SSE event carrying an OpenAI-style error; the openai SDK raises it as an APIError."""
    return b"data: " + orjson.dumps(error_body(message, "upstream_error", code="stream_cut")) + b"\n\n"
