"""A model's profile Ψ from its stored graded answers on the representative set."""
from __future__ import annotations

from models_registry.records import Answer
from router_core.profiles import Profile
from router_core.repset import RepsetClusters


def profile_from_answers(clusters: RepsetClusters, graded: dict[str, Answer]) -> Profile | None:
    """Ψ of a model from its stored graded answers (failed ones left out), with its mean answer
    length; None when no answer was graded."""
    good = [a for a in graded.values() if a.error is None]
    if not good:
        return None
    out_tokens = [a.output_tokens for a in good if a.output_tokens]
    return clusters.profile({a.prompt_id: a.score for a in good},
                            sum(out_tokens) / len(out_tokens) if out_tokens else 0.0)
