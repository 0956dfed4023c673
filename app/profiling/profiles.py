"""A model's profile Ψ from its stored graded answers on the representative set, and the
coverage a profiling job must reach before the model becomes routable."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from models_registry.records import Answer
from router_core.profiles import Profile
from router_core.repset import RepsetClusters

# A cluster where the job's prompts weigh less than this has nothing to cover.
_NO_SUPPORT = 1e-6


def profile_from_answers(clusters: RepsetClusters, graded: dict[str, Answer]) -> Profile | None:
    """Ψ of a model from its stored graded answers (failed ones left out), with its mean answer
    length; None when no answer was graded."""
    good = [a for a in graded.values() if a.error is None]
    if not good:
        return None
    out_tokens = [a.output_tokens for a in good if a.output_tokens]
    return clusters.profile({a.prompt_id: a.score for a in good},
                            sum(out_tokens) / len(out_tokens) if out_tokens else 0.0)


@dataclass(frozen=True)
class Coverage:
    """How much of a job's prompts has a graded answer: overall, and per cluster as the share
    of the job's prompts' cluster weight (1.0 where the job's prompts have none)."""

    answered: int
    total: int
    cluster_shares: list[float]

    @property
    def share(self) -> float:
        return self.answered / self.total if self.total else 0.0

    def meets(self, min_share: float, min_cluster_share: float) -> bool:
        """Whether the model may route on these answers (README: Auditing a profile)."""
        return self.answered > 0 and self.share >= min_share and min(self.cluster_shares) >= min_cluster_share

    def describe(self, min_share: float, min_cluster_share: float) -> str:
        """One line for a job's reason: the overall share and the thinnest cluster."""
        k = int(np.argmin(self.cluster_shares))
        return (f"{self.answered}/{self.total} prompts graded ({self.share:.0%}, needs {min_share:.0%}); "
                f"thinnest cluster {k} at {self.cluster_shares[k]:.0%} of its support (needs {min_cluster_share:.0%})")


def coverage(clusters: RepsetClusters, item_ids: Iterable[str], answered: set[str]) -> Coverage:
    """The coverage of a job asking `item_ids` once `answered` of them have graded answers."""
    row = {pid: i for i, pid in enumerate(clusters.ids)}
    ids = [pid for pid in item_ids if pid in row]
    w = clusters.weights[[row[pid] for pid in ids]]
    got = np.array([pid in answered for pid in ids], dtype=bool)
    support = w.sum(axis=0)
    shares = np.divide(w[got].sum(axis=0), support, out=np.ones_like(support), where=support > _NO_SUPPORT)
    return Coverage(int(got.sum()), len(ids), [float(s) for s in shares])
