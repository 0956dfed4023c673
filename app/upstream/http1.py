"""The upstream client: HTTP/1.1 over pooled keep-alive connections, an asyncio protocol each,
with httptools (the parser uvicorn serves with) reading the answers.

The gateway asks one thing of an HTTP client: POST a JSON body (or GET or DELETE a stored
response), then read the whole answer or relay it chunk by chunk. aiohttp spent about 250 µs of
CPU per call on this machine, a fifth of a routed request; this spends about 60
(docs/benchmarks.md). What it keeps of a full client: TLS, proxies from the environment
(HTTP_PROXY / HTTPS_PROXY / NO_PROXY: absolute-form requests, CONNECT tunnels for https),
chunked and length-delimited bodies, a connection limit, and the timeouts of `Timeouts`:
connect, a wait for a free connection, and every wait for data.

Failures are told apart the way the fault classes need (app/upstream/faults.py): the request
never left (`ConnectFailed`), did not leave whole (`WriteFailed`), the connection was reset
(`ReadFailed`) or closed (`Disconnected`) before the answer was whole, or no data came in time
(`TimeoutError`). One failure is not passed on: a kept-alive connection that fails before any
byte of its answer came was closed by the upstream as it was reused (its keep-alive ended
first), so the request goes once more on a new connection rather than counting against the
model.
"""
from __future__ import annotations

import asyncio
import ssl
import time
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import httptools


class UpstreamError(Exception):
    """An upstream call that failed in transport (not by its status)."""


class ConnectFailed(UpstreamError):
    """No connection: refused, unresolvable, too slow to open, no free one in time, or a bad URL."""


class WriteFailed(UpstreamError):
    """The connection went before the whole request was sent."""


class ReadFailed(UpstreamError):
    """The connection failed (reset) after the request was sent, before the answer was whole."""


class _Stale(Exception):
    """A reused connection failed before any byte of its answer came."""


class Disconnected(UpstreamError):
    """The upstream closed the connection before a whole, well-formed answer."""


# How many URLs `UpstreamClient` keeps parsed: every model's endpoints, many times over.
_KNOWN_URLS = 4096


@dataclass(frozen=True)
class Limits:
    """Timeouts in seconds (`read_s` bounds every wait for data) and the connection limits."""

    connect_s: float
    read_s: float
    pool_s: float
    max_connections: int = 512
    keepalive_s: float = 2.0


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int
    proxy: tuple[str, int] | None  # (host, port) of an HTTP proxy


