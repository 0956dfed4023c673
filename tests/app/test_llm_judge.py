"""`llm_judge` items are graded by the configured judge model, with the documented prompt; a
judge that fails leaves the answer ungraded (asked again later), never scored as wrong."""
from __future__ import annotations

import json

from app.demo.replay_upstream import create_replay_app
from app.profiling.jobs import JUDGE_PROMPT
from router_core.repset import RepItem, write_repset
from tests.app.test_admin import ADMIN, admin, wait_job
from tests.support.servers import serve

ITEMS = [RepItem(id=f"open.{i}", prompt=f"Explain briefly why the sky looks blue, take {i}.",
                 reference="Rayleigh scattering of sunlight", grader="llm_judge", task="open") for i in range(4)]
ANSWERS = {item.prompt: f"Because of scattering, take {i}." for i, item in enumerate(ITEMS)}
# The judge accepts the first three answers only.
VERDICTS = {JUDGE_PROMPT.format(prompt=item.prompt, reference=item.reference, answer=ANSWERS[item.prompt]):
            "CORRECT" if i < 3 else "INCORRECT" for i, item in enumerate(ITEMS)}


def test_llm_judge_grades_answers_with_the_judge_model(make_gateway, model_config, tmp_path):
    repset = tmp_path / "judged.jsonl"
    write_repset(ITEMS, repset)
    scores = tmp_path / "judge-scores.json"
    scores.write_text(json.dumps({item.id: 1.0 for item in ITEMS}))
    with serve(create_replay_app({"candidate": ANSWERS, "judge": VERDICTS}, latency_scale=0.0)) as upstream:
        judge = model_config("judge", upstream + "/v1")
        judge.scores_file = str(scores)
        with make_gateway(models=[judge], admin_key=ADMIN, repset_path=str(repset), judge_model="judge") as gw:
            r = admin(gw, "POST", "/models", json={"name": "candidate", "base_url": upstream + "/v1",
                                                    "cost": {"per_request": 1}})
            job = wait_job(gw, r.json()["job_id"])
            assert job["state"] == "done" and job["errors"] == 0
            assert admin(gw, "GET", "/models/candidate").json()["accuracy"] == 0.75


def test_a_failing_judge_leaves_answers_ungraded(make_gateway, fault_upstream, model_config, tmp_path):
    upstream, url = fault_upstream
    repset = tmp_path / "judged.jsonl"
    write_repset(ITEMS, repset)
    scores = tmp_path / "judge-scores.json"
    scores.write_text(json.dumps({item.id: 1.0 for item in ITEMS}))
    judge = model_config("judge", url, upstream_model="judge:status=500")
    judge.scores_file = str(scores)
    with make_gateway(models=[judge], admin_key=ADMIN, repset_path=str(repset), judge_model="judge",
                      retries=0, max_fallbacks=0) as gw:
        r = admin(gw, "POST", "/models", json={"name": "candidate", "base_url": url, "cost": {"per_request": 1}})
        job = wait_job(gw, r.json()["job_id"])
        assert job["state"] == "failed" and job["errors"] == len(ITEMS)
        assert admin(gw, "GET", "/models/candidate").json()["state"] == "failed"
    assert upstream.calls["judge:status=500"] >= len(ITEMS)
