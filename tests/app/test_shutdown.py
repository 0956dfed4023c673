"""`uniroute serve` stopped as an orchestrator stops it (SIGTERM, as Kubernetes does in a rolling
update), in one process and with two workers, in front of the fault upstream, with the openai
client: the requests in flight finish within the drain time (`drain_s`), those that would outlast
it are ended with the gateway's own error (never cut silently), and the process stops once its
shutdown has run."""
from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.app.test_workers import gateway_env
from tests.support.fault_upstream import Fault
from tests.support.workers import Served, serve_workers

PROMPT = [{"role": "user", "content": "Which gas do plants take in? A) O2 B) CO2"}]
# Upstream answers that outlast any drain: a stream whose next chunk is ten minutes away, and an
# answer ten minutes away.
ENDLESS = "endless:pace=600"
STUCK = "stuck:delay=600"


def named_models(model_config: Callable, base_url: str, *upstream_models: str) -> list[dict]:
    """Profiled models, each named as its upstream model's name before its fault directives."""
    return [model_config(m.split(":")[0], base_url, upstream_model=m).model_dump(mode="json")
            for m in upstream_models]


def client(served: Served) -> openai.OpenAI:
    """The openai client, not asking again by itself (each test says what it expects)."""
    return openai.OpenAI(base_url=served.base + "/v1", api_key="unused", max_retries=0, timeout=900)


def wait_for(what: str, done: Callable[[], bool], served: Served, timeout_s: float = 120.0) -> None:
    """Wait until `done()`; fail saying `what` did not happen (with the server's log) after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"{what} did not happen:\n{served.log.read_text()[-3000:]}"
        time.sleep(0.05)


def stopped(served: Served, timeout_s: float = 120.0) -> int:
    """The server's exit code once it has stopped; fails if it outlives `timeout_s`."""
    try:
        return served.proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the server did not stop:\n{served.log.read_text()[-3000:]}") from None


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_lets_requests_in_flight_finish_and_ends_those_outlasting_the_drain_with_an_error(
        workers, tmp_path, shared_cache, fault_upstream, model_config):
    fault, base_url = fault_upstream
    models = named_models(model_config, base_url, "quick:pace=0.5", ENDLESS, STUCK)
    env = gateway_env(tmp_path, shared_cache, *models, UNIROUTE_DRAIN_S="15")
    with serve_workers(env, tmp_path / "serve.log", workers) as served, ThreadPoolExecutor(1) as pool:
        oa = client(served)
        endless = oa.chat.completions.create(model="endless", messages=PROMPT, stream=True)
        assert next(endless).choices[0].delta.role == "assistant"  # the stream has begun
        stuck: Future = pool.submit(oa.chat.completions.create, model="stuck", messages=PROMPT)
        wait_for("the stuck request reaching its upstream", lambda: fault.calls[STUCK] == 1, served)
        quick = oa.chat.completions.create(model="quick", messages=PROMPT, stream=True)
        first = next(quick)

        served.proc.send_signal(signal.SIGTERM)
        # In flight and done within the drain: answered whole.
        rest = list(quick)
        assert "".join(c.choices[0].delta.content or "" for c in [first, *rest] if c.choices) == \
            "answer from quick:pace=0.5"
        assert rest[-1].choices[0].finish_reason == "stop"
        # Outlasting it: ended by the gateway with an error the SDK raises, not a dropped connection.
        with pytest.raises(openai.APIError) as cut:
            list(endless)
        assert not isinstance(cut.value, openai.APIConnectionError)
        assert cut.value.code == "stream_cut" and "shutting down" in cut.value.message
        with pytest.raises(openai.APIStatusError) as refused:
            stuck.result(timeout=300)
        assert refused.value.status_code == 503 and refused.value.code == "shutting_down", refused.value.body

        assert stopped(served) == 0
        # Every worker ran its shutdown (profiling jobs let go, capture written): none was killed.
        log = served.log.read_text()
        assert log.count("Application shutdown complete.") == workers, log[-3000:]
        assert "killing it" not in log


