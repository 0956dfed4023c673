"""Routing decisions for the gateway: prompt text -> cluster weights -> ranked registered models.

The rule is router_core's; this module only turns registry records into the arrays it takes
(Ψ as an (M, K) matrix, expected costs as an (M,) vector) and keeps them current.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from threading import Lock

import numpy as np

from app.profiles import RepsetClusters
from models_registry.records import ModelRecord
from router_core import policy
from router_core.calibration import Calibration, calibrate
from router_core.drift import DriftMonitor
from router_core.embedding import Embedder, embed_for_routing
from router_core.state import RouterState
from router_core.text import routing_text

# Characters per token for the input-length estimate behind expected costs: close enough for
# ranking by price, which is all it is used for (real usage is billed from upstream counts).
CHARS_PER_TOKEN = 4.0
# Curves kept for `uniroute.models` subsets asked with a budget or quality target.
_SUBSET_CURVES = 64


@dataclass(frozen=True)
class Candidate:
    """One model's standing for a prompt."""

    model: str
    predicted_error: float
    expected_cost: float
    # Labelled representative prompts behind the prediction (weighted by the prompt's clusters).
    support: float = 0.0


@dataclass(frozen=True)
class Decision:
    """The outcome of routing one prompt: the chosen model first, then the fallbacks in order."""

    model: str
    cluster: int
    predicted_error: float
    expected_cost: float
    cost_weight: float
    candidates: list[Candidate]


@dataclass(frozen=True)
class ModelTable:
    """The routable models as arrays, rebuilt whenever the registry changes."""

    records: list[ModelRecord]
    psi: np.ndarray  # (M, K) predicted error per cluster
    input_per_tok: np.ndarray  # (M,)
    output_cost: np.ndarray  # (M,) expected output tokens x price per output token
    per_request: np.ndarray  # (M,)
    accuracy: np.ndarray  # (M,) mean score on the representative set
    counts: np.ndarray  # (M, K) labelled representative prompts behind each error in psi
    # The representative set's cluster weights (n, K) and estimated prompt tokens (n,): the
    # prompts the λ curve is measured on. None before the router state is loaded.
    calibration_weights: np.ndarray | None = None
    calibration_tokens: np.ndarray | None = None
    _curves: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.records]

    def index(self, name: str) -> int | None:
        """Position of a model in the table, or None when it is not routable."""
        for i, r in enumerate(self.records):
            if r.name == name:
                return i
        return None

    def expected_costs(self, input_tokens: float | np.ndarray) -> np.ndarray:
        """(M,) expected cost of one request with `input_tokens` prompt tokens; (n, M) for an
        (n,) array of token counts."""
        tokens = np.asarray(input_tokens, dtype=np.float64)[..., None]
        return self.per_request + tokens * self.input_per_tok + self.output_cost

    def calibration(self, allowed: frozenset[str] | None = None) -> Calibration | None:
        """The λ curve of the routable models (or of those in `allowed`) on the representative
        set; None with no model or no representative set. The full table's curve is computed
        when the table is built, a subset's on first use."""
        if self.calibration_weights is None:
            return None
        idx = np.array([i for i, n in enumerate(self.names) if allowed is None or n in allowed], dtype=int)
        if idx.size == 0:
            return None
        key = None if idx.size == len(self.records) else tuple(idx)  # None: the whole table
        curve = self._curves.get(key)
        if curve is None:
            costs = self.expected_costs(self.calibration_tokens)[:, idx]
            curve = calibrate(self.calibration_weights, self.psi[idx], costs, [self.names[i] for i in idx])
            subsets = [k for k in self._curves if k is not None]
            if len(subsets) >= _SUBSET_CURVES:
                del self._curves[subsets[0]]
            self._curves[key] = curve
        return curve


def is_routable(record: ModelRecord, n_clusters: int) -> bool:
    """Ready, enabled, and profiled against clusters of the current router state."""
    return (
        record.state == "ready"
        and record.enabled
        and record.profile is not None
        and len(record.profile.errors) == n_clusters
    )


def build_table(
    records: list[ModelRecord], n_clusters: int, default_output_tokens: int, repset: RepsetClusters | None = None
) -> ModelTable:
    """Arrays of the routable models among `records`, sorted by name for stable tie-breaks,
    with their λ curve on `repset` (the representative set under the current router state)."""
    usable = sorted((r for r in records if is_routable(r, n_clusters)), key=lambda r: r.name)
    m = len(usable)
    psi = np.zeros((m, n_clusters), dtype=np.float64)
    inp = np.zeros(m)
    out = np.zeros(m)
    req = np.zeros(m)
    acc = np.zeros(m)
    counts = np.zeros((m, n_clusters), dtype=np.float64)
    for i, r in enumerate(usable):
        psi[i] = r.profile.errors
        counts[i] = r.profile.counts
        out_tokens = r.profile.avg_output_tokens or default_output_tokens
        inp[i] = r.cost.input_per_mtok / 1e6
        out[i] = out_tokens * r.cost.output_per_mtok / 1e6
        req[i] = r.cost.per_request
        acc[i] = r.profile.accuracy
    if repset is None:
        return ModelTable(usable, psi, inp, out, req, acc, counts)
    tokens = np.array([estimate_tokens(len(item.prompt)) for item in repset.repset.items])
    table = ModelTable(usable, psi, inp, out, req, acc, counts, repset.weights, tokens)
    table.calibration()  # computed now, off the request path
    return table