class _Connection(asyncio.Protocol):
    """One connection and the answer being read on it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.heard = False  # whether any of the current answer's bytes came
        self._parser: httptools.HttpResponseParser | None = None
        self._reply: Reply | None = None

    # --- asyncio.Protocol ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._parser is None or self._reply is None:
            self.close()  # data no request asked for: this connection cannot be trusted again
            return
        self.heard = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reply.fail(Disconnected("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            self._reply.fail(Disconnected(f"malformed answer: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        self._lost(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    # --- httptools callbacks ---
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._reply is not None
        self._reply.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        reply, parser = self._reply, self._parser
        assert reply is not None and parser is not None
        status = parser.get_status_code()
        if status < 200:
            # An interim answer (100 Continue, 103 Early Hints), which a server may send unasked
            # (RFC 9110 15.2): the final answer follows on this connection; its headers are not its.
            reply.headers.clear()
            return
        reply.status = status
        reply.keep_alive = parser.should_keep_alive()
        reply.wake()

    def on_body(self, body: bytes) -> None:
        assert self._reply is not None
        self._reply.chunks.append(body)
        self._reply.wake()

    def on_message_complete(self) -> None:
        assert self._reply is not None
        if not self._reply.status:
            return  # the end of an interim answer
        self._reply.complete = True
        self._reply.wake()

    # --- the client's side ---
    def start(self, reply: Reply, request: bytes) -> None:
        """Send `request` and read its answer into `reply`."""
        self._reply = reply
        self._parser = httptools.HttpResponseParser(self)
        self.heard = False
        assert self.transport is not None
        self.transport.write(request)

    def release(self) -> None:
        """The answer is read: the connection may serve the next request."""
        self._reply = None
        self._parser = None
        self.idle_since = time.monotonic()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _lost(self, exc: Exception | None) -> None:
        reply = self._reply
        self.closed = True
        if reply is None or reply.complete:
            return
        try:
            unsent = self.transport is not None and self.transport.get_write_buffer_size() > 0
        except RuntimeError:  # a transport past its end may refuse to say
            unsent = False
        if reply.status == 0 and unsent:
            reply.fail(WriteFailed(f"the connection went while sending the request: {exc or 'closed'}"))
        elif isinstance(exc, UpstreamError):
            reply.fail(exc)
        elif exc is not None:
            reply.fail(ReadFailed(f"{type(exc).__name__}: {exc}"))
        elif reply.status and "content-length" not in reply.headers and "chunked" not in \
                reply.headers.get("transfer-encoding", "").lower():
            reply.complete = True  # a body delimited by the connection's end
            reply.keep_alive = False
            reply.wake()
        else:
            reply.fail(Disconnected("the upstream closed the connection before the answer was whole"))


class Reply:
    """An upstream's answer: `status` and `headers` (lower-case names) once `request` returns, then
    the body by `read()` or `iter_chunks()`. `close()` (always, `read` does it) gives the connection
    back to the pool when the answer was read whole, else closes it."""

    def __init__(self, client: UpstreamClient, origin: _Origin, conn: _Connection) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.keep_alive = False
        self.complete = False
        self.chunks: deque[bytes] = deque()
        self._client = client
        self._origin = origin
        self._conn: _Connection | None = conn
        self._error: Exception | None = None
        self._waiter: asyncio.Future | None = None

    def wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def fail(self, exc: Exception) -> None:
        if self._error is None:
            self._error = exc
        self.wake()

    async def _wait(self) -> None:
        """Until the connection has news for this answer, at most `read_s`."""
        if self._error is not None:
            raise self._error
        loop = self._client.loop
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(self._client.limits.read_s, _expire, waiter, self._client.limits.read_s)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        if self._error is not None:
            raise self._error

    async def _headers(self) -> None:
        while not self.status:
            await self._wait()

    async def read(self) -> bytes:
        """The whole body; the connection goes back to the pool."""
        try:
            while not self.complete:
                await self._wait()
            return b"".join(self.chunks)
        finally:
            self.close()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body's pieces as they arrive; raises UpstreamError or TimeoutError if it breaks."""
        try:
            while True:
                while self.chunks:
                    yield self.chunks.popleft()
                if self.complete:
                    return
                await self._wait()
        finally:
            self.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        self._client.give_back(self._origin, conn, reusable=self.complete and self.keep_alive and not conn.closed)


def _expire(waiter: asyncio.Future, read_s: float) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError(f"no data from the upstream within {read_s:g} s"))


