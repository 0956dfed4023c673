"""The router's learned state: how prompts map to clusters, saved as npz + json.

A state holds what is fitted once on training prompts (centroids, and theta for the learned
map) plus what is needed to reproduce the prompt features (embedder spec, max_chars). The
LLMs' profiles Psi are not part of it: they are computed per LLM from the representative set
with `cluster_weights` and `profiles.soft_profiles`, so LLMs come and go without a refit.
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from router_core import clustering
from router_core.drift import (
    DRIFT_QUANTILE,
    distance_from,
    drift_threshold,
    nearest_distance,
)
from router_core.embedding import FAST_DIRNAME, Embedder, fast_model_id, load_embedder
from router_core.learned_map import LearnedMapConfig, fit_learned_map, soft_assign

METHODS = ("uniroute_kmeans", "uniroute_learned_map")
_ARRAYS, _META = "state.npz", "state.json"


@dataclass
class RouterState:
    """Fitted cluster map. `prior` is the Psi shrinkage (pseudo-counts) to use with it."""

    embedder: str
    max_chars: int
    centroids: np.ndarray  # (K, d) float32, unit norm
    theta: np.ndarray | None = None  # (K, d) float32, learned map only
    method: str = "uniroute_kmeans"
    prior: float = 1.0
    metadata: dict[str, Any] = field(default_factory=dict)
    # Clusters profiled on the whole representative set (see `profile_weights`).
    pooled: tuple[int, ...] = ()
    # (K,) answer length each cluster's prompts draw relative to the average prompt, measured on
    # the training LLMs' answers (router_core.output_scale); None: the same everywhere.
    output_scale: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {METHODS}")
        self.centroids = np.ascontiguousarray(self.centroids, dtype=np.float32)
        if self.centroids.ndim != 2:
            raise ValueError("centroids must be (K, d)")
        if (self.method == "uniroute_learned_map") != (self.theta is not None):
            raise ValueError("theta is required by, and only by, the learned map")
        if self.theta is not None:
            self.theta = np.ascontiguousarray(self.theta, dtype=np.float32)
            if self.theta.shape != self.centroids.shape:
                raise ValueError(f"theta {self.theta.shape} must match centroids {self.centroids.shape}")
        # The prior weighs the model's overall mean in every Ψ and sets the support guard's floor:
        # NaN made every profile its overall mean (no cluster told apart) and every interval NaN.
        if not (isinstance(self.prior, numbers.Real) and math.isfinite(self.prior) and self.prior >= 0):
            raise ValueError(f"prior must be a finite number >= 0, got {self.prior!r}")
        self.pooled = tuple(sorted({int(c) for c in self.pooled}))
        if any(not 0 <= c < self.k for c in self.pooled):
            raise ValueError(f"pooled clusters {list(self.pooled)} must lie in [0, {self.k})")
        if self.output_scale is not None:
            self.output_scale = np.asarray(self.output_scale, dtype=np.float64)
            if self.output_scale.shape != (self.k,) or not (np.isfinite(self.output_scale).all()
                                                            and (self.output_scale > 0).all()):
                raise ValueError(f"output_scale must be {self.k} positive numbers, one per cluster")

    @property
    def k(self) -> int:
        """Number of clusters."""
        return int(self.centroids.shape[0])

    @property
    def version(self) -> str:
        """A short id of the clusters: profiles made under another state don't fit this one."""
        digest = hashlib.sha256(self.centroids.tobytes())
        if self.pooled:  # pooling changes every profile; a state without it keeps its old id
            digest.update(json.dumps(list(self.pooled)).encode())
        return digest.hexdigest()[:12]

    @property
    def scale_version(self) -> str | None:
        """A short id of the output scale, None without one. A state whose scale alone changed
        keeps its `version` (every profile still fits) but prices prompts anew."""
        if self.output_scale is None:
            return None
        return hashlib.sha256(self.output_scale.tobytes()).hexdigest()[:12]

    @property
    def dim(self) -> int:
        """Embedding dimension the state expects."""
        return int(self.centroids.shape[1])

    def cluster_weights(self, emb: np.ndarray) -> np.ndarray:
        """Cluster weights (n, K): one-hot nearest centroid (K-means) or Phi (learned map)."""
        return self.weights_and_distance(emb)[0]

    def weights_and_distance(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`cluster_weights` and `nearest_distance` of the same embeddings, from one
        nearest-centroid search (a routed prompt needs both: its decision and the drift monitor)."""
        emb = self._check(emb)
        labels, sims = clustering.assign(self.centroids, emb)
        weights = soft_assign(self.theta, emb) if self.theta is not None else np.eye(self.k, dtype=np.float32)[labels]
        return weights, distance_from(sims)

    def profile_weights(self, emb: np.ndarray) -> np.ndarray:
        """Weights (n, K) of representative prompts in the profiles: `cluster_weights`, except
        that every prompt weighs 1 in a pooled cluster. A pooled cluster is a region of the
        training prompts that no gradable prompt falls in (text the embedder cannot read, such as
        Chinese under `fast`): routing there uses each model's record on the whole set rather
        than a guess from a few stray prompts, and the drift monitor still knows the region."""
        weights = self.cluster_weights(emb)
        if self.pooled:
            weights[:, list(self.pooled)] = 1.0
        return weights

    @property
    def drift_threshold(self) -> float | None:
        """Cosine distance to the nearest centroid that DRIFT_QUANTILE of the training prompts stay
        within (router_core.drift); None for a state built before it was recorded."""
        value = self.metadata.get("drift_threshold")
        return None if value is None else float(value)

    def nearest_distance(self, emb: np.ndarray) -> np.ndarray:
        """(n,) cosine distance of each embedding to its nearest centroid."""
        return nearest_distance(self.centroids, self._check(emb))

    def assign(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centroid of each prompt and its cosine similarity (for logs and displays)."""
        return clustering.assign(self.centroids, self._check(emb))

    def _check(self, emb: np.ndarray) -> np.ndarray:
        emb = np.asarray(emb, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != self.dim:
            raise ValueError(f"embeddings must be (n, {self.dim}) for this state, got {emb.shape}")
        return emb

    def save(self, directory: str | Path) -> None:
        """Write state.npz (arrays) and state.json (everything else) into `directory`."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        arrays = {"centroids": self.centroids}
        if self.theta is not None:
            arrays["theta"] = self.theta
        if self.output_scale is not None:
            arrays["output_scale"] = self.output_scale
        np.savez(d / _ARRAYS, **arrays)
        meta = {"embedder": self.embedder, "max_chars": self.max_chars, "method": self.method,
                "prior": self.prior, "k": self.k, "dim": self.dim, "metadata": self.metadata}
        if self.pooled:
            meta["pooled_clusters"] = list(self.pooled)
        (d / _META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> "RouterState":
        """Read a state written by `save`; a missing or damaged state raises ValueError."""
        d = Path(directory)
        if not d.is_dir():
            from router_core.shipped import SHIPPED_STATES

            # Most often a shipped state's name misspelt: say which names there are.
            raise ValueError(f"no valid router state in {d}: no such folder (a `uniroute build-state` folder, or "
                             f"a shipped state: {', '.join(SHIPPED_STATES)})")
        try:
            meta = json.loads((d / _META).read_text())
            with np.load(d / _ARRAYS) as z:
                arrays = {name: z[name] for name in z.files}
            return cls(embedder=str(meta["embedder"]), max_chars=int(meta["max_chars"]),
                       centroids=arrays["centroids"], theta=arrays.get("theta"),
                       method=str(meta["method"]), prior=float(meta.get("prior", 1.0)),
                       metadata=dict(meta.get("metadata", {})),
                       pooled=tuple(meta.get("pooled_clusters", ())), output_scale=arrays.get("output_scale"))
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"no valid router state in {d}: {exc}") from exc


def build_state(
    prompts: list[str],
    embedder: Any,
    k: int,
    seed: int = 0,
    method: str = "uniroute_kmeans",
    *,
    embedder_spec: str,
    max_chars: int,
    losses: np.ndarray | None = None,
    prior: float = 1.0,
    learned_map: LearnedMapConfig = LearnedMapConfig(),
    metadata: dict[str, Any] | None = None,
) -> RouterState:
    """Fit a state on training prompts. The learned map also needs `losses` (n, M) of the
    training LLMs on those prompts (1 - score, NaN = unlabelled)."""
    from router_core.embedding import embed_for_routing

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if method == "uniroute_learned_map" and losses is None:
        raise ValueError("the learned map needs the training LLMs' labels on the prompts")
    emb = embed_for_routing(embedder, prompts, max_chars)
    centroids = clustering.fit_kmeans(emb, k, seed=seed)
    theta = None
    if method == "uniroute_learned_map":
        theta = fit_learned_map(emb, losses, centroids, replace(learned_map, seed=seed))
    meta = {"n_prompts": len(prompts), "seed": seed, "embedder_id": embedder.model_id,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "drift_threshold": drift_threshold(nearest_distance(centroids, emb)), "drift_quantile": DRIFT_QUANTILE,
            **(metadata or {})}
    return RouterState(embedder_spec, max_chars, centroids, theta, method, prior, meta)


def state_embedder(state: RouterState, directory: str | Path) -> Embedder:
    """The embedder a saved state was fitted with; for `fast`, the very model stored beside it,
    or the one shipped with uniroute when the state records that very model's id (the shipped
    states share one copy). Never another distillation, whose vector space would differ."""
    fast_dir = Path(directory) / FAST_DIRNAME
    if state.embedder == "fast" and not fast_dir.exists():
        from router_core.shipped import FAST_EMBEDDER_DIR

        recorded = state.metadata.get("embedder_id")
        if recorded is not None and recorded == fast_model_id(FAST_EMBEDDER_DIR):
            fast_dir = FAST_EMBEDDER_DIR
    embedder = load_embedder(state.embedder, None, fast_dir)
    recorded = state.metadata.get("embedder_id")
    if recorded is not None and recorded != embedder.model_id:
        raise ValueError(f"the router state in {directory} was fitted with embedder {recorded}, "
                         f"not {embedder.model_id}: its clusters do not fit this embedder's vectors")
    return embedder
