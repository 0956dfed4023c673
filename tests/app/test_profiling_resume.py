"""A gateway restarted mid-profiling resumes the job and asks only the prompts not yet graded."""
from __future__ import annotations

import time
from collections import Counter

import httpx

from app.api.main import create_app
from app.runtime.config import Settings
from tests.app.conftest import ROUTERBENCH_SETTINGS, wait_ready
from tests.app.test_admin import ADMIN, admin, wait_job
from tests.support.servers import serve


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
