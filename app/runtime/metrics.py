"""Prometheus metrics. Each gateway app owns its registry, so several apps in one process don't clash.

Under several workers (app/runtime/workers.py) prometheus_client's multiprocess mode keeps every
worker's values in files under PROMETHEUS_MULTIPROC_DIR, and a scrape of any worker reads them
all: counters and histograms are summed over the workers. Each gauge says how its workers'
values combine (`multiprocess_mode`, ignored in one process): `livemostrecent` for what every
worker sees alike (the registry's models, the shared budget counts) or what one worker owns (a
profiling job's progress; the drift share, of the last worker to route; the registry's
availability, as the scraped worker sees it), `livemax` for what
each worker has of its own (its cooldowns); a dead worker's gauges go with it.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

# Decisions take ~0.1-20 ms, upstream calls up to minutes: separate bucket sets.
_FAST = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
_SLOW = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
# Why a sampled prompt was not stored (app/routing/capture.py).
CAPTURE_LOST_REASONS = ("backlog", "store", "flush")
# The targets the calibration curve may not meet (a cost weight is always met).
UNMET_KINDS = ("budget", "quality")


@dataclass
class Metrics:
    """The gateway's metric families (README: Metrics)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    _children: dict = field(default_factory=dict, repr=False)

    def child(self, metric: Counter | Gauge | Histogram, *values: str) -> Any:
        """`metric.labels(*values)`, remembered: the request path counts into the same few series
        all the time, and prometheus_client's lookup (argument checks, a lock) costs more than the
        count. Only for series that are never removed."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "uniroute_requests", "Responses of the OpenAI endpoints by route, answering model (none when no "
            "model answered) and status: the HTTP status, or cut for a stream the upstream cut.",
            ["route", "model", "status"], registry=r)
        self.decisions = Counter(
            "uniroute_routing_decisions", "Routing decisions by chosen model.", ["model"], registry=r)
        self.routing_seconds = Histogram(
            "uniroute_routing_seconds", "Time to embed a prompt and choose a model.",
            buckets=_FAST, registry=r)
        self.embed_batch_size = Histogram(
            "uniroute_embed_batch_size", "Prompts per embedding call (micro-batching; a static embedder embeds inline, uncounted).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.upstream_seconds = Histogram(
            "uniroute_upstream_seconds", "Upstream time to response headers, by model.",
            ["model"], buckets=_SLOW, registry=r)
        self.overhead_seconds = Histogram(
            "uniroute_overhead_seconds",
            "The gateway's own time per answered request: from the request's arrival to the response "
            "handed to the server (for a stream, its first byte), minus the time spent in upstream "
            "attempts, each from sending the request to the upstream's whole body (for a stream, its "
            "first chunk). Excludes the upstream's time to first token and the stream's duration.",
            buckets=_FAST, registry=r)
        self.tokens = Counter(
            "uniroute_tokens", "Tokens reported by upstreams, by model and kind (prompt|completion).",
            ["model", "kind"], registry=r)
        self.cost = Counter(
            "uniroute_cost", "Cost spent on upstream answers, by model (the models' cost unit).",
            ["model"], registry=r)
        self.cost_saved = Counter(
            "uniroute_cost_saved",
            "Cost saved against sending the same tokens to the most accurate routable model.",
            registry=r)
        self.upstream_failures = Counter(
            "uniroute_upstream_failures",
            "Failed upstream attempts by model and reason, the fault class (connect, write, timeout, read, "
            "disconnect, auth, not_found, no_endpoint, rate_limit, server, request_timeout, bad_body, cut, context_length, "
            "too_large; README: Upstream faults).",
            ["model", "reason"], registry=r)
        self.models_faulted = Gauge(
            "uniroute_models_faulted",
            "Models an upstream fault took out of routing until an operator re-enables them, by fault "
            "class (auth, not_found, no_endpoint); GET /admin/models names them, with the reason in `error`.",
            ["reason"], registry=r, multiprocess_mode="livemostrecent")
        self.fallbacks = Counter(
            "uniroute_fallbacks", "Requests answered by a model other than the first choice.",
            registry=r)
        self.cooldowns = Counter(
            "uniroute_model_cooldowns", "Times a model was cooled down after repeated failures, or as its upstream asked (Retry-After).",
            ["model"], registry=r)
        self.cooling = Gauge(
            "uniroute_models_cooling", "Models in cooldown now.", registry=r, multiprocess_mode="livemax")
        self.models_by_state = Gauge(
            "uniroute_models", "Registered models by state.", ["state"], registry=r,
            multiprocess_mode="livemostrecent")
        # Progress of the profiling jobs running in this gateway; a model's series go when its
        # job stops here (done, failed, cancelled, paused), so no stale value stays behind.
        self.profiling_done = Gauge(
            "uniroute_profiling_prompts_done", "Prompts graded by a model's running profiling job.",
            ["model"], registry=r, multiprocess_mode="livemostrecent")
        self.profiling_total = Gauge(
            "uniroute_profiling_prompts", "Prompts a model's running profiling job must grade.",
            ["model"], registry=r, multiprocess_mode="livemostrecent")
        # done + declined reaches the total when every prompt is settled.
        self.profiling_declined = Gauge(
            "uniroute_profiling_prompts_declined", "Prompts the model refused in its running profiling job.",
            ["model"], registry=r, multiprocess_mode="livemostrecent")
        self.profiling_upstream_seconds = Histogram(
            "uniroute_profiling_upstream_seconds",
            "Upstream time to response headers of profiling and judge calls, by model (not client traffic).",
            ["model"], buckets=_SLOW, registry=r)
        self.profiling_spend = Counter(
            "uniroute_profiling_cost", "Cost spent profiling, by model.", ["model"], registry=r)
        # Cost control (README: Cost control).
        self.target_unmet = Counter(
            "uniroute_target_unmet",
            "Routed requests whose budget or quality target the calibration curve could not meet, by kind.",
            ["kind"], registry=r)
        self.budget_target = Gauge(
            "uniroute_budget_target", "The budget guard's spend target per window.", registry=r,
            multiprocess_mode="livemax")
        self.budget_spend = Gauge(
            "uniroute_budget_window_spend", "Spend in the budget guard's current window, by scope.",
            ["scope"], registry=r, multiprocess_mode="livemostrecent")
        self.budget_spent = Counter(
            "uniroute_budget_spent", "Spend counted by the budget guard, by scope.", ["scope"], registry=r)
        self.budget_cost_weight = Gauge(
            "uniroute_budget_cost_weight", "The cost weight floor the budget guard sets now, by scope.",
            ["scope"], registry=r, multiprocess_mode="livemostrecent")
        self.drift_share = Gauge(
            "uniroute_drift_far_share",
            "Share of the recent routed prompts farther from every centroid than the drift threshold.",
            registry=r, multiprocess_mode="livemostrecent")
        self.capture_lost = Counter(
            "uniroute_capture_lost",
            "Sampled prompts (capture.sample_rate) that were not stored, by reason: backlog (offered while "
            "1000 writes waited on the store), store (the store refused the write), flush (still waiting "
            "when a shutdown or an export stopped waiting).", ["reason"], registry=r)
        # Set by each scrape (app/api/main.py), from the scraped process's own view, as /readyz says it.
        self.registry_available = Gauge(
            "uniroute_registry_available",
            "1 while the registry takes writes, 0 while it is away (Redis unreachable, or the SQLite file's "
            "writes failing); routing goes on from the models already loaded.",
            registry=r, multiprocess_mode="livemostrecent")
        self.drift_prompts = Counter(
            "uniroute_drift_prompts", "Routed prompts by distance to the nearest centroid (far: above the "
            "drift threshold).", ["far"], registry=r)
        # Rare events' series exposed at 0 from the start: Prometheus' increase() reads a series'
        # first sample as its start, so a series born at 1 would hide the first (often the only)
        # one from the dashboard and the alerts.
        for counter, values in ((self.capture_lost, CAPTURE_LOST_REASONS), (self.target_unmet, UNMET_KINDS),
                                (self.drift_prompts, ("true", "false"))):
            for value in values:
                counter.labels(value)

    def for_profiling(self) -> Metrics:
        """These metrics for the profiling jobs' forwarder: the same families, except that
        upstream timings go to `uniroute_profiling_upstream_seconds`, so that
        `uniroute_upstream_seconds` measures client traffic only."""
        view = copy.copy(self)
        view.upstream_seconds = self.profiling_upstream_seconds
        return view


# The profiling progress gauges: a worker's files keep a series it removed (prometheus_client
# cannot remove one in multiprocess mode), so the scrape drops those of jobs no longer running.
_PROGRESS = ("uniroute_profiling_prompts_done", "uniroute_profiling_prompts", "uniroute_profiling_prompts_declined")


class _Workers:
    """Every worker's metrics, from the multiprocess files, less stopped jobs' progress series,
    with their help texts (the files keep none)."""

    def __init__(self, path: str, running: set[str] | None, help_texts: dict[str, str]) -> None:
        self.path = path
        self.running = running
        self.help_texts = help_texts

    def collect(self) -> Iterator[Metric]:
        families: Iterable[Metric] = MultiProcessCollector(None, self.path).collect()
        for family in families:
            if family.name in _PROGRESS and self.running is not None:
                family.samples = [s for s in family.samples if s.labels.get("model") in self.running]
            family.documentation = self.help_texts.get(family.name, family.documentation)
            yield family


def multiprocess_dir() -> str | None:
    """The directory of the workers' metric files, when this process is one of several workers."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition(metrics: Metrics, running_jobs: set[str] | None = None) -> bytes:
    """The Prometheus text for a scrape: this process's metrics, or under several workers all of
    theirs summed, with the progress of profiling jobs shown only for the models in
    `running_jobs` (None: as the files hold it)."""
    path = multiprocess_dir()
    if path is None:
        return generate_latest(metrics.registry)
    registry = CollectorRegistry()
    help_texts = {family.name: family.documentation for family in metrics.registry.collect()}
    registry.register(_Workers(path, running_jobs, help_texts))
    return generate_latest(registry)
