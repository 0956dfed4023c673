"""Profiling survives: a gateway restarted mid-profiling resumes the job and asks only the
prompts not yet graded nor declined; an upstream outage pauses the job (the model stays unroutable) and it
resumes by itself; a pass that graded too little never ends `done`."""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter

import httpx

from app.api.main import create_app
from app.runtime.config import Settings
from tests.app.conftest import ROUTERBENCH_SETTINGS, wait_ready
from tests.app.test_admin import ADMIN, admin, wait_job, wait_state
from tests.support.fault_upstream import Fault
from tests.support.servers import serve
from tests.support.sqlite_lock import write_lock_held


def test_restart_mid_profiling_resumes_without_asking_again(tmp_path, shared_cache, fault_upstream):
    upstream, url = fault_upstream
    settings = Settings(sqlite_path=str(tmp_path / "registry.db"), cache_dir=shared_cache, admin_key=ADMIN,
                        **ROUTERBENCH_SETTINGS,
                        profile_concurrency=4)
    # Each answer takes 20 ms: the job is well under way, not finished, when the gateway stops.
    with serve(create_app(settings)) as gw:
        wait_ready(gw)
        r = admin(gw, "POST", "/models", json={"name": "slow", "base_url": url, "upstream_model": "slow:delay=0.02",
                                                "cost": {"per_request": 1}})
        job_id = r.json()["job_id"]
        while admin(gw, "GET", f"/jobs/{job_id}").json()["done"] < 40:
            time.sleep(0.05)
    asked_before_restart = len(upstream.received)
    with serve(create_app(settings)) as gw:
        wait_ready(gw)
        # The same job goes on from what was stored (the resumed job may already be asking more).
        assert admin(gw, "GET", f"/jobs/{job_id}").json()["done"] >= 40
        job = wait_job(gw, job_id)
        assert job["state"] == "done" and job["done"] == job["total"]
        assert admin(gw, "GET", "/models/slow").json()["state"] == "ready"
        assert httpx.post(gw + "/v1/route", json={"model": "uniroute", "messages": [
            {"role": "user", "content": "hi"}]}, timeout=10).json()["model"] == "slow"
    asked = Counter(req.body["messages"][0]["content"] for req in upstream.received)
    # Only the answers in flight at the stop (at most the job's concurrency) were asked twice.
    assert sum(n - 1 for n in asked.values() if n > 1) <= 4
    assert len(asked) == job["total"]
    assert 40 <= asked_before_restart < job["total"]


def test_a_resumed_job_does_not_ask_again_what_the_model_declined(tmp_path, shared_cache, fault_upstream):
    upstream, url = fault_upstream
    settings = Settings(sqlite_path=str(tmp_path / "registry.db"), cache_dir=shared_cache, admin_key=ADMIN,
                        **ROUTERBENCH_SETTINGS, profile_concurrency=1)
    # The first 5 prompts are refused with a 422 (declined: never wrong, never asked again).
    with serve(create_app(settings)) as gw:
        wait_ready(gw)
        r = admin(gw, "POST", "/models", json={"name": "picky", "base_url": url, "cost": {"per_request": 1},
                                                "upstream_model": "picky:fail_first=5,status=422,delay=0.02",
                                                "job": {"limit": 40}})
        job_id = r.json()["job_id"]
        while (running := admin(gw, "GET", f"/jobs/{job_id}").json())["done"] < 10:
            time.sleep(0.02)
        assert running["declined"] == 5 and running["errors"] == 0
        assert series(gw, "uniroute_profiling_prompts_declined", "picky") == [
            'uniroute_profiling_prompts_declined{model="picky"} 5.0']
    declined_prompts = [req.body["messages"][0]["content"] for req in upstream.received[:5]]
    with serve(create_app(settings)) as gw:
        wait_ready(gw)
        job = wait_job(gw, job_id)
    assert job["state"] == "done"
    assert (job["done"], job["declined"], job["errors"], job["total"]) == (35, 5, 0, 40)
    asked = Counter(req.body["messages"][0]["content"] for req in upstream.received)
    assert all(asked[prompt] == 1 for prompt in declined_prompts)


def series(gw: str, name: str, model: str) -> list[str]:
    """The /metrics lines of `name` (any suffix) for `model`."""
    return [line for line in httpx.get(gw + "/metrics", timeout=5).text.splitlines()
            if line.startswith(name) and f'model="{model}"' in line]