class Router:
    """Embeds prompts and ranks the routable models for them.

    `weights` is the blocking part (the embedding model); callers run it off the event loop.
    Recent prompts' cluster weights are kept in an LRU, since system prompts and retries repeat,
    with their distance to the nearest centroid for the drift monitor (None when the state
    records no drift threshold).
    """

    def __init__(self, state: RouterState, embedder: Embedder, lru_size: int = 4096) -> None:
        self.state = state
        self.embedder = embedder
        # key -> (cluster weights (K,), distance to the nearest centroid)
        self._lru: OrderedDict[bytes, tuple[np.ndarray, float]] = OrderedDict()
        self._lru_size = lru_size
        self._lock = Lock()
        threshold = state.drift_threshold
        self.drift = DriftMonitor(threshold) if threshold is not None else None

    @property
    def n_clusters(self) -> int:
        return int(self.state.centroids.shape[0])

    def _key(self, text: str) -> bytes:
        # Keyed on what is embedded: prompts that differ only beyond the cut share their weights.
        return hashlib.blake2b(routing_text(text, self.state.max_chars).encode(), digest_size=16).digest()

    def lookup(self, text: str) -> np.ndarray | None:
        """(K,) cluster weights of a recently routed text, or None; never embeds, never blocks long."""
        key = self._key(text)
        with self._lock:
            entry = self._lru.get(key)
            if entry is None:
                return None
            self._lru.move_to_end(key)
            return entry[0]

    def weights(self, texts: list[str]) -> np.ndarray:
        """(n, K) cluster weights of `texts` (one-hot for K-means, soft for the learned map)."""
        keys = [self._key(t) for t in texts]
        out = np.empty((len(texts), self.n_clusters), dtype=np.float64)
        missing: list[int] = []
        with self._lock:
            for i, key in enumerate(keys):
                entry = self._lru.get(key)
                if entry is None:
                    missing.append(i)
                else:
                    self._lru.move_to_end(key)
                    out[i] = entry[0]
        if missing:
            emb = embed_for_routing(
                self.embedder, [texts[i] for i in missing], self.state.max_chars
            )
            rows = self.state.cluster_weights(emb)
            distances = self.state.nearest_distance(emb)
            with self._lock:
                for i, row, dist in zip(missing, rows, distances):
                    out[i] = row
                    self._lru[keys[i]] = (row, float(dist))
                while len(self._lru) > self._lru_size:
                    self._lru.popitem(last=False)
        return out

    def distance(self, text: str) -> float | None:
        """Distance to the nearest centroid of a recently routed text, or None."""
        with self._lock:
            entry = self._lru.get(self._key(text))
            return None if entry is None else entry[1]

    @staticmethod
    def decide(
        weights: np.ndarray,
        table: ModelTable,
        cost_weight: float,
        input_tokens: float,
        allowed: set[str] | None = None,
        excluded: set[str] | frozenset[str] = frozenset(),
    ) -> Decision | None:
        """Rank the models for one prompt's (K,) cluster weights; None when none may be used.

        Costs are divided by the dearest candidate's expected cost so that the cost weight is on
        the error rate's [0, 1] scale whatever the price unit.
        """
        mask = np.array(
            [(allowed is None or n in allowed) and n not in excluded for n in table.names],
            dtype=bool,
        )
        if not mask.any():
            return None
        idx = np.flatnonzero(mask)
        gamma = (weights @ table.psi[idx].T)[None, :]
        support = weights @ table.counts[idx].T
        costs = table.expected_costs(input_tokens)[idx]
        order = policy.rank(gamma, policy.normalise_costs(costs), cost_weight)[0]
        ranked = [
            Candidate(table.records[idx[j]].name, float(gamma[0, j]), float(costs[j]), float(support[j]))
            for j in order
        ]
        best = ranked[0]
        return Decision(
            model=best.model,
            cluster=int(np.argmax(weights)),
            predicted_error=best.predicted_error,
            expected_cost=best.expected_cost,
            cost_weight=cost_weight,
            candidates=ranked,
        )


def estimate_tokens(text_chars: int) -> float:
    """Prompt tokens estimated from its length in characters."""
    return text_chars / CHARS_PER_TOKEN
