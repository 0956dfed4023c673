"""A model's profile Ψ from its scores on the representative prompt set.

The representative prompts are embedded once per router state; their cluster weights are
kept here, so that turning a model's graded answers into Ψ is one weighted average.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models_registry.records import Answer, Profile
from models_registry.repset import RepresentativeSet
from router_core.profiles import soft_profiles


@dataclass(frozen=True)
class RepsetClusters:
    """The representative set's prompts and their (n, K) cluster weights under one router state."""

    repset: RepresentativeSet
    weights: np.ndarray
    state_version: str
    # Pseudo-counts pulling a thin cluster's error toward the model's overall error; the
    # router state carries the value chosen with its clusters (router_core.profiles).
    prior: float

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.repset.items]

    def unknown_ids(self, ids: object) -> list[str]:
        """Ids not in the representative set (to reject precomputed scores that don't fit it)."""
        known = set(self.ids)
        return sorted(i for i in ids if i not in known)

    def profile(self, scores: dict[str, float], avg_output_tokens: float = 0.0) -> Profile:
        """Ψ of a model from its scores in [0, 1] by prompt id; unscored prompts are ignored."""
        losses = np.array([1.0 - scores[i] if i in scores else np.nan for i in self.ids])[:, None]
        errors, counts = soft_profiles(self.weights, losses, self.prior)
        scored = [scores[i] for i in self.ids if i in scores]
        return Profile(
            errors=[float(e) for e in errors[0]],
            counts=[float(c) for c in counts[0]],
            accuracy=float(np.mean(scored)) if scored else 0.0,
            n_prompts=len(scored),
            avg_output_tokens=float(avg_output_tokens),
            repset_version=self.repset.version,
            state_version=self.state_version,
        )

    def profile_from_answers(self, graded: dict[str, Answer]) -> Profile | None:
        """Ψ of a model from its stored graded answers (failed ones left out), with its mean answer
        length; None when no answer was graded."""
        good = [a for a in graded.values() if a.error is None]
        if not good:
            return None
        out_tokens = [a.output_tokens for a in good if a.output_tokens]
        return self.profile({a.prompt_id: a.score for a in good},
                            sum(out_tokens) / len(out_tokens) if out_tokens else 0.0)
