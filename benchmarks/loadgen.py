"""An async load generator for OpenAI-format endpoints on this machine (loopback only).

`run_load(base_url, make_request, concurrency=C, max_requests=N, max_seconds=T)` keeps C
clients busy (a closed loop: each sends its next request when its last one has finished) until
N requests have been sent or T seconds have passed, whichever comes first, and returns every
request's `Outcome`: status, latency to the last byte, time to the response headers, for a
stream the time to its first event (`data:` line), and, for a request that did not succeed, a
label saying how it failed.

A request succeeds when it is answered 200 and, streamed, its stream ends with `[DONE]` and
carries no error event. Failure labels: `http_<status>:<error code or type>` (from the
OpenAI-style error body), `stream_error:<code>` (an error event inside a 200 stream),
`stream_incomplete` (a 200 stream whose body ended cleanly without `[DONE]`),
`transport:<exception>` (the connection failed, or was cut before the body was complete).
"""
from __future__ import annotations

import asyncio
import ipaddress
import itertools
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import numpy as np
import orjson

PERCENTILES = (50, 95, 99)
T = TypeVar("T")


@dataclass(frozen=True)
class RequestSpec:
    """One request: a path under the base URL (e.g. `/v1/chat/completions`), a JSON body, streamed or not."""

    path: str
    body: dict
    stream: bool = False


@dataclass(frozen=True)
class Outcome:
    """What became of one request. `status` is 0 when no response arrived (or, not streamed,
    when its body could not be read in full). `first_event_s` is a stream's time to its first
    `data:` line (a server may send its headers before it has anything to stream); None when
    not streamed or no event arrived."""

    status: int
    latency_s: float
    ttfb_s: float
    error: str | None = None
    first_event_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class LoadResult:
    """Every request's outcome, and the wall time the run took."""

    outcomes: list[Outcome] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def ok_latencies_s(self) -> np.ndarray:
        return np.array([o.latency_s for o in self.outcomes if o.ok], dtype=np.float64)

    @property
    def rps(self) -> float:
        """Successful requests per second of wall time."""
        return sum(o.ok for o in self.outcomes) / self.wall_s if self.wall_s > 0 else 0.0

    def percentiles_ms(self, qs: tuple[int, ...] = PERCENTILES) -> dict[str, float]:
        """Latency percentiles of the successful requests, in ms (NaN when none succeeded)."""
        lat = self.ok_latencies_s
        if lat.size == 0:
            return {f"p{q}": float("nan") for q in qs}
        return {f"p{q}": float(v) for q, v in zip(qs, np.percentile(lat * 1e3, qs), strict=True)}

    def errors(self) -> Counter[str]:
        """Failed requests by failure label."""
        return Counter(o.error for o in self.outcomes if o.error is not None)

    def summary(self) -> dict:
        """Counts, requests/s and latency percentiles, as plain JSON values."""
        return {"requests": len(self.outcomes), "ok": sum(o.ok for o in self.outcomes),
                "errors": dict(self.errors()), "wall_s": self.wall_s, "rps": self.rps,
                "latency_ms": self.percentiles_ms()}


def ensure_loopback(base_url: str) -> None:
    """Refuse any target but this machine: load is only ever sent to the loopback interface."""
    host = urlsplit(base_url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"load is sent to loopback addresses only (127.0.0.0/8, ::1, localhost), not {host!r}")


def _error_label(status: int, content: bytes) -> str:
    """`http_<status>:<code>` from an OpenAI-style error body (its type when it has no code)."""
    try:
        err = orjson.loads(content).get("error") or {}
        detail = err.get("code") or err.get("type") or "unknown"
    except (orjson.JSONDecodeError, AttributeError):
        detail = "not_json"
    return f"http_{status}:{detail}"


def _stream_error(data: bytes) -> str | None:
    """The error code of an SSE data line carrying `{"error": ...}`, else None."""
    if b'"error"' not in data:
        return None
    try:
        err = orjson.loads(data).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if not isinstance(err, dict):
        return None
    return str(err.get("code") or err.get("type") or "unknown")


async def _send(client: httpx.AsyncClient, spec: RequestSpec) -> Outcome:
    payload = orjson.dumps(spec.body)
    headers = {"content-type": "application/json"}
    status, start = 0, time.perf_counter()
    ttfb = 0.0
    try:
        if not spec.stream:
            response = await client.post(spec.path, content=payload, headers=headers)
            # httpx has read the whole body here; the headers' arrival is not seen separately.
            latency = time.perf_counter() - start
            error = None if response.status_code == 200 else _error_label(response.status_code, response.content)
            return Outcome(response.status_code, latency, latency, error)
        async with client.stream("POST", spec.path, content=payload, headers=headers) as response:
            status, ttfb = response.status_code, time.perf_counter() - start
            if status != 200:
                content = await response.aread()
                return Outcome(status, time.perf_counter() - start, ttfb, _error_label(status, content))
            done, error, first = False, None, None
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if first is None:
                    first = time.perf_counter() - start
                data = line[6:].encode()
                if data == b"[DONE]":
                    done = True
                elif error is None and (code := _stream_error(data)) is not None:
                    error = f"stream_error:{code}"
            if error is None and not done:
                error = "stream_incomplete"
            return Outcome(status, time.perf_counter() - start, ttfb, error, first)
    except httpx.HTTPError as exc:
        # A stream cut after its headers keeps its status: the client saw a 200, then lost the body.
        elapsed = time.perf_counter() - start
        return Outcome(status, elapsed, ttfb if status else elapsed, f"transport:{type(exc).__name__}")


async def run_load(
    base_url: str,
    make_request: Callable[[int], RequestSpec],
    *,
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    headers: dict[str, str] | None = None,
    timeout_s: float = 120.0,
) -> LoadResult:
    """Send up to `max_requests` requests (the i-th is `make_request(i)`) from `concurrency`
    clients, for at most `max_seconds`; requests in flight at the time limit are finished."""
    ensure_loopback(base_url)
    if concurrency < 1 or max_requests < 1 or not max_seconds > 0:
        raise ValueError("concurrency and max_requests must be >= 1 and max_seconds > 0")
    counter = itertools.count()
    result = LoadResult()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits,
                                 timeout=httpx.Timeout(timeout_s)) as client:
        start = time.perf_counter()
        deadline = start + max_seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                i = next(counter)
                if i >= max_requests:
                    return
                result.outcomes.append(await _send(client, make_request(i)))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.wall_s = time.perf_counter() - start
    return result


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop when installed (less of the load generator's own overhead)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
