"""On the demo, held-out RouterBench prompts sent through the gateway with the openai SDK are
routed as the cost weight says, and what was routed is judged by the models' recorded labels."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from openai import OpenAI

N_PROMPTS = 150


@pytest.fixture(scope="module")
def held_out(routerbench, repset_ids, test_split_ids) -> list[int]:
    """Rows of RouterBench test prompts that are not in the representative set (profiles never saw them)."""
    unseen = set(test_split_ids) - set(repset_ids)
    rows = [i for i, pid in enumerate(routerbench.ids) if pid in unseen]
    rng = np.random.default_rng(7)
    return sorted(rng.choice(rows, size=N_PROMPTS, replace=False).tolist())


def route_all(base_url: str, prompts: list[str], model: str) -> list[str]:
    """The model that answered each prompt, by the x-uniroute-model header."""
    client = OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)

    def one(prompt: str) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": prompt}])
        completion = raw.parse()
        assert completion.choices[0].message.content
        return raw.headers["x-uniroute-model"]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, prompts))


def outcome(routerbench, rows: list[int], answered: list[str]) -> tuple[float, float]:
    """Recorded mean score and mean cost of the answering models on those prompts."""
    col = {m: j for j, m in enumerate(routerbench.models)}
    js = np.array([col[m] for m in answered])
    return float(routerbench.scores[rows, js].mean()), float(routerbench.costs[rows, js].mean())


def test_cost_weight_moves_traffic_from_best_to_cheap_and_middle_weight_pays_off(demo_gateway, routerbench, held_out):
    prompts = [routerbench.prompts[i] for i in held_out]
    mean_cost = np.nanmean(routerbench.costs, axis=0)
    mean_score = np.nanmean(routerbench.scores, axis=0)
    cheap = {m for m, c in zip(routerbench.models, mean_cost) if c <= np.median(mean_cost)}
    best = routerbench.models[int(np.argmax(mean_score))]

    at_high = route_all(demo_gateway, prompts, "uniroute:50")
    at_zero = route_all(demo_gateway, prompts, "uniroute:0")
    at_mid = route_all(demo_gateway, prompts, "uniroute:0.2")

    assert np.mean([m in cheap for m in at_high]) >= 0.9
    assert np.mean([m == best for m in at_zero]) >= 0.5

    cheapest = routerbench.models[int(np.argmin(mean_cost))]
    score_mid, cost_mid = outcome(routerbench, held_out, at_mid)
    score_cheapest, _ = outcome(routerbench, held_out, [cheapest] * len(held_out))
    _, cost_best = outcome(routerbench, held_out, [best] * len(held_out))
    assert score_mid > score_cheapest
    assert cost_mid < cost_best