class UpstreamClient:
    """Pooled HTTP/1.1 connections to the upstreams; `request` one, `close` them all."""

    def __init__(self, limits: Limits, proxies: Mapping[str, str] | None = None) -> None:
        """`proxies`: scheme -> proxy URL, with `no_proxy` (comma-separated hosts) as urllib's
        `getproxies_environment()` gives them; None reads the environment."""
        self.limits = limits
        self.loop = asyncio.get_running_loop()
        self._proxies = dict(urllib.request.getproxies_environment() if proxies is None else proxies)
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._slots = asyncio.Semaphore(limits.max_connections)
        self._origins: dict[str, tuple[_Origin, str]] = {}
        self._tls: ssl.SSLContext | None = None

    async def request(self, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        """Send `method` with `body` to `url` (GET and DELETE: an empty body); returns once the
        answer's status and headers are in."""
        origin, target = self._origin(url)
        if any("\r" in v or "\n" in v for v in headers.values()):
            raise ConnectFailed("a header value holds a line break; nothing was sent")
        host = _authority(origin.host, None if origin.port in (80, 443) else origin.port)
        # A GET or DELETE without a body says no length either (RFC 9110 8.6); a POST always does.
        length = f"content-length: {len(body)}\r\n" if body or method == "POST" else ""
        head = [f"{method} {target} HTTP/1.1\r\nhost: {host}\r\n{length}"]
        head += [f"{k}: {v}\r\n" for k, v in headers.items()]
        head.append("\r\n")
        try:
            request = "".join(head).encode("latin-1") + body
        except UnicodeEncodeError:
            raise ConnectFailed("a header holds characters HTTP/1.1 cannot carry; nothing was sent") from None
        try:
            return await self._send(origin, request, reuse=True)
        except _Stale:
            # The upstream closed a kept-alive connection as it was reused (its own keep-alive
            # ended first) and read nothing of the request: it goes once more, on a new connection.
            return await self._send(origin, request, reuse=False)

    async def _send(self, origin: _Origin, request: bytes, reuse: bool) -> Reply:
        if self._slots.locked():
            try:
                await asyncio.wait_for(self._slots.acquire(), self.limits.pool_s)
            except TimeoutError:
                raise ConnectFailed(f"no free upstream connection within {self.limits.pool_s:g} s") from None
        else:
            await self._slots.acquire()
        try:
            pooled = self._pooled(origin) if reuse else None
            conn = pooled or await self._connect(origin)
        except BaseException:
            self._slots.release()
            raise
        reply = Reply(self, origin, conn)
        try:
            conn.start(reply, request)
            await reply._headers()
        except (WriteFailed, ReadFailed, Disconnected) as exc:
            reply.close()
            if pooled is not None and not conn.heard:
                raise _Stale() from exc
            raise
        except BaseException:
            reply.close()
            raise
        return reply

    def give_back(self, origin: _Origin, conn: _Connection, reusable: bool) -> None:
        """A connection whose answer is done (or abandoned, or broken)."""
        self._slots.release()
        if reusable:
            conn.release()
            self._idle.setdefault(origin, []).append(conn)
        else:
            conn.close()

    async def close(self) -> None:
        """Close every idle connection (the ones in use close as their answers end)."""
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    def _pooled(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        expired = time.monotonic() - self.limits.keepalive_s
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.idle_since > expired:
                return conn
            conn.close()
        return None

    def _origin(self, url: str) -> tuple[_Origin, str]:
        """The connection key of a URL and the request target to send, looked up once per URL."""
        known = self._origins.get(url)
        if known is not None:
            return known
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConnectFailed(f"not an http(s) URL: {url!r}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ConnectFailed(f"bad port in {url!r}") from None
        proxy = self._proxy_for(parts.scheme, parts.hostname)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if proxy is not None and parts.scheme == "http":
            target = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, ""))
        known = (_Origin(parts.scheme, parts.hostname, port, proxy), target)
        if len(self._origins) >= _KNOWN_URLS:
            # Stored responses' URLs (one per id) would grow it without end: start again, and
            # the models' few endpoints, asked for all the time, are back at once.
            self._origins.clear()
        self._origins[url] = known
        return known

    def _proxy_for(self, scheme: str, host: str) -> tuple[str, int] | None:
        url = self._proxies.get(scheme)
        if not url or urllib.request.proxy_bypass_environment(host, self._proxies):
            return None
        parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise ConnectFailed(f"only http:// proxies are supported, not {url!r}")
        return parts.hostname, parts.port or 80

    async def _connect(self, origin: _Origin) -> _Connection:
        conn = _Connection()
        host, port = origin.proxy or (origin.host, origin.port)
        tls = self._context() if origin.scheme == "https" and origin.proxy is None else None
        try:
            async with asyncio.timeout(self.limits.connect_s):
                await self.loop.create_connection(lambda: conn, host, port, ssl=tls,
                                                  server_hostname=origin.host if tls else None)
                if origin.scheme == "https" and origin.proxy is not None:
                    await self._tunnel(conn, origin)
        except TimeoutError:
            conn.close()
            raise ConnectFailed(f"no connection to {host}:{port} within {self.limits.connect_s:g} s") from None
        except (OSError, ssl.SSLError, UpstreamError) as exc:
            conn.close()
            raise ConnectFailed(f"cannot connect to {host}:{port}: {exc}") from exc
        return conn

    async def _tunnel(self, conn: _Connection, origin: _Origin) -> None:
        """CONNECT through the proxy, then TLS to the upstream inside the tunnel."""
        authority = _authority(origin.host, origin.port)
        reply = Reply(self, origin, conn)
        conn.start(reply, f"CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n\r\n".encode("latin-1"))
        await reply._headers()
        reply._conn = None  # the connection is the tunnel's now, not this answer's
        if reply.status != 200:
            raise ConnectFailed(f"the proxy refused a tunnel to {authority}: HTTP {reply.status}")
        conn.release()
        assert conn.transport is not None
        conn.transport = await self.loop.start_tls(conn.transport, conn, self._context(), server_hostname=origin.host)

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls


def _authority(host: str, port: int | None) -> str:
    """`host[:port]` as a Host header or a CONNECT target names it (an IPv6 literal in brackets)."""
    named = f"[{host}]" if ":" in host else host
    return named if port is None else f"{named}:{port}"
