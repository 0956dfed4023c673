"""What a cluster holds, for people: its size and the prompts nearest its centroid."""
from __future__ import annotations

import numpy as np

EXAMPLE_CHARS = 200


def _short(text: str, limit: int = EXAMPLE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def nearest_examples(centroids: np.ndarray, emb: np.ndarray, texts: list[str], n: int = 3) -> list[list[str]]:
    """For each centroid (K, d), the `n` texts (of `emb` (m, d)) most similar to it among those
    assigned to it, shortened to one line; a cluster with none gets []."""
    sims = np.asarray(emb, dtype=np.float32) @ np.asarray(centroids, dtype=np.float32).T  # (m, K)
    labels = sims.argmax(axis=1)
    out = []
    for k in range(len(centroids)):
        members = np.flatnonzero(labels == k)
        best = members[np.argsort(-sims[members, k], kind="stable")[:n]]
        out.append([_short(texts[i]) for i in best])
    return out


def describe(centroids: np.ndarray, emb: np.ndarray, texts: list[str], n: int = 3) -> list[dict]:
    """Per cluster `{"id", "size", "examples"}` for a state's metadata (`clusters`)."""
    labels = (np.asarray(emb, dtype=np.float32) @ np.asarray(centroids, dtype=np.float32).T).argmax(axis=1)
    sizes = np.bincount(labels, minlength=len(centroids))
    return [{"id": k, "size": int(sizes[k]), "examples": ex}
            for k, ex in enumerate(nearest_examples(centroids, emb, texts, n))]
