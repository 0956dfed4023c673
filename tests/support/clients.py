"""What tests use to talk to a gateway as its users do: the openai SDK, and a Prometheus-style
read of /metrics."""
from __future__ import annotations

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
