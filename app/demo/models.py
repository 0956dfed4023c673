"""The demo's LLMs: each dataset model with its recorded labels on the representative prompts
as its scores and its mean recorded cost per request as its price."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.runtime.config import ModelConfig, PriceIn
from router_core.datasets import RoutingDataset
from router_core.pricing import Price
from router_core.router import UniRouter


@dataclass(frozen=True)
class DemoModel:
    """A dataset model as the demo registers it."""

    name: str
    price: Price
    scores: dict[str, float]


def demo_models(dataset: RoutingDataset, repset_ids: list[str]) -> list[DemoModel]:
    """One DemoModel per model of `dataset`, scored on the representative prompts it labels. An
    item is the dataset's row of the same id, or of its id's last part: the general set names
    items `<source>/<task>/<id in the source>`."""
    row = {pid: i for i, pid in enumerate(dataset.ids)}
    found = {}
    for pid in repset_ids:
        i = row.get(pid, row.get(pid.rsplit("/", 1)[-1]))
        if i is not None:
            found[pid] = i
    models = []
    for j, name in enumerate(dataset.models):
        scores = {pid: float(dataset.scores[i, j]) for pid, i in found.items() if not np.isnan(dataset.scores[i, j])}
        price = float(np.nanmean(dataset.costs[:, j])) if dataset.costs is not None else 0.0
        models.append(DemoModel(name, Price(per_request=price), scores))
    return models


def add_demo_models(router: UniRouter, dataset: RoutingDataset) -> None:
    """Make `dataset`'s models routable in `router`, as `uniroute demo` registers them."""
    if router.repset is None:
        raise ValueError("the demo models are profiled on a representative set; the router has none")
    for m in demo_models(dataset, router.repset.ids):
        if m.scores:
            router.add_model(m.name, m.price, scores=m.scores)


def demo_configs(dataset: RoutingDataset, repset_ids: list[str], base_url: str, workdir: Path) -> list[ModelConfig]:
    """The demo models as config entries, their scores written under `workdir`."""
    scores_dir = workdir / "scores"
    scores_dir.mkdir(parents=True, exist_ok=True)
    configs = []
    for j, m in enumerate(demo_models(dataset, repset_ids)):
        path = scores_dir / f"{j:02d}.json"
        path.write_text(json.dumps(m.scores))
        configs.append(ModelConfig(name=m.name, base_url=base_url, upstream_model=m.name,
                                   cost=PriceIn(**m.price.to_dict()), scores_file=str(path)))
    return configs
