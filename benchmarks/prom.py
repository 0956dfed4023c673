"""Reading the gateway's Prometheus metrics (`GET /metrics`): samples, and quantiles of a
histogram over an interval (the difference of two scrapes)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]


def scrape(base_url: str) -> dict[str, dict[Labels, float]]:
    """Every sample of the gateway's /metrics: sample name -> sorted labels -> value."""
    text = httpx.get(base_url + "/metrics", timeout=10.0).text
    out: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def total(samples: dict[str, dict[Labels, float]], name: str, **match: str) -> float:
    """The sum of a sample's values over the label sets that include `match`."""
    return sum(v for labels, v in samples.get(name, {}).items() if set(match.items()) <= set(labels))


@dataclass(frozen=True)
class Histogram:
    """A histogram's cumulative bucket counts by upper bound (the last bound is +Inf)."""

    bounds: np.ndarray
    counts: np.ndarray

    @classmethod
    def from_samples(cls, samples: dict[str, dict[Labels, float]], name: str) -> Histogram:
        """The histogram `name` (one without labels other than `le`)."""
        buckets = sorted((float(dict(labels)["le"]), v) for labels, v in samples.get(f"{name}_bucket", {}).items())
        return cls(np.array([b for b, _ in buckets]), np.array([c for _, c in buckets]))

    def __sub__(self, earlier: Histogram) -> Histogram:
        return Histogram(self.bounds, self.counts - earlier.counts)

    @property
    def count(self) -> int:
        return int(self.counts[-1]) if self.counts.size else 0

    def quantiles(self, qs: Sequence[float]) -> list[float]:
        """Quantiles (0-1), interpolated linearly inside a bucket as Prometheus' histogram_quantile
        does; inf for a quantile in the +Inf bucket (beyond the highest finite bound), NaN for an
        empty histogram."""
        if self.count == 0:
            return [float("nan")] * len(qs)
        out = []
        for q in qs:
            rank = q * self.count
            i = int(np.searchsorted(self.counts, rank, side="left"))
            if i >= len(self.bounds) - 1:  # the +Inf bucket
                out.append(float("inf"))
                continue
            lower = self.bounds[i - 1] if i > 0 else 0.0
            below = self.counts[i - 1] if i > 0 else 0.0
            in_bucket = self.counts[i] - below
            frac = (rank - below) / in_bucket if in_bucket > 0 else 1.0
            out.append(float(lower + (self.bounds[i] - lower) * frac))
        return out
