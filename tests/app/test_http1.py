"""The upstream client (app/upstream/http1.py) against scripted servers on real sockets: what it
sends, how it reads each way a body can be framed, when it reuses a connection, and how each
transport failure is told apart. The gateway's own fault tests (test_faults.py) cover it behind
the forwarder against the fault upstream."""
from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from app.upstream.http1 import (
    ConnectFailed,
    Disconnected,
    Limits,
    ReadFailed,
    UpstreamClient,
)
from tests.support.fault_upstream import closed_port

LIMITS = Limits(connect_s=2, read_s=2, pool_s=0.3)
OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


class Script:
    """A server answering each request (head and body read by content-length) with what
    `answer(n, head)` writes, n counting from 0; it records the requests and counts connections."""

    def __init__(self, answer: Callable[[int, bytes, asyncio.StreamWriter], Awaitable[None]]) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                self.requests.append(head + await reader.readexactly(length))
                await self.answer(len(self.requests) - 1, head, writer)
                if writer.is_closing():
                    return
        writer.close()


@contextlib.asynccontextmanager
async def scripted(answer, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
                   ) -> AsyncIterator[tuple[Script, str]]:
    """A Script on a free port, speaking TLS with `tls`; yields it and its base URL."""
    script = Script(answer)
    server = await asyncio.start_server(script.handle, host, 0, ssl=tls)
    try:
        netloc = f"[{host}]" if ":" in host else host
        yield script, f"{'https' if tls else 'http'}://{netloc}:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


def replies(*raw: bytes, close_after: bool = False):
    async def answer(n: int, head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(raw[min(n, len(raw) - 1)])
        await writer.drain()
        if close_after:
            writer.close()
    return answer


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    c = UpstreamClient(LIMITS, proxies={})
    yield c
    await c.close()


async def test_a_post_sends_host_length_headers_and_body_and_reads_the_answer(client):
    async with scripted(replies(OK)) as (script, url):
        reply = await client.request("POST", url + "/v1/chat/completions?x=1", b'{"a": 1}',
                                     {"content-type": "application/json"})
        assert (reply.status, reply.headers["content-type"]) == (200, "application/json")
        assert await reply.read() == b"{}"
    head, _, body = script.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions?x=1 HTTP/1.1"
    port = url.rsplit(":", 1)[1].encode()
    assert set(lines[1:]) == {b"host: 127.0.0.1:" + port, b"content-length: 8", b"content-type: application/json"}
    assert body == b'{"a": 1}'


async def test_a_get_or_delete_sends_no_length_and_an_empty_post_a_zero_one(client):
    # A stored response is read, deleted (no body, so no length: RFC 9110) and cancelled (a POST).
    async with scripted(replies(OK)) as (script, url):
        for method in ("GET", "DELETE", "POST"):
            assert await (await client.request(method, url + "/v1/responses/r1?limit=2", b"", {})).read() == b"{}"
    heads = [request.split(b"\r\n") for request in script.requests]
    assert [h[0] for h in heads] == [b"GET /v1/responses/r1?limit=2 HTTP/1.1", b"DELETE /v1/responses/r1?limit=2 HTTP/1.1",
                                     b"POST /v1/responses/r1?limit=2 HTTP/1.1"]
    assert [any(line.startswith(b"content-length") for line in h) for h in heads] == [False, False, True]
    assert b"content-length: 0" in heads[2]


async def test_the_parsed_urls_kept_stay_bounded_however_many_ids_are_asked_for(client, monkeypatch):
    monkeypatch.setattr("app.upstream.http1._KNOWN_URLS", 3)
    async with scripted(replies(OK)) as (_, url):
        for n in range(7):
            assert await (await client.request("GET", f"{url}/v1/responses/r{n}", b"", {})).read() == b"{}"
    assert 1 <= len(client._origins) <= 3


async def test_an_ipv6_upstream_is_named_in_brackets_in_the_host_header(client):
    async with scripted(replies(OK), host="::1") as (script, url):
        assert await (await client.request("POST", url + "/v1/x", b"{}", {})).read() == b"{}"
    assert b"\r\nhost: [::1]:" + url.rsplit(":", 1)[1].encode() + b"\r\n" in script.requests[0]


async def test_sequential_requests_share_one_kept_alive_connection(client):
    async with scripted(replies(OK)) as (script, url):
        for _ in range(3):
            assert await (await client.request("POST", url + "/v1/x", b"{}", {})).read() == b"{}"
        assert script.connections == 1 and len(script.requests) == 3


async def test_an_answer_that_says_connection_close_is_not_reused(client):
    closing = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}"
    async with scripted(replies(closing, close_after=True)) as (script, url):
        for _ in range(2):
            assert await (await client.request("POST", url + "/v1/x", b"{}", {})).read() == b"{}"
        assert script.connections == 2


