"""The general representative set: gradable held-out prompts only, references from the data,
every cluster of every state covered to its floor (on a small real copy of ../shared/data)."""
from __future__ import annotations

import gzip
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from router_core import general_repset as gr
from router_core.embedding import FAST_DIRNAME, load_embedder
from router_core.general_mix import MixConfig, build_mix, fit_general_state, normalised
from router_core.grading import grade
from router_core.repset import load_repset
from router_core.shipped import FAST_EMBEDDER_DIR
from tests.support.shared_data import needs_shared_data, tiny_shared_data

SHIPPED_FAST = FAST_EMBEDDER_DIR
CONFIG = MixConfig(cap=20)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_shared_data(tmp_path_factory.mktemp("shared") / "data")


@pytest.fixture(scope="module")
def mix(data):
    return build_mix(data, CONFIG)


@pytest.fixture(scope="module")
def states(mix, tmp_path_factory) -> dict[str, Path]:
    """Two small fast states on the mix (K = 2 and 3), each with its embedder beside it."""
    cache = tmp_path_factory.mktemp("cache")
    embedder = load_embedder("fast", cache, fast_dir=SHIPPED_FAST)
    out = {}
    for k in (2, 3):
        directory = tmp_path_factory.mktemp(f"state{k}")
        fit_general_state(mix, embedder, "fast", k, 0, CONFIG).save(directory)
        shutil.copytree(SHIPPED_FAST, directory / FAST_DIRNAME)
        out[f"k{k}"] = directory
    return out


@needs_shared_data
def test_candidates_are_held_out_prompts_with_references_from_the_data(mix, data):
    items, skipped = gr.gradable_heldout(mix, data)
    held = {p.id: p for p in mix.heldout}
    fit_keys = {normalised(p.prompt) for p in mix.fit}
    assert {i.grader for i in items} == {"mc_letter", "numeric", "code_tests", "llm_judge:rating"}
    gsm8k = {json.loads(line)["question"].strip(): json.loads(line)["answer"]
             for line in (data / "references" / "gsm8k_test.jsonl").read_text().splitlines()}
    with gzip.open(data / "references" / "HumanEval.jsonl.gz", "rt") as fh:
        humaneval = {r["prompt"].strip(): r for r in map(json.loads, fh)}
    routing = {f"arena-bench-v1/{r['id']}": r["reference"]
               for r in map(json.loads, (data / "arena_bench_v1" / "routing.jsonl").read_text().splitlines())}
    for item in items:
        assert held[item.id].prompt == item.prompt  # a KeyError would be a prompt from outside the held-out set
        assert normalised(item.prompt) not in fit_keys
        if item.task == "gsm8k":
            assert gsm8k[item.prompt.strip()].endswith(f"#### {item.reference}")
            assert grade("numeric", f"The answer is {item.reference}.", item.reference) == 1.0
        elif item.task == "humaneval":
            he = humaneval[item.prompt.strip()]
            assert item.reference.startswith(he["test"]) and f"check({he['entry_point']})" in item.reference
        elif item.task == "mbpp":
            assert item.reference.startswith("assert ")
            assert all(line in item.prompt for line in item.reference.splitlines())
        elif item.grader == "llm_judge:rating":
            assert item.reference == routing[item.id]
        else:
            assert item.grader == "mc_letter" and grade("mc_letter", item.reference, item.reference) == 1.0
    assert skipped["routerdc/mmlu: no grader in the data"] == 30


@needs_shared_data
def test_every_cluster_of_every_state_gets_its_floor_from_held_out_prompts_only(data, mix, states, tmp_path):
    floor, target = 4, 6
    repset, coverage = gr.build_general_repset(data, states, tmp_path / "set.jsonl", tmp_path / "cache", floor, target)
    assert [c.name for c in coverage] == ["k2", "k3"]
    for cov in coverage:
        per_cluster = [sum(g.values()) for g in cov.graders]
        assert len(per_cluster) == int(cov.name[1]) and min(per_cluster) >= floor
        assert cov.clusters[0]["label"] in cov.table()
    held = {p.id for p in mix.heldout}
    assert {i.id for i in repset.items} <= held
    loaded = load_repset(tmp_path / "set.jsonl")  # code_tests and llm_judge:rating load unvalidated
    assert loaded.version == repset.version and len(loaded.items) == len(repset.items)


