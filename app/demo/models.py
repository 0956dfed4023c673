"""The demo's LLMs: every LLM with recorded answers, 17 in all (RouterBench's 11 and the six
arena-bench-v1 LLMs RouterBench lacks), each scored on the representative items from its recorded
labels and priced from the recorded data.

Scores, by item (matched by id, then by prompt text with whitespace runs collapsed, as the
replay upstream finds its answers):
- an item whose prompt is a RouterBench row: that row's recorded 0/1 label for the LLM;
- an `llm_judge:rating` item whose prompt is an arena-bench-v1 prompt: GPT-4's recorded rating
  n of the LLM's answer as (n - 1) / 9, the score `router_core.judging` gives a rating;
- anything else, or an LLM with no recorded answer for the item: absent, so the item counts as
  unanswered for that LLM, never as wrong (what profiling it through the replay upstream gives).
An LLM scored on no item of the set is left out (on the multiple-choice set `routerbench_mc`, the
six arena-only LLMs; on the default general set none: 72 multiple-choice and 138 arena rating
items carry recorded labels, its 233 maths and code items none).

Prices: a RouterBench LLM costs its mean recorded RouterBench cost per request (USD), as before.
An arena-only LLM has no recorded costs: it is priced per token from arena-bench-v1's
`prices.json` (USD per million input/output tokens); its expected cost then follows
`router_core.pricing`'s token rule (4 characters a token for the prompt, the gateway's
`expected_output_tokens` for the answer until measured) and its billed cost the replay
upstream's usage, counted by that same rule. The two kinds are comparable only roughly:
RouterBench's means are over short multiple-choice answers.

The judge: with `llm_judge` items in the set, `uniroute demo` also registers the replay judge
(`judge_config`) and names it `judge_model`, so a model registered in the demo is profiled on
every kind of item. It is registered disabled (`enabled: false`), so it is never routed nor
served to clients: an earlier demo registered it routable with score 0 on every item, which the
support guard then ranked first in the clusters where no recorded LLM has answers, so "hi" got
the judge's refusal. It is priced as GPT-4 (gpt-4-0314's list price; the recording names its
judge only as GPT-4), so its calls count at a judge's real price.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.demo.arena import ArenaRecords
from app.demo.replay_judge import JUDGE_MODEL
from app.demo.replay_upstream import normalise_whitespace
from app.runtime.config import ModelConfig, PriceIn
from router_core.datasets import RoutingDataset
from router_core.pricing import Price
from router_core.repset import RepItem
from router_core.router import UniRouter

RATING_GRADER = "llm_judge:rating"
JUDGE_PRICED_AS = "gpt-4-0314"


@dataclass(frozen=True)
class DemoModel:
    """A recorded LLM as the demo registers it."""

    name: str
    price: Price
    scores: dict[str, float]


def _routerbench_rows(dataset: RoutingDataset, items: Sequence[RepItem]) -> dict[str, int]:
    """item id -> its RouterBench row, by id, then by prompt text (the first row with it)."""
    by_id = {pid: i for i, pid in enumerate(dataset.ids)}
    by_text: dict[str, int] = {}
    for i, prompt in enumerate(dataset.prompts):
        by_text.setdefault(normalise_whitespace(prompt), i)
    rows = {}
    for item in items:
        row = by_id.get(item.id, by_text.get(normalise_whitespace(item.prompt)))
        if row is not None:
            rows[item.id] = row
    return rows


def _arena_ids(arena: ArenaRecords, items: Sequence[RepItem]) -> dict[str, str]:
    """item id -> its arena prompt id, for the `llm_judge:rating` items with an arena prompt."""
    by_text = {normalise_whitespace(a.prompt): pid for pid, a in arena.items.items()}
    found = {item.id: by_text.get(normalise_whitespace(item.prompt)) for item in items
             if item.grader == RATING_GRADER}
    return {iid: pid for iid, pid in found.items() if pid is not None}


def demo_models(dataset: RoutingDataset, arena: ArenaRecords | None, items: Sequence[RepItem]) -> list[DemoModel]:
    """One DemoModel per recorded LLM (`dataset`'s in its order, then `arena`'s others, sorted),
    scored on the representative `items` it has recorded labels for (module docstring).
    `arena` None: `dataset`'s LLMs alone."""
    arena = arena if arena is not None else ArenaRecords({}, {}, {})
    rows = _routerbench_rows(dataset, items)
    arena_ids = _arena_ids(arena, items)
    models = []
    for j, name in enumerate(dataset.models):
        column = dataset.scores[:, j]
        scores = {iid: float(column[i]) for iid, i in rows.items() if not np.isnan(column[i])}
        scores.update(_rated(arena, name, arena_ids))
        price = float(np.nanmean(dataset.costs[:, j])) if dataset.costs is not None else 0.0
        models.append(DemoModel(name, Price(per_request=price), scores))
    for name in sorted(set(arena.models) - set(dataset.models)):
        models.append(DemoModel(name, arena.prices[name], _rated(arena, name, arena_ids)))
    return models


def _rated(arena: ArenaRecords, model: str, arena_ids: dict[str, str]) -> dict[str, float]:
    """`model`'s recorded rating scores on the items of `arena_ids` it was rated on."""
    answers = arena.answers.get(model, {})
    scores = {iid: answers[pid].score for iid, pid in arena_ids.items() if pid in answers}
    return {iid: s for iid, s in scores.items() if s is not None}


def add_demo_models(router: UniRouter, dataset: RoutingDataset, arena: ArenaRecords | None) -> int:
    """Make the recorded LLMs routable in `router`, as `uniroute demo` registers them; how many
    were (those scored on some representative item)."""
    if router.repset is None:
        raise ValueError("the demo models are profiled on a representative set; the router has none")
    scored = [m for m in demo_models(dataset, arena, router.repset.repset.items) if m.scores]
    for m in scored:
        router.add_model(m.name, m.price, scores=m.scores)
    return len(scored)


def demo_configs(dataset: RoutingDataset, arena: ArenaRecords | None, items: Sequence[RepItem], base_url: str,
                 workdir: Path) -> list[ModelConfig]:
    """The demo models scored on some item of `items`, as config entries, their scores written
    under `workdir`."""
    scores_dir = workdir / "scores"
    scores_dir.mkdir(parents=True, exist_ok=True)
    configs = []
    for j, m in enumerate(demo_models(dataset, arena, items)):
        if not m.scores:
            continue
        path = scores_dir / f"{j:02d}.json"
        path.write_text(json.dumps(m.scores))
        configs.append(ModelConfig(name=m.name, base_url=base_url, upstream_model=m.name,
                                   cost=PriceIn(**m.price.to_dict()), scores_file=str(path)))
    return configs


def judge_config(arena: ArenaRecords, items: Sequence[RepItem], base_url: str) -> ModelConfig | None:
    """The replay judge as a config entry when `items` hold `llm_judge` items, else None;
    disabled, so never routed (module docstring)."""
    if not any(item.grader.startswith("llm_judge") for item in items):
        return None
    return ModelConfig(name=JUDGE_MODEL, base_url=base_url, upstream_model=JUDGE_MODEL,
                       cost=PriceIn(**arena.prices[JUDGE_PRICED_AS].to_dict()), enabled=False)
