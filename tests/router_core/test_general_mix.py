"""The general mix: which prompts are fitted, held out or left out, K chosen by cross-validation,
and the cluster labels of a general state (on a small real copy of ../shared/data)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from router_core.embedding import (
    FAST_DIRNAME,
    embed_for_routing,
    fast_model_id,
    load_embedder,
)
from router_core.general_mix import (
    ARENA_RATED,
    ARENA_V01,
    DEFAULT_EXCLUDED,
    OPEN_ENDED,
    POOLED_NOTE,
    POOLED_TASKS,
    KScore,
    MixConfig,
    MixPrompt,
    answer_lengths,
    build_mix,
    choose_k,
    fit_general_state,
    gradable_heldout_prompts,
    leaking,
    main,
    mostly_non_ascii,
    normalised,
    pooled_clusters,
    question_stem,
    score_k,
    validation_folds,
)
from router_core.shipped import FAST_EMBEDDER_DIR, SHIPPED_STATES
from router_core.state import RouterState, state_embedder
from tests.support.shared_data import needs_shared_data, tiny_shared_data

pytestmark = needs_shared_data

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_FAST = FAST_EMBEDDER_DIR


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_shared_data(tmp_path_factory.mktemp("shared") / "data")


@pytest.fixture(scope="module")
def mix(data):
    return build_mix(data, MixConfig(cap=20))


@pytest.fixture(scope="module")
def fast(tmp_path_factory):
    """The shipped `fast` static embedder, cached in a folder of the module's own."""
    return load_embedder("fast", tmp_path_factory.mktemp("cache"), fast_dir=SHIPPED_FAST)


def test_arena_hard_v2_prompts_never_enter_the_fit_even_when_another_source_repeats_one(mix, data):
    v2 = {normalised(json.loads(line)["prompt"])
          for line in (data / "arena_bench_v1" / "prompts-arena-hard-v2.0.jsonl").read_text().splitlines()}
    assert all(p.task == "arena-hard-v2.0" for p in mix.check) and len(mix.check) == 30
    assert not v2 & {normalised(p.prompt) for p in mix.fit}
    assert "arena-hard-v0.1/planted-v2" not in {p.id for p in mix.fit}  # the v0.1 line copying a v2.0 prompt


def test_a_prompt_repeated_with_other_spacing_and_case_is_fitted_once(data):
    first = json.loads((data / "arena_bench_v1" / "prompts-arena-hard-v0.1.jsonl").read_text().splitlines()[0])
    uncapped = build_mix(data, MixConfig(cap=1000))
    fit_ids = {p.id for p in uncapped.fit}
    assert f"{ARENA_V01}/{first['id']}" in fit_ids and f"{ARENA_V01}/planted-dup" not in fit_ids
    assert uncapped.dropped["duplicate"] >= 1
    assert max(Counter(normalised(p.prompt) for p in uncapped.fit).values()) == 1


def test_no_benchmark_task_has_more_fit_prompts_than_the_cap_and_open_ended_prompts_are_all_kept(data):
    capped = build_mix(data, MixConfig(cap=7))
    counts = Counter(p.task for p in capped.fit)
    assert max(n for task, n in counts.items() if task not in OPEN_ENDED) == 7
    assert counts[ARENA_V01] == 30 and counts[ARENA_RATED] == 15  # 30 + 2 planted, less the v2.0 copy and the duplicate
    assert sum(n for why, n in capped.dropped.items() if why.startswith("over the cap")) > 0


def test_test_files_and_held_out_shares_are_never_fitted_and_excluded_tasks_are_left_out(mix):
    fit_ids = {p.id for p in mix.fit}
    held_ids = {p.id for p in mix.heldout}
    assert not fit_ids & held_ids
    assert {p.task for p in mix.fit}.isdisjoint(DEFAULT_EXCLUDED)
    held_tasks = Counter(p.task for p in mix.heldout)
    # every RouterBench test row, RouterDC's *_test files, half the rated Arena prompts and of MBPP
    assert held_tasks["routerbench/winogrande"] == 30 and held_tasks["routerdc/gsm8k"] == 30
    assert held_tasks[ARENA_RATED] == 15 and held_tasks["routerdc/mbpp"] == 15
    assert all(p.id.startswith("routerdc/mbpp/") for p in mix.heldout if p.task == "routerdc/mbpp")