def refused_while_draining(served: Served, timeout_s: float = 120.0) -> None:
    """Wait until a new connection is refused; fail if one is taken and then left unanswered (a
    timeout), as a connection the kernel queues on a socket nobody accepts on any more is. One
    reset or closed at once counts as refused: it came in just as the server closed its socket or
    began to stop, and sends the client elsewhere as soon (seen in CI: a reset with 2 workers, a
    close before any answer with 1)."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert time.monotonic() < deadline, f"new connections were still answered:\n{served.log.read_text()[-3000:]}"
        try:
            httpx.get(served.base + "/healthz", timeout=10)  # answered: the server has not begun to stop
        except httpx.TimeoutException as exc:
            raise AssertionError(f"a new connection was taken, then not answered: {exc!r}") from exc
        except httpx.TransportError:
            return


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_draining_server_refuses_new_connections_at_once(workers, tmp_path, shared_cache, fault_upstream,
                                                                model_config):
    fault, base_url = fault_upstream
    env = gateway_env(tmp_path, shared_cache, *named_models(model_config, base_url, STUCK), UNIROUTE_DRAIN_S="300")
    with serve_workers(env, tmp_path / "serve.log", workers) as served:
        oa = openai.AsyncOpenAI(base_url=served.base + "/v1", api_key="unused", max_retries=0, timeout=900)
        in_flight = asyncio.create_task(oa.chat.completions.create(model="stuck", messages=PROMPT))
        await asyncio.to_thread(wait_for, "the request reaching its upstream", lambda: fault.calls[STUCK] == 1, served)

        served.proc.send_signal(signal.SIGTERM)
        # A client the Service still sends here (its endpoints are not updated yet) is refused at
        # once and tries another replica, rather than waiting on a server that will not answer.
        await asyncio.to_thread(refused_while_draining, served)
        assert not in_flight.done()  # the drain is under way
        in_flight.cancel()  # the client hangs up: nothing is left to drain
        await asyncio.gather(in_flight, return_exceptions=True)
        await oa.close()
        assert await asyncio.to_thread(stopped, served) == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("workers", [1, 2])
def test_a_stopped_server_exits_0_without_a_traceback(workers, sig, tmp_path, shared_cache):
    """Stopping is what SIGTERM (a rolling update, `docker stop`) and Ctrl-C ask: a clean exit,
    as a supervisor (systemd, tini, a CI job) records it."""
    with serve_workers(gateway_env(tmp_path, shared_cache), tmp_path / "serve.log", workers) as served:
        served.proc.send_signal(sig)
        assert stopped(served) == 0, served.log.read_text()[-3000:]
        assert "Traceback" not in served.log.read_text()


def test_a_stored_response_still_awaited_when_the_drain_ends_gets_an_openai_503(tmp_path, shared_cache,
                                                                               fault_upstream, model_config):
    fault, base_url = fault_upstream
    env = gateway_env(tmp_path, shared_cache, *named_models(model_config, base_url, "keeper"), UNIROUTE_DRAIN_S="2")
    with serve_workers(env, tmp_path / "serve.log", 1) as served, ThreadPoolExecutor(1) as pool:
        oa = client(served)
        created = oa.responses.create(model="keeper", input="Which gas do plants take in?")
        fault.set_fault("keeper", Fault(delay_s=600))  # its upstream is slow to give it back
        retrieved: Future = pool.submit(oa.responses.retrieve, created.id)
        wait_for("the retrieve reaching the upstream", lambda: fault.calls["keeper"] == 2, served)

        served.proc.send_signal(signal.SIGTERM)
        with pytest.raises(openai.APIStatusError) as refused:
            retrieved.result(timeout=300)
        assert refused.value.status_code == 503 and refused.value.code == "shutting_down", refused.value.response.text
        assert stopped(served) == 0
