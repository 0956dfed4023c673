"""What tests use to talk to a gateway as its users do: the openai SDK, a Prometheus-style read
of /metrics, a raw POST whose client hangs up, and a wait for what a test cannot know the time of."""
from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator

import httpx
from openai import OpenAI


def client(base_url: str, **options) -> OpenAI:
    """The openai SDK pointed at a server's `/v1`, with no SDK retries: each test sees exactly
    what the server sent."""
    return OpenAI(**{"base_url": base_url + "/v1", "api_key": "unused", "max_retries": 0, "timeout": 30,
                     **options})


def metric(base_url: str, name: str) -> float:
    """Sum of a metric's samples whose line starts with `name` (labels included in `name`)."""
    text = httpx.get(base_url + "/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@contextlib.contextmanager
def hanging_post(base_url: str, path: str, body: bytes, content_length: int | None = None) -> Iterator[None]:
    """A JSON POST of `body` sent over a plain socket, whose client hangs up (closes the socket,
    reading nothing) when the block ends. `content_length` may promise more than `body` holds."""
    host, port = base_url.removeprefix("http://").split(":")
    length = len(body) if content_length is None else content_length
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
                     f"content-length: {length}\r\n\r\n".encode() + body)
        yield


def wait_for(check: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    """Whether `check` came true within `timeout_s`, polled every 50 ms: for what happens at an
    unknown time after a test's action (a count, a hang-up noticed). No timing is asserted."""
    deadline = time.monotonic() + timeout_s
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)
    return check()
