"""benchmarks.pool_runs: paired differences pooled over `uniroute eval` runs of other seeds."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.pool_runs import main, pool_files
from router_core.evaluation import mean_ci


def write_run(path, values: np.ndarray, seed: int, dataset: str = "d") -> str:
    mean, lo, hi = mean_ci(values)
    run = {"dataset": dataset, "trials": int(values.size), "config": {"seed": seed},
           "paired": {"a - b": {"area_diff": mean, "ci": [lo, hi], "wins": int((values > 0).sum())}}}
    path.write_text(json.dumps(run))
    return str(path)


def test_pooling_the_runs_gives_the_interval_of_all_their_trials_together(tmp_path):
    rng = np.random.default_rng(0)
    runs = [rng.normal(0.004, 0.01, 20), rng.normal(-0.002, 0.01, 40), rng.normal(0.001, 0.005, 200)]
    paths = [write_run(tmp_path / f"run{i}.json", v, seed=i) for i, v in enumerate(runs)]
    pooled = pool_files(paths)["pairs"]["a - b"]
    mean, lo, hi = mean_ci(np.concatenate(runs))
    assert pooled["trials"] == 260
    assert (pooled["area_diff"], *pooled["ci"]) == pytest.approx((mean, lo, hi), rel=1e-9)
    assert pooled["per_run"] == pytest.approx([v.mean() for v in runs])


def test_runs_of_other_datasets_or_of_one_seed_are_refused(tmp_path, capsys):
    values = np.array([0.001, 0.002, -0.001])
    a = write_run(tmp_path / "a.json", values, seed=0)
    with pytest.raises(ValueError, match="different datasets"):
        pool_files([a, write_run(tmp_path / "b.json", values, seed=1, dataset="other")])
    with pytest.raises(SystemExit):  # the same trials twice would fake a narrower interval
        main([a, write_run(tmp_path / "c.json", values, seed=0)])
    assert "share a seed" in capsys.readouterr().err
