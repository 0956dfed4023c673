"""The upstream client's own CPU per call: `python -m benchmarks.upstream_client [--json -]`.

Starts the upstream stub (no delay) and, on one uvloop event loop in this process, sends
`--requests` sequential chat requests through the gateway's upstream client
(app/upstream/http1.py), non-streamed (the body read whole) and streamed (read chunk by chunk),
and, when aiohttp is installed, the same through an aiohttp ClientSession (the client the
gateway used before). The figure is this thread's CPU time per call (time.thread_time), the
median of `--rounds` rounds that alternate the clients, so a busy machine weighs on both alike.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import uvloop

from app.upstream.http1 import Limits, UpstreamClient
from benchmarks import report
from benchmarks.services import log, start_stub

HEADERS = {"content-type": "application/json"}


def body(stream: bool) -> bytes:
    return orjson.dumps({"model": "m", "stream": stream,
                         "messages": [{"role": "user", "content": "Name a prime number."}]})


async def ours(url: str) -> tuple[Callable[[bool], Awaitable[None]], Callable[[], Awaitable[None]]]:
    client = UpstreamClient(Limits(connect_s=5, read_s=30, pool_s=5), proxies={})

    async def call(stream: bool) -> None:
        reply = await client.request("POST", url, body(stream), HEADERS)
        if stream:
            async for _ in reply.iter_chunks():
                pass
        else:
            await reply.read()
    return call, client.close


async def aiohttp_client(url: str) -> tuple[Callable[[bool], Awaitable[None]], Callable[[], Awaitable[None]]]:
    import aiohttp

    session = aiohttp.ClientSession()

    async def call(stream: bool) -> None:
        async with session.post(url, data=body(stream), headers=HEADERS) as response:
            if stream:
                async for _ in response.content.iter_any():
                    pass
            else:
                await response.read()
    return call, session.close


async def measure(url: str, requests: int, rounds: int) -> dict:
    makers = {"uniroute": ours}
    if importlib.util.find_spec("aiohttp") is not None:
        makers["aiohttp"] = aiohttp_client
    clients = {name: await make(url) for name, make in makers.items()}
    result: dict = {}
    for stream in (False, True):
        mode = "stream" if stream else "non_stream"
        runs: dict[str, list[float]] = {name: [] for name in clients}
        for r in range(rounds):
            for name in (list(clients) if r % 2 == 0 else list(clients)[::-1]):
                call = clients[name][0]
                for _ in range(20):  # a warm connection, warm code
                    await call(stream)
                start = time.thread_time()
                for _ in range(requests):
                    await call(stream)
                runs[name].append(1e6 * (time.thread_time() - start) / requests)
                log(f"  {name} {mode} round {r + 1}: {runs[name][-1]:.1f} us CPU per call")
        result[mode] = {"cpu_us_per_call": {name: statistics.median(v) for name, v in runs.items()}, "runs_us": runs}
    for _, close in clients.values():
        await close()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.upstream_client", description=__doc__)
    p.add_argument("--requests", type=int, default=3000, help="calls per round (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per client and mode (default %(default)s)")
    p.add_argument("--json", metavar="FILE|-", help="write the result as JSON; '-' prints one object on stdout")
    args = p.parse_args(argv)
    host = report.machine()
    with tempfile.TemporaryDirectory(prefix="uniroute-client-") as tmp, \
            start_stub(Path(tmp), delay_ms=0.0) as stub:
        result = uvloop.run(measure(stub.url + "/v1/chat/completions", args.requests, args.rounds))
    result.update({"requests_per_round": args.requests, "rounds": args.rounds, "machine": host})
    rows = []
    for mode in ("non_stream", "stream"):
        per = result[mode]["cpu_us_per_call"]
        ratio = f"{per['uniroute'] / per['aiohttp']:.2f}" if "aiohttp" in per else "–"
        rows.append([mode, f"{per['uniroute']:.1f}", f"{per['aiohttp']:.1f}" if "aiohttp" in per else "–", ratio])
    table = report.markdown_table(["mode", "uniroute client CPU us/call", "aiohttp CPU us/call", "ratio"], rows)
    if args.json == "-":
        print(orjson.dumps(result).decode())
        print(table, file=sys.stderr)
    else:
        print(table)
        print(report.machine_line(host))
        if args.json:
            Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