async def test_a_kept_alive_connection_the_upstream_closed_as_it_was_reused_is_replaced_once(client):
    async def close_the_second(n, head, writer):
        if n == 1:  # the upstream's keep-alive ended as this request came: it closes, answering nothing
            writer.close()
            return
        writer.write(OK)
        await writer.drain()

    async with scripted(close_the_second) as (script, url):
        assert await (await client.request("POST", url + "/v1/x", b"{}", {})).read() == b"{}"
        assert await (await client.request("POST", url + "/v1/x", b"{}", {})).read() == b"{}"  # sent again, new connection
        assert script.connections == 2 and len(script.requests) == 3


async def test_a_new_connection_closed_without_an_answer_is_not_tried_again(client):
    async def close(n, head, writer):
        writer.close()

    async with scripted(close) as (script, url):
        with pytest.raises(Disconnected):
            await client.request("POST", url + "/v1/x", b"{}", {})
        assert script.connections == 1 and len(script.requests) == 1


async def test_an_idle_connection_older_than_the_keepalive_is_not_reused():
    c = UpstreamClient(Limits(connect_s=2, read_s=2, pool_s=1, keepalive_s=0.05), proxies={})
    async with scripted(replies(OK)) as (script, url):
        await (await c.request("POST", url + "/v1/x", b"{}", {})).read()
        await asyncio.sleep(0.2)
        await (await c.request("POST", url + "/v1/x", b"{}", {})).read()
        assert script.connections == 2
    await c.close()


async def test_interim_answers_are_skipped_for_the_final_one_on_the_same_connection(client):
    """A server may send 100 Continue or 103 Early Hints unasked (RFC 9110 15.2), each in its own
    segment here: before, the first was taken for the answer (status 100, an empty body) and the
    real one was read as the next request's."""
    async def interim_first(n, head, writer):
        for interim in (b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n"):
            writer.write(interim)
            await writer.drain()
            await asyncio.sleep(0.05)
        body = b'{"n":%d}' % n
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()

    async with scripted(interim_first) as (script, url):
        for n in range(2):
            reply = await client.request("POST", url + "/v1/x", b"{}", {})
            assert reply.status == 200 and "link" not in reply.headers
            assert await reply.read() == b'{"n":%d}' % n
        assert script.connections == 1


async def test_chunked_bodies_are_joined_and_streams_come_piece_by_piece(client):
    chunked = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
               b"7\r\ndata: a\r\n7\r\ndata: b\r\n0\r\n\r\n")
    async with scripted(replies(chunked)) as (_, url):
        assert await (await client.request("POST", url + "/v1/x", b"{}", {})).read() == b"data: adata: b"
        pieces = [p async for p in (await client.request("POST", url + "/v1/x", b"{}", {})).iter_chunks()]
        assert b"".join(pieces) == b"data: adata: b"


