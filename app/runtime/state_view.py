"""What the router's state holds, for operators (`GET /admin/state`, `uniroute state show`).

Per cluster: its label and training size (from the state's metadata `clusters`, when the state
records them), the representative items in it with their graders (`llm_judge` is written
`llm_judge:correct`), a few example prompts (from the metadata, else the representative items
nearest the centroid), and whether it is below the coverage floor: fewer representative items
than `coverage_floor`, so a new model's profile says little about it.
"""
from __future__ import annotations

import logging
from collections import Counter

import numpy as np

from router_core.cluster_summary import nearest_examples
from router_core.embedding import embed_for_routing
from router_core.judging import JUDGE_PREFIX, parse_judge_grader
from router_core.router import UniRouter

log = logging.getLogger("uniroute")


def grader_name(grader: str) -> str:
    """The grader as shown: a judge always with its kind (`llm_judge:<kind>`)."""
    return f"{JUDGE_PREFIX}:{parse_judge_grader(grader)}" if grader.startswith(JUDGE_PREFIX) else grader


def _metadata_clusters(router: UniRouter) -> dict[int, dict]:
    """The state's own per-cluster notes by id, read defensively (any shape may be there)."""
    entries = router.state.metadata.get("clusters")
    if not isinstance(entries, list):
        return {}
    return {e["id"]: e for e in entries
            if isinstance(e, dict) and isinstance(e.get("id"), int) and 0 <= e["id"] < router.n_clusters}


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def repset_examples(router: UniRouter, n: int = 3) -> list[list[str]]:
    """Per cluster, the representative items nearest its centroid (embeds the set: call it off
    the event loop)."""
    assert router.repset is not None
    prompts = [item.prompt for item in router.repset.repset.items]
    emb = embed_for_routing(router.embedder, prompts, router.state.max_chars)
    return nearest_examples(router.state.centroids, emb, prompts, n)


def state_fields(router: UniRouter) -> dict:
    """The state's identity and settings."""
    state, meta = router.state, router.state.metadata
    repset = router.repset.repset if router.repset is not None else None
    return {"version": state.version, "embedder": state.embedder, "k": state.k, "method": state.method,
            "drift_threshold": state.drift_threshold, "max_chars": state.max_chars, "prior": state.prior,
            "n_prompts": meta.get("n_prompts"), "created": meta.get("created"),
            "training_set": meta.get("training_set"),
            "repset_version": repset.version if repset else None, "repset_items": len(repset.items) if repset else 0,
            "routable_models": len(router.table.models)}


def clusters_view(router: UniRouter, floor: int, examples: list[list[str]] | None) -> list[dict]:
    """Per cluster: id, label, size, repset_items, graders, examples, pooled (profiled on every
    item, `RouterState.profile_weights`), below_floor, output_scale (the factor a model's mean
    output tokens is multiplied by for a prompt there; None when the state has no scale).
    `examples` (per cluster) stand in where the state's metadata has none."""
    assert router.repset is not None
    pooled = set(router.state.pooled)
    own = router.repset.weights.copy()
    own[:, list(pooled)] = 0.0  # every item weighs 1 in a pooled cluster: its own cluster is the rest
    labels = np.where(own.sum(axis=1) > 0, own.argmax(axis=1), -1)
    items = router.repset.repset.items
    meta = _metadata_clusters(router)
    scale = router.table.output_scale
    out = []
    for k in range(router.n_clusters):
        members = np.arange(len(items)) if k in pooled else np.flatnonzero(labels == k)
        graders = Counter(grader_name(items[i].grader) for i in members)
        note = meta.get(k, {})
        own = _strings(note.get("examples"))
        size = note.get("size")
        out.append({"id": k, "label": note.get("label") if isinstance(note.get("label"), str) else None,
                    "size": size if isinstance(size, int) else None,
                    "top_tasks": note.get("top_tasks") if isinstance(note.get("top_tasks"), list) else None,
                    "repset_items": int(members.size), "graders": dict(sorted(graders.items())),
                    "examples": own or (examples[k] if examples else []),
                    "pooled": k in pooled, "below_floor": int(members.size) < floor,
                    "output_scale": None if scale is None else round(float(scale[k]), 4)})
    return out


def log_coverage(router: UniRouter, floor: int) -> None:
    """Warn at start-up about clusters the representative set covers with fewer than `floor` items."""
    thin = [c for c in clusters_view(router, floor, None) if c["below_floor"]]
    for c in thin:
        log.warning("cluster %d%s has %d representative items, below the coverage floor of %d: profiles say "
                    "little about it", c["id"], f" ({c['label']})" if c["label"] else "", c["repset_items"], floor)