def test_an_outage_pauses_the_job_unroutable_and_it_resumes_by_itself(make_gateway, fault_upstream):
    upstream, url = fault_upstream
    upstream.set_fault("flaky", Fault(delay_s=0.02))
    with make_gateway(models=[], admin_key=ADMIN, retries=0, profile_concurrency=4, profile_backoff_s=0.05,
                      profile_backoff_max_s=0.2, profile_pause_after=6, profile_resume_after_s=1) as gw:
        r = admin(gw, "POST", "/models", json={"name": "flaky", "base_url": url, "cost": {"per_request": 1},
                                                "job": {"limit": 60}})
        job_id = r.json()["job_id"]
        while admin(gw, "GET", f"/jobs/{job_id}").json()["done"] < 10:
            time.sleep(0.02)
        assert series(gw, "uniroute_profiling_prompts{", "flaky") == ['uniroute_profiling_prompts{model="flaky"} 60.0']
        upstream.set_fault("flaky", Fault(status=503))
        paused = wait_state(gw, job_id, ("paused",))
        upstream.set_fault("flaky", Fault(delay_s=0.02))
        assert "failures in a row" in paused["error"] and paused["resume_at"] is not None
        assert paused["done"] < paused["total"] and paused["errors"] >= 6
        model = admin(gw, "GET", "/models/flaky").json()
        assert model["state"] == "profiling" and "paused" in model["error"]
        routed = httpx.post(gw + "/v1/route", json={"model": "uniroute", "messages": [
            {"role": "user", "content": "hi"}]}, timeout=10)
        assert routed.status_code == 503  # no routable model
        assert series(gw, "uniroute_profiling_prompts", "flaky") == []  # no stale progress while paused

        job = wait_state(gw, job_id, ("done",))
        assert job["done"] == job["total"] == 60 and job["resumes"] >= 1
        assert admin(gw, "GET", "/models/flaky").json()["state"] == "ready"
        # the prompts that failed were asked again: none is left ungraded
        assert admin(gw, "GET", "/models/flaky/answers", params={"filter": "ungraded"}).json()["total"] == 0
        assert series(gw, "uniroute_profiling_prompts", "flaky") == []
        assert series(gw, "uniroute_profiling_upstream_seconds_count", "flaky")
        assert series(gw, "uniroute_upstream_seconds", "flaky") == []  # client traffic only


def test_a_pass_below_the_coverage_floor_pauses_and_the_operator_resumes_it(make_gateway, fault_upstream):
    upstream, url = fault_upstream
    # the first 5 requests fail and are not asked again in that pass: 15/20 = 75% < 90%
    upstream.set_fault("thin", Fault(fail_first=5, status=503))
    with make_gateway(models=[], admin_key=ADMIN, retries=0, profile_attempts=1, profile_pause_after=100,
                      profile_backoff_s=0.01, profile_resume_after_s=0) as gw:
        r = admin(gw, "POST", "/models", json={"name": "thin", "base_url": url, "cost": {"per_request": 1},
                                                "job": {"limit": 20, "concurrency": 1}})
        job = wait_state(gw, r.json()["job_id"], ("paused", "done"))
        assert job["state"] == "paused" and job["done"] == 15 and "15/20 prompts graded (75%" in job["error"]
        assert job["resume_at"] is None  # resume_after_s 0: the operator resumes it
        assert admin(gw, "GET", "/models/thin").json()["state"] == "profiling"
        resumed = admin(gw, "POST", f"/jobs/{job['id']}/resume")
        assert resumed.status_code == 200 and resumed.json()["state"] == "running"
        job = wait_state(gw, job["id"], ("done",))
        assert job["done"] == 20 and job["errors"] == 5
        assert admin(gw, "GET", "/models/thin").json()["state"] == "ready"
        assert admin(gw, "POST", f"/jobs/{job['id']}/resume").status_code == 409


class _Said(logging.Handler):
    """Sets `said` once a profiling log line names `words`."""

    def __init__(self, words: str) -> None:
        super().__init__(logging.WARNING)
        self.words, self.said = words, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.words in record.getMessage():
            self.said.set()


def test_a_registry_locked_past_its_busy_timeout_mid_job_stops_the_job_and_it_resumes_not_failed(
        make_gateway, fault_upstream, tmp_path):
    upstream, url = fault_upstream
    upstream.set_fault("patient", Fault(delay_s=0.02))
    db = tmp_path / "registry.db"
    with make_gateway(models=[], admin_key=ADMIN, sqlite_path=str(db), profile_concurrency=1,
                      profile_resume_after_s=1) as gw:
        r = admin(gw, "POST", "/models", json={"name": "patient", "base_url": url, "cost": {"per_request": 1},
                                                "job": {"limit": 30}})
        job_id = r.json()["job_id"]
        while admin(gw, "GET", f"/jobs/{job_id}").json()["done"] < 3:
            time.sleep(0.02)
        said = _Said(f"profiling job {job_id} for patient")
        logging.getLogger("uniroute.profiling").addHandler(said)
        try:
            # Slow answers while the lock is taken, so the job is surely still asking once it is
            # held; its next answer then cannot be stored while another process holds the file's
            # write lock, which comes back as the job says what became of it.
            upstream.set_fault("patient", Fault(delay_s=1.0))
            with write_lock_held(db):
                upstream.set_fault("patient", Fault(delay_s=0.02))
                assert said.said.wait(120), "the job never gave up waiting for the registry"
        finally:
            logging.getLogger("uniroute.profiling").removeHandler(said)
        job = wait_state(gw, job_id, ("done", "failed"))
        assert job["state"] == "done" and job["done"] == 30, job
        assert admin(gw, "GET", "/models/patient").json()["state"] == "ready"