def test_each_labelled_source_keeps_its_own_llms_and_only_fit_prompts(mix):
    fit_ids = {p.id for p in mix.fit}
    assert {s: len(ds.models) for s, ds in mix.labelled.items()} == {"routerbench": 11, "routerdc": 7, ARENA_RATED: 13}
    for ds in mix.labelled.values():
        assert len(ds) > 0 and set(ds.ids) <= fit_ids
        assert np.nanmin(ds.scores) >= 0 and np.nanmax(ds.scores) <= 1


def test_a_fit_prompt_holding_a_held_out_question_in_another_template_is_caught():
    # RouterBench's MBPP test prompt and RouterDC's MBPP prompt of the same task (real texts)
    rb = "Write a python function to remove first and last occurrence of a given character from the string."
    dc = ('"""\nWrite a python function to remove first and last occurrence of a given character from the '
          'string.\nassert remove_Occ("hello","l") == "heo"\n"""\n')
    other = '"""\nWrite a function to find the shared elements from the given two lists.\nassert 1 == 1\n"""\n'
    assert question_stem(dc) == rb
    assert leaking([dc, other], [rb]).tolist() == [True, False]
    assert leaking([rb], [dc]).tolist() == [True]


def test_folds_deal_every_labelled_prompt_once_and_leave_unlabelled_ones_in_training(mix):
    fold = validation_folds(mix, folds=3, seed=0)
    labelled = {i for ds in mix.labelled.values() for i in ds.ids}
    is_labelled = np.array([p.id in labelled for p in mix.fit])
    assert (fold[~is_labelled] == -1).all()
    assert set(fold[is_labelled].tolist()) == {0, 1, 2}
    assert is_labelled.sum() < len(mix.fit)  # Arena-Hard v0.1 prompts are unlabelled


def test_k_is_scored_per_source_and_only_a_k_whose_clusters_can_be_covered_is_chosen(mix, fast):
    fold = validation_folds(mix, folds=3, seed=0)
    embed = lambda texts: embed_for_routing(fast, texts, 1000)
    cover = embed([p.prompt for p in gradable_heldout_prompts(mix)])
    scores = score_k(embed([p.prompt for p in mix.fit]), mix, fold, embed([p.prompt for p in mix.check]), cover, [1, 3])
    assert [s.k for s in scores] == [1, 3]
    for s in scores:
        assert set(s.brier) == {"routerbench", "routerdc", ARENA_RATED}
        assert all(0 < b < 1 for b in s.brier.values()) and 0 <= s.drift_share <= 1
    assert scores[0].coverage == len(cover)  # one cluster holds every gradable held-out prompt
    assert choose_k(scores, floor=scores[1].coverage + 1) == 1
    uncovered = [KScore(2, {"a": 0.1}, {"a": 0.3}, 0.0, coverage=0)]
    with pytest.raises(ValueError, match="no candidate K"):
        choose_k(uncovered, floor=1)


def test_choose_k_takes_the_smallest_k_within_the_tolerance_of_the_best():
    def score(k, brier):
        return KScore(k, {"a": brier}, {"a": 0.5}, 0.0, coverage=50)

    assert choose_k([score(4, 0.1010), score(8, 0.1000), score(16, 0.0999)], tolerance=0.02) == 4
    assert choose_k([score(4, 0.1100), score(8, 0.1000), score(16, 0.0999)], tolerance=0.002) == 8


def test_a_general_state_records_its_mix_drift_threshold_and_worded_cluster_labels(mix, fast, tmp_path):
    state = fit_general_state(mix, fast, "fast", 3, 0, MixConfig(cap=20))
    state.save(tmp_path)
    loaded = RouterState.load(tmp_path)
    assert loaded.drift_threshold is not None and loaded.k == 3
    assert MixConfig.from_dict(loaded.metadata["mix"]) == MixConfig(cap=20)
    clusters = loaded.metadata["clusters"]
    assert [c["id"] for c in clusters] == [0, 1, 2]
    assert sum(c["size"] for c in clusters) == len(mix.fit)
    for c in clusters:
        top_task = c["top_tasks"][0][0]
        assert c["label"].startswith(top_task) and "%" in c["label"]
        assert 1 <= len(c["examples"]) <= 3 and all(len(e) <= 120 for e in c["examples"])
        assert sum(share for _, share in c["top_tasks"]) <= 1.0 + 1e-9


