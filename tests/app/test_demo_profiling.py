"""A model registered through the admin API in a demo-like gateway is profiled by asking the
demo's replay upstream: its multiple-choice grades agree with RouterBench's recorded labels, the
replay judge reproduces GPT-4's recorded ratings of its open-ended answers, and items it has no
recorded answer to end unanswered (left out of its profile), never scored 0."""
from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.demo.arena import ArenaRecords
from app.demo.models import judge_config
from app.demo.replay_data import demo_replay_app
from app.demo.replay_judge import JUDGE_MODEL
from app.profiling import jobs
from router_core.repset import RepItem, load_repset, write_repset
from router_core.shipped import ROUTERBENCH_REPSET
from tests.app.test_admin import ADMIN, admin, wait_job
from tests.support.servers import serve

MC_ITEMS = 40
ARENA_ITEMS = 12
PROFILE_MAX_TOKENS = 2048
SHARED = "claude-v2"  # in both datasets, under its RouterBench name
ARENA_ONLY = "gpt-4-0314"
# Representative items no LLM was recorded on (a general set's maths items have none).
UNRECORDED = [RepItem(f"unrecorded.{i}", f"A shop sells {n} apples a day. How many apples in {i + 2} days?",
                      f"#### {n * (i + 2)}", "numeric", "gsm8k") for i, n in enumerate((12, 30, 7))]


def mc_items() -> list[RepItem]:
    """Multiple-choice items of the first shipped set: RouterBench prompts, ids and references."""
    return load_repset(ROUTERBENCH_REPSET).items[:MC_ITEMS]


def arena_items(arena: ArenaRecords) -> list[RepItem]:
    """`llm_judge:rating` items of arena prompts whose recorded answers (by both tested LLMs) fit
    in the answer length profiling asks for, so none is cut."""
    fits = [pid for pid in arena.items
            if all(math.ceil(len(arena.answers[m][pid].answer) / 4) <= PROFILE_MAX_TOKENS
                   for m in (SHARED, ARENA_ONLY))]
    return [RepItem(f"arena-bench-v1/{pid}", arena.items[pid].prompt, arena.items[pid].reference,
                    "llm_judge:rating", "arena-bench-v1") for pid in fits[:ARENA_ITEMS]]


def judge_kinds_profiled() -> bool:
    """Whether this checkout's profiling jobs grade `llm_judge:<kind>` items with
    router_core.judging (the profiling work of issue 12, item 1)."""
    return hasattr(jobs, "judge_requests")


@pytest.fixture(scope="module")
def replay(arena) -> Iterator[str]:
    """The demo's replay upstream."""
    with serve(demo_replay_app(latency_scale=0.0, arena=arena)) as url:
        yield url + "/v1"


def graded(sqlite_path: Path, model: str) -> dict[str, dict]:
    """The stored graded answers of `model`, by item id, read from the gateway's registry file."""
    with sqlite3.connect(sqlite_path) as conn:
        rows = conn.execute("SELECT prompt_id, data FROM answers WHERE model = ?", (model,)).fetchall()
    return {pid: json.loads(data) for pid, data in rows}


def register(gw: str, name: str, replay: str, price: dict) -> dict:
    """Register `name` on the replay upstream through the admin API; its finished profiling job."""
    r = admin(gw, "POST", "/models", json={"name": name, "base_url": replay, "upstream_model": name, "cost": price})
    assert r.status_code == 202, r.text
    return wait_job(gw, r.json()["job_id"])


def mc_agreement(answers: dict[str, dict], routerbench, model: str) -> float:
    row = {pid: i for i, pid in enumerate(routerbench.ids)}
    j = routerbench.models.index(model)
    agree = [answers[it.id]["score"] == routerbench.scores[row[it.id], j] for it in mc_items()]
    return float(np.mean(agree))


def test_mc_grades_agree_with_routerbench_and_unrecorded_items_end_unanswered(make_gateway, replay, routerbench,
                                                                               tmp_path):
    repset = tmp_path / "mc-and-unrecorded.jsonl"
    write_repset(mc_items() + UNRECORDED, repset)
    db = tmp_path / "registry.db"
    with make_gateway(models=[], admin_key=ADMIN, repset_path=str(repset), sqlite_path=str(db)) as gw:
        job = register(gw, SHARED, replay, {"per_request": 0.004})
        assert job["state"] == "done" and job["declined"] == len(UNRECORDED)
        assert job["done"] + job["declined"] == job["total"]
        shown = admin(gw, "GET", f"/models/{SHARED}").json()
    answers = graded(db, SHARED)
    assert mc_agreement(answers, routerbench, SHARED) >= 0.95
    for item in UNRECORDED:
        assert "no recorded answer" in answers[item.id]["error"]
    # unanswered, not wrong: the profile counts the multiple-choice items alone
    assert shown["profile"]["n_prompts"] == MC_ITEMS
    assert shown["accuracy"] == pytest.approx(np.mean([answers[i.id]["score"] for i in mc_items()]))


@pytest.mark.skipif(not judge_kinds_profiled(), reason="needs the judge kinds in the profiling jobs")
def test_rating_items_are_graded_by_the_replay_judge_as_recorded(make_gateway, replay, routerbench, arena, tmp_path):
    items = mc_items() + arena_items(arena)
    repset = tmp_path / "mc-and-arena.jsonl"
    write_repset(items, repset)
    judge = judge_config(arena, items, replay)  # as the demo registers it: disabled, never routed
    db = tmp_path / "registry.db"
    with make_gateway(models=[judge], admin_key=ADMIN, repset_path=str(repset), sqlite_path=str(db),
                      judge_model=JUDGE_MODEL, profile_max_tokens=PROFILE_MAX_TOKENS) as gw:
        shared = register(gw, SHARED, replay, {"per_request": 0.004})
        only = register(gw, ARENA_ONLY, replay, arena.prices[ARENA_ONLY].to_dict())
        shown = admin(gw, "GET", f"/models/{ARENA_ONLY}").json()
    assert shared["state"] == "done"
    answers = graded(db, SHARED)
    assert mc_agreement(answers, routerbench, SHARED) >= 0.95
    for item in arena_items(arena):
        pid = item.id.split("/", 1)[1]
        assert answers[item.id]["score"] == arena.answers[SHARED][pid].score

    # the arena-only LLM has no recorded multiple-choice answers: unanswered, its ratings as recorded
    assert only["state"] == "done" and only["declined"] == MC_ITEMS
    answers = graded(db, ARENA_ONLY)
    assert all("no recorded answer" in answers[it.id]["error"] for it in mc_items())
    ratings = [arena.answers[ARENA_ONLY][it.id.split("/", 1)[1]].score for it in arena_items(arena)]
    assert [answers[it.id]["score"] for it in arena_items(arena)] == ratings
    assert shown["profile"]["n_prompts"] == ARENA_ITEMS and shown["accuracy"] == pytest.approx(np.mean(ratings))
