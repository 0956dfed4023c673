"""The demo's 17 recorded LLMs: priced from the recorded data, scored from the recorded labels and
ratings, an item without a recorded answer absent (unanswered), not 0."""
from __future__ import annotations

import json

import numpy as np
import pytest

from app.demo.arena import ARENA_DIR
from app.demo.models import demo_configs, demo_models, judge_config
from app.demo.replay_judge import JUDGE_MODEL
from app.runtime.config import Settings
from router_core.repset import RepItem, load_repset
from router_core.shipped import ROUTERBENCH_REPSET
from tests.app.test_replay_arena import (
    ARENA_ONLY,
    ROUTERBENCH_ONLY,
    SHARED,
    recorded_rows,
)


@pytest.fixture(scope="module")
def items(arena) -> list[RepItem]:
    """10 multiple-choice items (RouterBench ids), 10 arena rating items, one arena prompt under
    another grader and one item nobody was recorded on."""
    mc = load_repset(ROUTERBENCH_REPSET).items[:10]
    pids = sorted(arena.items)[:11]
    rated = [RepItem(f"arena/{p}", arena.items[p].prompt, arena.items[p].reference, "llm_judge:rating")
             for p in pids[:10]]
    other = RepItem("arena/pairwise", arena.items[pids[10]].prompt, arena.items[pids[10]].reference,
                    "llm_judge:pairwise")
    unrecorded = RepItem("gsm8k.0", "How many legs have 3 ducks?", "#### 6", "numeric")
    return mc + rated + [other, unrecorded]


def test_the_demo_has_seventeen_llms_priced_from_the_recorded_data(routerbench, arena, items):
    models = {m.name: m for m in demo_models(routerbench, arena, items)}
    assert set(models) == ROUTERBENCH_ONLY | SHARED | ARENA_ONLY
    for j, name in enumerate(routerbench.models):
        assert models[name].price.per_request == pytest.approx(np.nanmean(routerbench.costs[:, j]))
        assert models[name].price.input_per_mtok == 0 == models[name].price.output_per_mtok
    table = json.loads((ARENA_DIR / "prices.json").read_text())
    for name in ARENA_ONLY:
        price = models[name].price
        assert (price.input_per_mtok, price.output_per_mtok, price.per_request) == (
            table[name]["input_per_mtok"], table[name]["output_per_mtok"], 0.0)


def test_scores_are_recorded_labels_and_ratings_and_unrecorded_items_are_absent(routerbench, arena, items):
    models = {m.name: m for m in demo_models(routerbench, arena, items)}
    mc, rated = items[:10], items[10:20]
    _, answers = recorded_rows()
    rating = {(a["model"], a["id"]): a["rating"] for a in answers}
    row = {pid: i for i, pid in enumerate(routerbench.ids)}
    for name in ROUTERBENCH_ONLY | SHARED:
        j = routerbench.models.index(name)
        assert {it.id: models[name].scores[it.id] for it in mc} == {
            it.id: float(routerbench.scores[row[it.id], j]) for it in mc}
    for demo, recorded in (("claude-v2", "claude-2.1"), ("meta/llama-2-70b-chat", "Llama-2-70b-chat"),
                           ("gpt-4-0314", "gpt-4-0314")):
        assert [models[demo].scores[it.id] for it in rated] == [
            (rating[recorded, it.id.removeprefix("arena/")] - 1) / 9 for it in rated]
    for name in ARENA_ONLY:  # no recorded multiple-choice answer: unanswered, not wrong
        assert set(models[name].scores) == {it.id for it in rated}
    for name in ROUTERBENCH_ONLY:
        assert set(models[name].scores) == {it.id for it in mc}


def test_on_the_multiple_choice_set_the_arena_only_llms_are_left_out(routerbench, arena, tmp_path):
    configs = demo_configs(routerbench, arena, load_repset(ROUTERBENCH_REPSET).items, "http://x/v1", tmp_path)
    assert {c.name for c in configs} == ROUTERBENCH_ONLY | SHARED


def test_on_the_default_set_all_seventeen_are_scored_on_their_recorded_items(routerbench, arena):
    items = load_repset(Settings().repset_path).items
    graders = {it.id: it.grader for it in items}
    models = {m.name: m for m in demo_models(routerbench, arena, items)}
    assert set(models) == ROUTERBENCH_ONLY | SHARED | ARENA_ONLY
    n_mc = sum(g == "mc_letter" for g in graders.values())
    n_rated = sum(g == "llm_judge:rating" for g in graders.values())
    assert n_mc > 0 and n_rated > 0
    for name, m in models.items():
        kinds = {graders[i] for i in m.scores}
        expected = ({"mc_letter"} if name not in ARENA_ONLY else set()) | (
            {"llm_judge:rating"} if name not in ROUTERBENCH_ONLY else set())
        assert kinds == expected
        assert len(m.scores) == n_mc * ("mc_letter" in kinds) + n_rated * ("llm_judge:rating" in kinds)


def test_the_replay_judge_is_registered_only_for_judged_items_and_never_routed(arena, items):
    mc_only = load_repset(ROUTERBENCH_REPSET).items
    assert judge_config(arena, mc_only, "http://x/v1") is None
    judge = judge_config(arena, items, "http://x/v1")
    assert judge.name == judge.upstream_model == JUDGE_MODEL
    assert judge.enabled is False and judge.scores_file is None
    gpt4 = json.loads((ARENA_DIR / "prices.json").read_text())["gpt-4-0314"]
    assert (judge.cost.input_per_mtok, judge.cost.output_per_mtok) == (gpt4["input_per_mtok"], gpt4["output_per_mtok"])
