"""Drift: how many recent prompts lie far from every cluster the router knows.

A prompt's distance is its cosine distance to the nearest centroid (1 - cosine similarity; the
embeddings and centroids are unit vectors). The threshold is learned on the training prompts the
clusters were fitted on: the distance that `DRIFT_QUANTILE` of them stay within, stored in the
router state. Traffic whose share of far prompts grows well above 1 - DRIFT_QUANTILE has moved
away from what the clusters (and so the profiles) describe: time to re-cluster.
"""
from __future__ import annotations

from threading import Lock

import numpy as np

from router_core import clustering

DRIFT_QUANTILE = 0.99


def nearest_distance(centroids: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """(n,) cosine distance of each embedding to its nearest centroid."""
    return distance_from(clustering.assign(centroids, emb)[1])


def distance_from(similarity: np.ndarray) -> np.ndarray:
    """The drift distance of a prompt whose cosine similarity to its nearest centroid is given."""
    return 1.0 - np.asarray(similarity, dtype=np.float64)


def drift_threshold(distances: np.ndarray, quantile: float = DRIFT_QUANTILE) -> float:
    """The distance `quantile` of the training prompts stay within."""
    return float(np.quantile(np.asarray(distances, dtype=np.float64), quantile))


class DriftMonitor:
    """The share of the last `window` prompts farther than `threshold`, plus running totals.
    Thread-safe: prompts are observed where they are embedded."""

    def __init__(self, threshold: float, window: int = 1000) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.threshold = float(threshold)
        self.window = window
        # A ring of the last `window` flags, kept in plain Python: prompts come one at a time
        # on the request path, where a numpy call costs more than this whole update.
        self._far = [False] * window
        self._recent_far = 0  # far prompts among them, kept as they come
        self._next = 0
        self._seen = 0
        self._far_total = 0
        self._lock = Lock()

    # Pickled with its counts, without its lock (a copy gets its own).
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=Lock())

    def observe(self, distances: np.ndarray) -> np.ndarray:
        """Record prompts' distances; returns which of them are far."""
        far = np.asarray(distances, dtype=np.float64) > self.threshold
        flags = far.tolist()
        with self._lock:
            for flag in flags[-self.window:]:
                self._recent_far += flag - self._far[self._next]
                self._far[self._next] = flag
                self._next = (self._next + 1) % self.window
            self._seen += len(flags)
            self._far_total += sum(flags)
        return far

    @property
    def far_share(self) -> float:
        """The share of the recent prompts that are far (0 before any)."""
        recent = min(self._seen, self.window)
        return self._recent_far / recent if recent else 0.0

    def snapshot(self) -> dict:
        """Threshold, window, the recent prompts and how many of them are far, and totals."""
        with self._lock:
            recent = min(self._seen, self.window)
            recent_far = self._recent_far
            seen, far_total = self._seen, self._far_total
        return {"threshold": self.threshold, "window": self.window, "recent": recent, "recent_far": recent_far,
                "far_share": recent_far / recent if recent else 0.0, "expected_share": round(1 - DRIFT_QUANTILE, 6),
                "seen": seen, "far": far_total}