async def test_a_body_delimited_by_the_connections_end_is_whole(client):
    async with scripted(replies(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", close_after=True)) as (_, url):
        assert await (await client.request("POST", url + "/v1/x", b"{}", {})).read() == b"until the end"


async def test_response_headers_over_8_kb_are_read(client):
    """aiohttp, the client before this one, refused them (docs/benchmarks.md, issue 15's notes)."""
    big = b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 20_000 + b"\r\ncontent-length: 2\r\n\r\n{}"
    async with scripted(replies(big)) as (_, url):
        reply = await client.request("POST", url + "/v1/x", b"{}", {})
        assert len(reply.headers["x-big"]) == 20_000 and await reply.read() == b"{}"


async def test_a_body_cut_short_is_a_disconnect(client):
    cut = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial"
    async with scripted(replies(cut, close_after=True)) as (_, url):
        reply = await client.request("POST", url + "/v1/x", b"{}", {})
        with pytest.raises(Disconnected):
            await reply.read()


async def test_a_malformed_answer_is_a_disconnect(client):
    async with scripted(replies(b"NOT HTTP AT ALL\r\n\r\n")) as (_, url):
        with pytest.raises(Disconnected):
            await client.request("POST", url + "/v1/x", b"{}", {})


async def test_a_reset_after_the_request_is_a_read_failure(client):
    async def reset(n, head, writer):
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    async with scripted(reset) as (_, url):
        with pytest.raises(ReadFailed):
            await client.request("POST", url + "/v1/x", b"{}", {})


async def test_no_data_in_time_is_a_timeout_and_a_refused_port_a_connect_failure():
    c = UpstreamClient(Limits(connect_s=2, read_s=0.2, pool_s=1), proxies={})

    async def stall(n, head, writer):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n")  # headers, then nothing
    async with scripted(stall) as (_, url):
        reply = await c.request("POST", url + "/v1/x", b"{}", {})
        with pytest.raises(TimeoutError):
            await reply.read()
    with pytest.raises(ConnectFailed):
        await c.request("POST", f"http://127.0.0.1:{closed_port()}/v1/x", b"{}", {})
    await c.close()


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(client):
    async with scripted(replies(OK)) as (script, url):
        with pytest.raises(ConnectFailed, match="line break"):
            await client.request("POST", url + "/v1/x", b"{}", {"authorization": "Bearer k\r\nx-injected: 1"})
        assert script.requests == []


async def test_a_header_value_http_cannot_carry_is_refused_and_the_connection_is_not_lost(client):
    async with scripted(replies(OK)) as (script, url):
        with pytest.raises(ConnectFailed, match="cannot carry"):
            await client.request("POST", url + "/v1/x", b"{}", {"user-agent": "snowman \u2603"})
        assert await (await client.request("POST", url + "/v1/x", b"{}", {})).read() == b"{}"
        assert len(script.requests) == 1


async def test_no_free_connection_within_the_pool_wait_is_a_connect_failure():
    c = UpstreamClient(Limits(connect_s=2, read_s=2, pool_s=0.2, max_connections=1), proxies={})
    async with scripted(replies(OK)) as (_, url):
        held = await c.request("POST", url + "/v1/x", b"{}", {})  # not read: its connection stays taken
        with pytest.raises(ConnectFailed, match="no free upstream connection"):
            await c.request("POST", url + "/v1/x", b"{}", {})
        await held.read()
        assert await (await c.request("POST", url + "/v1/x", b"{}", {})).read() == b"{}"
    await c.close()


async def test_an_http_proxy_gets_the_absolute_url_and_no_proxy_bypasses_it():
    async with scripted(replies(OK)) as (proxy, proxy_url), scripted(replies(OK)) as (direct, url):
        target = "http://upstream.example:8000/v1/chat/completions"
        c = UpstreamClient(LIMITS, proxies={"http": proxy_url, "no": "127.0.0.1"})
        assert await (await c.request("POST", target, b"{}", {})).read() == b"{}"
        assert proxy.requests[0].startswith(b"POST http://upstream.example:8000/v1/chat/completions HTTP/1.1\r\n")
        assert b"host: upstream.example:8000\r\n" in proxy.requests[0]
        await (await c.request("POST", url + "/v1/x", b"{}", {})).read()  # NO_PROXY: straight there
        assert len(direct.requests) == 1 and len(proxy.requests) == 1
        await c.close()


async def test_an_https_upstream_goes_through_a_connect_tunnel_and_a_refused_tunnel_is_a_connect_failure():
    async with scripted(replies(b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n")) \
            as (proxy, proxy_url):
        c = UpstreamClient(LIMITS, proxies={"https": proxy_url})
        with pytest.raises(ConnectFailed, match="refused a tunnel"):
            await c.request("POST", "https://api.example.com/v1/chat/completions", b"{}", {})
        assert proxy.requests[0].startswith(b"CONNECT api.example.com:443 HTTP/1.1\r\n")
        with pytest.raises(ConnectFailed, match="refused a tunnel"):
            await c.request("POST", "https://[2001:db8::1]:8443/v1/chat/completions", b"{}", {})
        assert proxy.requests[1].startswith(b"CONNECT [2001:db8::1]:8443 HTTP/1.1\r\nhost: [2001:db8::1]:8443\r\n")
        await c.close()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory) -> tuple[ssl.SSLContext, str]:
    """A TLS server context with a self-signed certificate for 127.0.0.1 (made by openssl's CLI),
    and the certificate's path, for a client to trust through SSL_CERT_FILE."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=uniroute-test",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, str(cert)


async def test_an_https_upstream_is_answered_over_tls_on_one_kept_alive_connection(tls_server, monkeypatch):
    context, cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", cert)  # how a user trusts a private CA: OpenSSL reads it
    async with scripted(replies(OK), tls=context) as (script, url):
        c = UpstreamClient(LIMITS, proxies={})
        for _ in range(2):
            reply = await c.request("POST", url + "/v1/chat/completions", b'{"a": 1}', {})
            assert reply.status == 200 and await reply.read() == b"{}"
        assert script.connections == 1 and script.requests[1].endswith(b'{"a": 1}')
        await c.close()


async def test_an_https_upstream_whose_certificate_is_not_trusted_is_a_connect_failure(tls_server):
    context, _ = tls_server
    async with scripted(replies(OK), tls=context) as (script, url):
        c = UpstreamClient(LIMITS, proxies={})
        with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
            await c.request("POST", url + "/v1/chat/completions", b"{}", {})
        assert script.requests == []
        await c.close()


async def test_an_https_upstream_is_answered_through_a_connect_tunnel(tls_server, monkeypatch):
    context, cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    tunnels: list[bytes] = []
    tunnels_open: list[asyncio.Future] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        tunnels.append(head)
        host, _, port = head.split(b" ")[1].decode().rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        tunnels_open.append(asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer)))
        await tunnels_open[-1]

    async with scripted(replies(OK), tls=context) as (script, url):
        server = await asyncio.start_server(proxy, "127.0.0.1", 0)
        c = UpstreamClient(LIMITS, proxies={"https": f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"})
        reply = await c.request("POST", url + "/v1/chat/completions", b"{}", {})
        assert reply.status == 200 and await reply.read() == b"{}"
        assert tunnels[0].startswith(f"CONNECT {url.removeprefix('https://')} HTTP/1.1\r\n".encode())
        assert script.requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")  # inside the tunnel
        await c.close()
        await asyncio.wait_for(tunnels_open[0], 10)  # the tunnel ends with the client's connection
        server.close()
