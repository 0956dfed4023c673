"""Routing decisions for the gateway: prompt text -> cluster weights -> ranked registered models.

The rule is router_core's; this module only turns registry records into the arrays it takes
(Ψ as an (M, K) matrix, expected costs as an (M,) vector) and keeps them current.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from threading import Lock

import numpy as np

from models_registry.records import ModelRecord
from router_core import policy
from router_core.embedding import Embedder, embed_for_routing
from router_core.state import RouterState

# Characters per token for the input-length estimate behind expected costs: close enough for
# ranking by price, which is all it is used for (real usage is billed from upstream counts).
CHARS_PER_TOKEN = 4.0


@dataclass(frozen=True)
class Candidate:
    """One model's standing for a prompt."""

    model: str
    predicted_error: float
    expected_cost: float


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

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.records]

    def index(self, name: str) -> int | None:
        """Position of a model in the table, or None when it is not routable."""
        for i, r in enumerate(self.records):
            if r.name == name:
                return i
        return None

    def expected_costs(self, input_tokens: float) -> np.ndarray:
        """(M,) expected cost of one request with `input_tokens` prompt tokens."""
        return self.per_request + input_tokens * self.input_per_tok + self.output_cost


def is_routable(record: ModelRecord, n_clusters: int) -> bool:
    """Ready, enabled, and profiled against clusters of the current router state."""
    return (
        record.state == "ready"
        and record.enabled
        and record.profile is not None
        and len(record.profile.errors) == n_clusters
    )


def build_table(records: list[ModelRecord], n_clusters: int, default_output_tokens: int) -> ModelTable:
    """Arrays of the routable models among `records`, sorted by name for stable tie-breaks."""
    usable = sorted((r for r in records if is_routable(r, n_clusters)), key=lambda r: r.name)
    m = len(usable)
    psi = np.zeros((m, n_clusters), dtype=np.float64)
    inp = np.zeros(m)
    out = np.zeros(m)
    req = np.zeros(m)
    acc = np.zeros(m)
    for i, r in enumerate(usable):
        psi[i] = r.profile.errors
        out_tokens = r.profile.avg_output_tokens or default_output_tokens
        inp[i] = r.cost.input_per_mtok / 1e6
        out[i] = out_tokens * r.cost.output_per_mtok / 1e6
        req[i] = r.cost.per_request
        acc[i] = r.profile.accuracy
    return ModelTable(usable, psi, inp, out, req, acc)


class Router:
    """Embeds prompts and ranks the routable models for them.

    `weights` is the blocking part (the embedding model); callers run it off the event loop.
    Recent prompts' cluster weights are kept in an LRU, since system prompts and retries repeat.
    """

    def __init__(self, state: RouterState, embedder: Embedder, lru_size: int = 4096) -> None:
        self.state = state
        self.embedder = embedder
        self._lru: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lru_size = lru_size
        self._lock = Lock()

    @property
    def n_clusters(self) -> int:
        return int(self.state.centroids.shape[0])

    def weights(self, texts: list[str]) -> np.ndarray:
        """(n, K) cluster weights of `texts` (one-hot for K-means, soft for the learned map)."""
        keys = [hashlib.blake2b(t.encode(), digest_size=16).digest() for t in texts]
        out = np.empty((len(texts), self.n_clusters), dtype=np.float64)
        missing: list[int] = []
        with self._lock:
            for i, key in enumerate(keys):
                row = self._lru.get(key)
                if row is None:
                    missing.append(i)
                else:
                    self._lru.move_to_end(key)
                    out[i] = row
        if missing:
            emb = embed_for_routing(
                self.embedder, [texts[i] for i in missing], self.state.max_chars
            )
            rows = self.state.cluster_weights(emb)
            with self._lock:
                for i, row in zip(missing, rows):
                    out[i] = row
                    self._lru[keys[i]] = row
                while len(self._lru) > self._lru_size:
                    self._lru.popitem(last=False)
        return out

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
        costs = table.expected_costs(input_tokens)[idx]
        order = policy.rank(gamma, policy.normalise_costs(costs), cost_weight)[0]
        ranked = [
            Candidate(table.records[idx[j]].name, float(gamma[0, j]), float(costs[j])) for j in order
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