def test_the_command_writes_a_fast_state_with_its_embedder_and_a_report(data, tmp_path, capsys):
    code = main(["--data", str(data), "--out", str(tmp_path / "state"), "--cache-dir", str(tmp_path / "cache"),
                 "--fast-embedder", str(SHIPPED_FAST), "--embedders", "fast", "--ks", "1,2", "--floor", "1",
                 "--cap", "20", "--folds", "3", "--old-state", f"fast={SHIPPED_STATES['routerbench-fast']}",
                 "--report", str(tmp_path / "report.json")])
    assert code == 0
    state = RouterState.load(tmp_path / "state" / "fast")
    # the shipped model is not copied: the state records its id and loads the shipped copy
    assert not (tmp_path / "state" / "fast" / FAST_DIRNAME).exists()
    assert state_embedder(state, tmp_path / "state" / "fast").model_id == fast_model_id(SHIPPED_FAST)
    assert state.metadata["built_with"].startswith(f"python -m router_core.general_mix --data {data} --out")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["embedders"]["fast"]["k"] == state.k
    fast = report["embedders"]["fast"]
    assert 0 <= fast["old_check_beyond_drift"] <= 1
    assert fast["check_breakdown"]["all"]["n"] == 30
    scripts = {g: v["n"] for g, v in fast["check_breakdown"].items() if g.startswith("script")}
    assert sum(scripts.values()) == 30
    assert "cross-validation of K" in capsys.readouterr().out


def test_prompts_mostly_in_other_scripts_are_told_from_english_ones():
    assert mostly_non_ascii("写一首关于春天的诗") and mostly_non_ascii("напиши стихотворение о любви")
    assert not mostly_non_ascii("Write a poem about spring, café-style, in 3 verses.")
    assert not mostly_non_ascii("12345 + 678")


def test_a_cluster_made_mostly_of_ungradable_chinese_prompts_is_pooled():
    prompts = [MixPrompt(f"p{i}", "x", task) for i, task in
               enumerate([POOLED_TASKS[0]] * 3 + ["routerdc/gsm8k"] * 2 + [POOLED_TASKS[1]] + ["routerdc/mmlu"] * 2)]
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1])  # cluster 0: 3 of 5 Chinese; 1: 1 of 3; 2: empty
    assert pooled_clusters(labels, prompts, 3) == [0]


def test_a_general_state_fitted_with_chinese_pools_their_cluster_and_says_so(mix, fast, tmp_path):
    assert any(p.task in POOLED_TASKS for p in mix.fit)  # fitted, though no held-out prompt grades them
    state = fit_general_state(mix, fast, "fast", 3, 0, MixConfig(cap=20))
    state.save(tmp_path)
    loaded = RouterState.load(tmp_path)
    assert loaded.pooled and loaded.pooled == state.pooled
    for c in loaded.metadata["clusters"]:
        chinese = sum(share for task, share in c["top_tasks"] if task in POOLED_TASKS)
        assert (c["id"] in loaded.pooled) == (chinese > 0.5)
        assert c["label"].endswith(POOLED_NOTE) == (c["id"] in loaded.pooled)


def test_answer_lengths_come_from_recorded_answers_and_are_unknown_where_none_is(mix, data):
    lengths = answer_lengths(data, mix.fit)
    by_source = {s: lengths[[i for i, p in enumerate(mix.fit) if p.source == s]] for s in ("routerbench", "routerdc")}
    rated = lengths[[i for i, p in enumerate(mix.fit) if p.task == ARENA_RATED]]
    assert rated.size and np.isfinite(rated).all() and np.isfinite(by_source["routerbench"]).all()
    assert np.isnan(by_source["routerdc"]).all()  # RouterDC records no answers
    # open-ended requests draw far longer answers than multiple-choice questions
    assert np.median(rated) > 3 * np.median(by_source["routerbench"])


def test_a_general_state_prices_its_open_ended_clusters_longest(mix, fast, data):
    state = fit_general_state(mix, fast, "fast", 3, 0, MixConfig(cap=20), answer_lengths(data, mix.fit))
    assert state.output_scale is not None and state.output_scale.shape == (3,)
    share = {c["id"]: dict(c["top_tasks"]).get(ARENA_RATED, 0) + dict(c["top_tasks"]).get(ARENA_V01, 0)
             for c in state.metadata["clusters"]}
    most_open = max(share, key=share.get)
    assert int(np.argmax(state.output_scale)) == most_open
    assert fit_general_state(mix, fast, "fast", 3, 0, MixConfig(cap=20)).output_scale is None