@needs_shared_data
def test_a_cluster_that_cannot_reach_its_floor_fails_the_build_and_writes_nothing(data, states, tmp_path):
    with pytest.raises(gr.GeneralRepsetError, match="fewer than 500"):
        gr.build_general_repset(data, states, tmp_path / "set.jsonl", tmp_path / "cache", floor=500, target=500)
    assert not (tmp_path / "set.jsonl").exists()


@needs_shared_data
def test_states_fitted_on_different_mixes_are_refused(data, states, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(states["k2"], other)
    meta = json.loads((other / "state.json").read_text())
    meta["metadata"]["mix"]["cap"] = 99
    (other / "state.json").write_text(json.dumps(meta))
    with pytest.raises(gr.GeneralRepsetError, match="same general mix"):
        gr.build_general_repset(data, {"a": states["k3"], "b": other}, tmp_path / "set.jsonl", tmp_path / "cache")


@needs_shared_data
def test_states_whose_mixes_differ_only_in_the_tasks_left_out_share_one_set(data, states, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(states["k2"], other)
    meta = json.loads((other / "state.json").read_text())
    meta["metadata"]["mix"]["excluded"] = ["routerdc/ceval", "routerdc/cmmlu"]  # the held-out prompts stay the same
    (other / "state.json").write_text(json.dumps(meta))
    repset, coverage = gr.build_general_repset(data, {"a": states["k3"], "b": other}, tmp_path / "set.jsonl",
                                               tmp_path / "cache", 4, 6)
    assert [c.name for c in coverage] == ["a", "b"] and repset.items


@needs_shared_data
def test_the_command_prints_counts_and_a_table_per_state(data, states, tmp_path, capsys):
    code = gr.main(["--data", str(data), "--state", f"k2={states['k2']}", "--state", f"k3={states['k3']}",
                 "--out", str(tmp_path / "set.jsonl"), "--cache-dir", str(tmp_path / "cache"),
                 "--floor", "3", "--target", "5", "--readme", str(tmp_path / "README.md")])
    out = capsys.readouterr().out
    assert code == 0 and "graders {" in out and out.count("| cluster | label |") == 2
    readme = (tmp_path / "README.md").read_text()
    assert load_repset(tmp_path / "set.jsonl").version in readme and "--floor 3 --target 5" in readme
    assert readme.count("| cluster | label |") == 2 and "Apache-2.0" in readme
    assert f"# {states['k2']}: built without a recorded command" in readme  # fitted in-process, not by the command


def test_stratified_selection_fills_every_cluster_of_both_states_and_prefers_items_filling_both():
    # 2 states; state A has clusters 0/1, state B has clusters 0/1/2; cluster B2 is rare (4 items)
    clusters = np.array([[0, 0]] * 30 + [[1, 1]] * 30 + [[1, 2]] * 4 + [[0, 2]] * 4)
    graders = ["numeric"] * 20 + ["mc_letter"] * 48
    picked = gr.select_stratified(clusters, graders, floor=5, target=8, seed=1)
    a = np.bincount(clusters[picked, 0], minlength=2)
    b = np.bincount(clusters[picked, 1], minlength=3)
    assert a.min() >= 8 and b[:2].min() >= 8
    assert b[2] == 8  # every rare item taken: the floor, then the target, where items exist
    assert len(set(picked.tolist())) == len(picked)


def test_within_a_cluster_the_grader_it_has_least_of_is_taken_first():
    clusters = np.zeros((40, 1), dtype=int)
    graders = ["numeric"] * 36 + ["code_tests"] * 4
    picked = gr.select_stratified(clusters, graders, floor=4, target=8, seed=0)
    assert Counter(graders[i] for i in picked) == {"numeric": 4, "code_tests": 4}


def test_a_floor_above_the_target_is_refused():
    with pytest.raises(gr.GeneralRepsetError, match="floor"):
        gr.select_stratified(np.zeros((3, 1), dtype=int), ["numeric"] * 3, floor=5, target=4)


def test_no_item_is_chosen_for_a_pooled_cluster_every_item_profiles():
    # state A: clusters 0/1; cluster 1 is pooled and holds 10 stray candidates
    clusters = np.array([[0]] * 30 + [[1]] * 10)
    picked = gr.select_stratified(clusters, ["numeric"] * 40, floor=5, target=8, seed=0, pooled=[(1,)])
    assert (clusters[picked, 0] == 0).all() and len(picked) == 8
