"""The load generator against the benchmark stub on a real socket: bounds, outcomes and labels."""
from __future__ import annotations

import pytest

from benchmarks.loadgen import RequestSpec, ensure_loopback, run_load
from benchmarks.stub_upstream import StubOptions, create_stub_app
from tests.support.servers import serve


def chat(i: int, stream: bool = False, model: str = "m") -> RequestSpec:
    body = {"model": model, "messages": [{"role": "user", "content": f"question {i}"}]}
    return RequestSpec("/v1/chat/completions", {**body, "stream": stream}, stream)


@pytest.mark.parametrize("url", ["http://10.0.0.1:8000", "http://192.168.1.5", "http://example.com"])
def test_load_is_refused_for_any_target_off_this_machine(url):
    with pytest.raises(ValueError, match="loopback"):
        ensure_loopback(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:1", "http://127.8.0.1", "http://[::1]:80", "http://localhost:9"])
def test_loopback_targets_are_accepted(url):
    ensure_loopback(url)


async def test_the_request_count_bounds_a_run_and_every_request_is_timed():
    async with serve(create_stub_app(StubOptions(delay_s=0.0))) as url:
        result = await run_load(url, lambda i: chat(i, stream=i % 2 == 0), concurrency=3, max_requests=10,
                                max_seconds=30)
    assert len(result.outcomes) == 10 and result.errors() == {}
    assert all(o.status == 200 and 0 < o.ttfb_s <= o.latency_s for o in result.outcomes)
    # Only the 5 streams have a first event, after their headers and before their end.
    streamed = [o for o in result.outcomes if o.first_event_s is not None]
    assert len(streamed) == 5 and all(o.ttfb_s <= o.first_event_s <= o.latency_s for o in streamed)
    assert result.rps > 0 and set(result.percentiles_ms()) == {"p50", "p95", "p99"}


async def test_the_time_bound_stops_a_run_before_its_count():
    async with serve(create_stub_app(StubOptions(delay_s=0.05))) as url:
        result = await run_load(url, chat, concurrency=2, max_requests=100_000, max_seconds=0.3)
    # Each client finishes the request it has in flight, then stops: far fewer than the count.
    assert 2 <= len(result.outcomes) < 100


async def test_failures_are_labelled_by_status_and_error_code_and_cuts_by_the_transport_error():
    failing = create_stub_app(StubOptions(delay_s=0.0, fail_rate=1.0))
    cutting = create_stub_app(StubOptions(delay_s=0.0, cut_rate=1.0))
    async with serve(failing) as fail_url, serve(cutting) as cut_url:
        failed = await run_load(fail_url, chat, concurrency=1, max_requests=2, max_seconds=30)
        cut_stream = await run_load(cut_url, lambda i: chat(i, stream=True), concurrency=1, max_requests=2,
                                    max_seconds=30)
        cut_body = await run_load(cut_url, chat, concurrency=1, max_requests=2, max_seconds=30)
    assert failed.errors() == {"http_500:server_error": 2} and failed.rps == 0
    assert cut_stream.errors() == {"transport:RemoteProtocolError": 2}
    assert [o.status for o in cut_stream.outcomes] == [200, 200]  # the headers had arrived
    assert cut_body.errors() == {"transport:RemoteProtocolError": 2}
