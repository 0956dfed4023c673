"""UniRouter: the in-process router. The gateway, `uniroute calibrate` and the benchmarks all
decide through it, so a decision made here is the decision the gateway makes.

    from router_core import UniRouter, Price
    router = UniRouter.load("fast")                      # a shipped state and representative set
    router.add_model("small", Price(per_request=0.001), scores={...})   # scores on the set
    decision = router.route("Write a haiku about rain", budget=0.002)

A prompt is embedded (its tail, `router_core.text`), mapped to cluster weights by the router
state, and every allowed model is ranked by predicted error + λ·cost / cost_scale
(`router_core.policy`); a target (budget or quality) is turned into λ through the models'
calibration curve on the representative set (`router_core.targets`).

Two rules keep a decision about the prompt and the model, not about the rest of the pool:
- the cost scale is fixed (`cost_scale`, default `policy.DEFAULT_COST_SCALE`): λ = 1 weighs an
  expected cost of `cost_scale` per request as one full unit of error rate, so registering a model
  that no prompt chooses changes no decision;
- the support guard: a model whose predicted error for the prompt rests on fewer than
  `min_support` labelled representative prompts (default: the state's prior, the pseudo-prompts
  of Ψ's shrinkage, i.e. the cluster's own evidence must weigh at least as much as the model's
  overall mean) is ranked after every model that has that support, so it answers there only as a
  fallback; when no allowed model has it, the floor falls to the most support any allowed model
  has (with none anywhere, all are ranked by the rule as usual).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from threading import Lock

import numpy as np

from router_core import policy
from router_core.calibration import Calibration, calibrate
from router_core.confidence import error_interval
from router_core.drift import DriftMonitor
from router_core.embedding import CachedEmbedder, Embedder, embed_for_routing
from router_core.output_scale import normalised_scale
from router_core.policy import DEFAULT_COST_SCALE
from router_core.pricing import Price, estimate_tokens
from router_core.profiles import Profile
from router_core.repset import RepresentativeSet, RepsetClusters, load_repset
from router_core.shipped import DEFAULT_REPSET, state_path
from router_core.state import RouterState, state_embedder
from router_core.targets import NotCalibrated, Resolution, RoutingTarget, resolve
from router_core.text import routing_text

# Curves kept for subsets of the models asked with a budget or quality target.
_SUBSET_CURVES = 64
# Remembered decisions per model table: (clusters x targets x prompt lengths) seen lately.
_DECISIONS = 8192
# Used for a model's expected cost until its profile has measured its answers' length.
DEFAULT_OUTPUT_TOKENS = 256


class NoRoutableModel(ValueError):
    """No model may answer: none is registered and profiled, or none is among those allowed."""


@dataclass(frozen=True)
class RoutedModel:
    """A model the router can choose: its name, price and profile Ψ under the router's state."""

    name: str
    price: Price
    profile: Profile


@dataclass(frozen=True)
class Candidate:
    """One model's standing for a prompt."""

    model: str
    predicted_error: float
    expected_cost: float
    # Labelled representative prompts behind the prediction (weighted by the prompt's clusters)
    # and the 90% interval of the predicted error they give (router_core.confidence).
    support: float
    error_interval: tuple[float, float]
    # Whether `support` reaches the support guard's floor. A model without it is ranked after
    # every model with it; when no candidate has it, none is (all rest on overall means).
    supported: bool = True

    def to_dict(self) -> dict:
        return {"model": self.model, "predicted_error": self.predicted_error, "expected_cost": self.expected_cost,
                "support": self.support, "supported": self.supported, "error_interval": list(self.error_interval)}


@dataclass(frozen=True)
class Decision:
    """The outcome of routing one prompt: the chosen model, then every allowed model in
    fallback order (`ranking`); the target it was routed for (with whether the curve can meet
    it). Candidates with their error intervals are built on first use, off the hot path."""

    model: str
    cluster: int
    predicted_error: float
    expected_cost: float
    cost_weight: float
    ranking: tuple[str, ...]
    target: Resolution | None
    _errors: np.ndarray = field(repr=False, compare=False)
    _costs: np.ndarray = field(repr=False, compare=False)
    _support: np.ndarray = field(repr=False, compare=False)
    _prior: float = field(repr=False, compare=False)
    _min_support: float = field(repr=False, compare=False)

    @cached_property
    def candidates(self) -> list[Candidate]:
        """Every allowed model, best first, with its predicted error's support and interval."""
        lo, hi = error_interval(self._errors, self._support, self._prior)
        return [Candidate(name, float(e), float(c), float(s), (float(a), float(b)), bool(s >= self._min_support))
                for name, e, c, s, a, b in zip(self.ranking, self._errors, self._costs, self._support, lo, hi)]

    def expectation(self, model: str) -> tuple[float, float]:
        """(predicted error, expected cost) of a ranked model (the one that answered, say);
        ValueError naming it for a model this decision did not rank."""
        if model not in self.ranking:  # tuple.index said only "x not in tuple"
            raise ValueError(f"{model!r} is not ranked in this decision; ranked: {', '.join(self.ranking)}")
        j = self.ranking.index(model)
        return float(self._errors[j]), float(self._costs[j])

    @property
    def error_interval(self) -> tuple[float, float]:
        return self.candidates[0].error_interval

    def to_dict(self) -> dict:
        return {"model": self.model, "cluster": self.cluster, "predicted_error": self.predicted_error,
                "error_interval": list(self.error_interval), "expected_cost": self.expected_cost,
                "cost_weight": self.cost_weight, "candidates": [c.to_dict() for c in self.candidates],
                "target": self.target.to_dict() if self.target else None}


@dataclass(frozen=True)
class ModelTable:
    """The routable models as arrays, rebuilt whenever the set of models changes."""

    models: list[RoutedModel]
    psi: np.ndarray  # (M, K) predicted error per cluster
    input_per_tok: np.ndarray  # (M,)
    output_tokens: np.ndarray  # (M,) mean output tokens
    output_per_tok: np.ndarray  # (M,)
    per_request: np.ndarray  # (M,)
    accuracy: np.ndarray  # (M,) mean score on the representative set
    counts: np.ndarray  # (M, K) labelled representative prompts behind each error in psi
    prior: float  # Ψ's shrinkage, for the error intervals
    cost_scale: float  # expected cost per request that λ = 1 weighs as one unit of error rate
    min_support: float  # the support guard's floor (policy.supported)
    # (K,) a cluster's answer length relative to the representative set's average (the state's
    # output_scale, normalised by `output_scale.normalised_scale`); None: the same everywhere.
    output_scale: np.ndarray | None
    # The representative set's cluster weights (n, K) as routed (`RepsetClusters.routed_weights`)
    # and estimated prompt tokens (n,): the prompts the λ curve is measured on. None without a
    # representative set.
    calibration_weights: np.ndarray | None = None
    calibration_tokens: np.ndarray | None = None
    _curves: dict = field(default_factory=dict, compare=False, repr=False)
    # Held while `_curves` is read for eviction and written: routes from several threads at once
    # each add their subset's curve, and one's eviction loop met another's insertion
    # ("dictionary changed size during iteration").
    _curves_lock: Lock = field(default_factory=Lock, compare=False, repr=False)
    # Single-prompt decisions under one-hot weights, by their terms (UniRouter.decide).
    decisions: dict = field(default_factory=dict, compare=False, repr=False)

    # Pickled without its remembered decisions (up to _DECISIONS of them, remade on use) and with
    # only the whole table's curve, the one it computes when built, off the request path.
    def __getstate__(self) -> dict:
        curves = {None: self._curves[None]} if None in self._curves else {}
        return {**{k: v for k, v in self.__dict__.items() if k != "_curves_lock"}, "_curves": curves,
                "decisions": {}}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _curves_lock=Lock())  # as a frozen dataclass's own unpickling does

    @cached_property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    @cached_property
    def name_array(self) -> np.ndarray:
        """The names as an object array, to reorder them with the rankings' indices."""
        return np.array(self.names, dtype=object)

    def expected_costs(self, input_tokens: np.ndarray, weights: np.ndarray,
                       max_output_tokens: np.ndarray | None = None, choices: np.ndarray | None = None) -> np.ndarray:
        """(n, M) expected cost of requests of (n,) prompt tokens and (n, K) cluster weights: the
        input priced by its tokens, the output by each model's mean output tokens times the
        prompt's clusters' answer length (`output_scale`), at most the request's (n,)
        `max_output_tokens` (inf: no limit): a model cannot be billed for more than it may write;
        times the (n,) answers (`choices`, OpenAI's `n`) each request asks for, all of them billed."""
        tokens = np.asarray(input_tokens, dtype=np.float64)[:, None]
        output = self.output_tokens
        if self.output_scale is not None:
            length = np.asarray(weights, dtype=np.float64) @ self.output_scale  # routed weights sum to 1
            output = length[:, None] * output
        if max_output_tokens is not None:
            output = np.minimum(output, np.asarray(max_output_tokens, dtype=np.float64)[:, None])
        if choices is not None:
            output = output * np.asarray(choices, dtype=np.float64)[:, None]
        return self.per_request + tokens * self.input_per_tok + output * self.output_per_tok

    def support(self, weights: np.ndarray, idx: np.ndarray | slice) -> np.ndarray:
        """(n, len(idx)) labelled representative prompts behind the predicted errors of the
        models `idx` for prompts of cluster weights (n, K)."""
        return weights @ self.counts[idx].T

    def calibration(self, allowed: frozenset[str] | None = None) -> Calibration | None:
        """The λ curve of the models (or of those in `allowed`) on the representative set; None
        with no model or no representative set. The full table's curve is computed when the
        table is built, a subset's on first use."""
        if self.calibration_weights is None:
            return None
        idx = np.array([i for i, n in enumerate(self.names) if allowed is None or n in allowed], dtype=int)
        if idx.size == 0:
            return None
        key = None if idx.size == len(self.models) else tuple(idx)  # None: the whole table
        curve = self._curves.get(key)
        if curve is None:
            costs = self.expected_costs(self.calibration_tokens, self.calibration_weights)[:, idx]
            eligible = policy.supported(self.support(self.calibration_weights, idx), self.min_support,
                                        self.calibration_weights @ self.psi[idx].T, 1.0 - self.accuracy[idx],
                                        self.prior)
            curve = calibrate(self.calibration_weights, self.psi[idx], costs, [self.names[i] for i in idx],
                              cost_scale=self.cost_scale, eligible=eligible)
            with self._curves_lock:
                subsets = [k for k in self._curves if k is not None]
                if len(subsets) >= _SUBSET_CURVES:
                    del self._curves[subsets[0]]
                self._curves[key] = curve
        return curve


def build_table(models: list[RoutedModel], n_clusters: int, prior: float, repset: RepsetClusters | None = None,
                default_output_tokens: int = DEFAULT_OUTPUT_TOKENS, cost_scale: float = DEFAULT_COST_SCALE,
                min_support: float | None = None, output_scale: np.ndarray | None = None) -> ModelTable:
    """Arrays of `models` (those profiled under `n_clusters` clusters), sorted by name for stable
    tie-breaks, with their λ curve on `repset` (the representative set under the router state).
    `min_support` None: the prior (see the module docstring); `output_scale` None: every
    cluster's answers as long as the average."""
    usable = sorted((m for m in models if len(m.profile.errors) == n_clusters), key=lambda m: m.name)
    n = len(usable)
    psi = np.array([m.profile.errors for m in usable], dtype=np.float64).reshape(n, n_clusters)
    counts = np.array([m.profile.counts for m in usable], dtype=np.float64).reshape(n, n_clusters)
    out_tokens = np.array([m.profile.avg_output_tokens or default_output_tokens for m in usable], dtype=np.float64)
    inp = np.array([m.price.input_per_mtok / 1e6 for m in usable], dtype=np.float64)
    out = np.array([m.price.output_per_mtok / 1e6 for m in usable], dtype=np.float64)
    req = np.array([m.price.per_request for m in usable], dtype=np.float64)
    acc = np.array([m.profile.accuracy for m in usable], dtype=np.float64)
    guard = prior if min_support is None else min_support
    scale = None if output_scale is None else np.asarray(output_scale, dtype=np.float64)
    if repset is None:
        return ModelTable(usable, psi, inp, out_tokens, out, req, acc, counts, prior, cost_scale, guard, scale)
    # The curve's prompts are priced and scored as the router would route them: under a pooled
    # cluster their profile weights hold two ones, which would add two clusters' errors and
    # blend their answer lengths.
    routed = repset.routed_weights
    scale = None if scale is None else normalised_scale(scale, routed)
    tokens = estimate_tokens(np.array([len(item.prompt) for item in repset.repset.items], dtype=np.float64))
    table = ModelTable(usable, psi, inp, out_tokens, out, req, acc, counts, prior, cost_scale, guard, scale, routed,
                       tokens)
    table.calibration()  # computed now, off the request path
    return table


def _allowed(models: object) -> frozenset[str] | None:
    """The model names a caller allows (None: every model). A str is refused, not taken for
    its characters: models="ab" would route among models named "a" and "b"."""
    if models is None:
        return None
    if isinstance(models, (str, bytes)):
        raise TypeError(f"models must be a list of model names, not a {type(models).__name__} (models=[{models!r}])")
    # models=5 or [["a"]] failed in frozenset() with "'int' object is not iterable" or
    # "unhashable type: 'list'", naming no argument.
    if not hasattr(models, "__iter__"):
        raise TypeError(f"models must be a list of model names, not a {type(models).__name__}")
    items = list(models)
    if not all(isinstance(m, str) for m in items):
        raise TypeError(f"models must be model names (str), got {sorted(map(repr, items))}")
    return frozenset(items)


def _check_encodable(texts: list[str]) -> None:
    """ValueError naming the first prompt that is not text UTF-8 can hold: a lone surrogate, as
    `os.fsdecode` or a broken JSON escape leaves one (it failed deep inside routing with a
    UnicodeEncodeError naming no prompt). The gateway's JSON parser refuses them before this."""
    for i, text in enumerate(texts):
        if not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError as exc:
                raise ValueError(f"prompt {i} is not valid text: {exc.reason} "
                                 f"({text[exc.start]!r} at character {exc.start})") from None


def _target(cost_weight: float | None, budget: float | None, quality: float | None) -> RoutingTarget | None:
    named = [(kind, value) for kind, value in (("cost_weight", cost_weight), ("budget", budget), ("quality", quality))
             if value is not None]
    for kind, value in named:
        # float() would take "0.3" from a config file's string, and True as 1: a number is asked for
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"{kind} must be a number, got {value!r}")
    given = [RoutingTarget(kind, float(value)) for kind, value in named]
    if len(given) > 1:
        raise ValueError(f"give one target, not {' and '.join(t.kind for t in given)}")
    return given[0] if given else None


class UniRouter:
    """Embeds prompts and ranks models for them; see the module docstring.

    `weights` is the blocking part (the embedding model). Recent prompts' cluster weights are
    kept in an LRU (system prompts and retries repeat), with their distance to the nearest
    centroid for the drift monitor (None when the state records no drift threshold). Thread-safe:
    the model table is replaced whole, never changed in place, and changes of the models are made
    one at a time.
    """

    def __init__(self, state: RouterState, embedder: Embedder, repset: RepresentativeSet | None = None, *,
                 repset_embedder: Embedder | None = None, default_cost_weight: float = 0.4,
                 default_output_tokens: int = DEFAULT_OUTPUT_TOKENS, cost_scale: float = DEFAULT_COST_SCALE,
                 min_support: float | None = None, lru_size: int = 4096) -> None:
        """`repset_embedder` embeds the representative set when given (a CachedEmbedder over
        `embedder`, say); request prompts always go through `embedder` and the in-memory LRU.
        `cost_scale`: the expected cost per request (prices' unit) that λ = 1 weighs as one unit
        of error rate; `min_support`: the support guard's floor (None: the state's prior)."""
        if not cost_scale > 0:
            raise ValueError(f"cost_scale must be > 0, got {cost_scale}")
        if min_support is not None and min_support < 0:
            raise ValueError(f"min_support must be >= 0, got {min_support}")
        self.state = state
        self.embedder = embedder
        # Made once: a bad default λ fails here, not on every route.
        self.default_target = RoutingTarget("cost_weight", default_cost_weight)
        self.default_output_tokens = default_output_tokens
        self.cost_scale = cost_scale
        self.min_support = min_support
        self._lru: OrderedDict[bytes, tuple[np.ndarray, float]] = OrderedDict()
        self._lru_size = lru_size
        self._lock = Lock()
        # Held while the models change (never while routing): add_model and remove_model read the
        # models and write them back, and two at once would each drop the other's change.
        self._changing = Lock()
        threshold = state.drift_threshold
        self.drift = DriftMonitor(threshold) if threshold is not None else None
        self.repset: RepsetClusters | None = None
        if repset is not None:
            emb = embed_for_routing(repset_embedder or embedder, [i.prompt for i in repset.items], state.max_chars)
            routed = state.cluster_weights(emb) if state.pooled else None
            self.repset = RepsetClusters(repset, state.profile_weights(emb), state.version, state.prior, routed)
        self._models: dict[str, RoutedModel] = {}
        self.table = self._build([])

    # Pickled (to a process pool's workers, say) without its locks and recent prompts' weights,
    # and with its embedder as the embedder pickles itself (the shipped ones, by where their model
    # is read from, loaded again on the copy's first embedding): the copy decides as this router.
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_changing", "_lru")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=Lock(), _changing=Lock(), _lru=OrderedDict())

    @classmethod
    def load(cls, state: str | Path = "fast", repset: str | Path | None = DEFAULT_REPSET, *,
             cache_dir: str | Path | None = None, **options) -> "UniRouter":
        """A router on a shipped state (`"fast"`, `"accurate"`) or a state folder built by
        `uniroute build-state`, with a representative set file (default: the shipped one; None
        for none). `cache_dir` keeps the set's embeddings on disk between loads."""
        directory = state_path(state)
        router_state = RouterState.load(directory)
        embedder = state_embedder(router_state, directory)
        rs = load_repset(repset) if repset is not None else None
        if cache_dir is None:
            return cls(router_state, embedder, rs, **options)
        # Only the representative set is cached on disk: request prompts never are.
        cached = CachedEmbedder(embedder, cache_dir)
        try:
            return cls(router_state, embedder, rs, repset_embedder=cached, **options)
        finally:
            cached.close()

    # --- models ---------------------------------------------------------------------------

    @property
    def default_cost_weight(self) -> float:
        """The λ a route without a target uses."""
        return self.default_target.value

    @property
    def n_clusters(self) -> int:
        return self.state.k

    @property
    def models(self) -> list[RoutedModel]:
        """The routable models, by name."""
        return list(self.table.models)

    def profile(self, scores: dict[str, float], avg_output_tokens: float = 0.0) -> Profile:
        """Ψ of a model from its scores in [0, 1] by representative prompt id (unscored prompts are
        ignored). ValueError without a representative set, for ids not in it, with no score, or
        for a score or `avg_output_tokens` out of range (`RepsetClusters.profile`)."""
        if self.repset is None:
            raise ValueError("this router has no representative set: give models a stored profile")
        # A list of scores would be read as prompt ids, all unknown, which misleads.
        if not isinstance(scores, Mapping):
            raise TypeError(f"scores must be a dict of scores by representative prompt id, not {type(scores).__name__}")
        unknown = self.repset.unknown_ids(scores)
        if unknown:
            raise ValueError(f"scores name {len(unknown)} prompts not in the representative set "
                             f"(version {self.repset.repset.version}), e.g. {unknown[:3]}")
        if not scores:
            raise ValueError("scores must hold at least one prompt's score")
        return self.repset.profile(scores, avg_output_tokens)

    def add_model(self, name: str, price: Price, *, scores: dict[str, float] | None = None,
                  profile: Profile | None = None, avg_output_tokens: float = 0.0) -> RoutedModel:
        """Make a model routable from its `scores` on the representative set or a stored
        `profile` (made under this router's state); replaces a model of the same name.
        TypeError for a name that is not a str or a price that is not a `Price`."""
        # Checked here: the table sorts by name and reads the price's fields, and would fail
        # further in with a message about neither.
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        if not isinstance(price, Price):
            raise TypeError(f"price must be a Price, not {type(price).__name__}")
        if (scores is None) == (profile is None):
            raise ValueError("give a model's scores on the representative set or its profile, not both")
        if profile is None:
            profile = self.profile(scores, avg_output_tokens)
        elif not isinstance(profile, Profile):
            raise TypeError(f"profile must be a Profile (Profile.from_dict reads a stored one), "
                            f"not {type(profile).__name__}")
        else:
            # An error outside [0, 1] (NaN included) would win or lose every routing in its cluster.
            profile.validate()
            if len(profile.errors) != self.n_clusters:
                raise ValueError(f"the profile of {name!r} has {len(profile.errors)} clusters; "
                                 f"this router state has {self.n_clusters}")
            # Ψ's clusters are this state's only when it was made under it: another state of as
            # many clusters numbers other regions alike.
            if profile.state_version != self.state.version:
                raise ValueError(f"the profile of {name!r} was made under router state "
                                 f"{profile.state_version}, not this router's {self.state.version}: "
                                 f"profile the model again from its scores")
        model = RoutedModel(name, price, profile)
        with self._changing:
            self._set_models([*(m for m in self._models.values() if m.name != name), model])
        return model

    def remove_model(self, name: str) -> None:
        """Stop routing to a model (KeyError when unknown)."""
        with self._changing:
            if name not in self._models:
                raise KeyError(name)
            self._set_models([m for m in self._models.values() if m.name != name])

    def set_models(self, models: list[RoutedModel]) -> None:
        """Route among exactly `models` from now on (those profiled under another number of
        clusters are left out; of two of one name, the later); the λ curve is recomputed here, off
        the request path. Nothing changes when the table cannot be built."""
        with self._changing:
            self._set_models(models)

    def _set_models(self, models: list[RoutedModel]) -> None:
        chosen = {m.name: m for m in models}
        # Built before anything is replaced: a model the table refuses must not stay behind in
        # `_models`, where every later add_model or remove_model would meet it again.
        table = self._build(list(chosen.values()))
        self._models = chosen
        self.table = table

    def _build(self, models: list[RoutedModel]) -> ModelTable:
        return build_table(models, self.n_clusters, self.state.prior, self.repset, self.default_output_tokens,
                           self.cost_scale, self.min_support, self.state.output_scale)

    def calibration(self, models: list[str] | frozenset[str] | None = None) -> Calibration | None:
        """The λ curve: what each cost weight buys on the representative set (among `models`
        when given; None when none of them is routable). TypeError for a str as `models`."""
        return self.table.calibration(_allowed(models))

    # --- prompts -> cluster weights --------------------------------------------------------

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
            emb = embed_for_routing(self.embedder, [texts[i] for i in missing], self.state.max_chars)
            rows, distances = self.state.weights_and_distance(emb)
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

    # --- decisions -------------------------------------------------------------------------

    def resolve(self, target: RoutingTarget | None, models: frozenset[str] | None = None) -> Resolution:
        """The cost weight a target asks for among `models` (default: the router's default λ).
        A budget or quality target needs the λ curve: NotCalibrated without one."""
        target = target or self.default_target
        return resolve(target, self.table.calibration(models))

    def decide(self, weights: np.ndarray, resolution: Resolution, input_tokens: float,
               models: frozenset[str] | set[str] | None = None,
               excluded: frozenset[str] | set[str] = frozenset(), min_cost_weight: float = 0.0,
               max_output_tokens: float | None = None, choices: int = 1) -> Decision | None:
        """Rank the models for one prompt's (K,) cluster weights; see `decide_batch`
        (`max_output_tokens`: the request's limit on each answer, if any; `choices`: the answers it asks for).

        Under K-means a prompt's weights are one-hot, so its decision depends on nothing but its
        cluster and the request's terms: it is remembered in the model table (a new table, made
        whenever the models change, starts empty), and a gateway's steady traffic skips the
        matrix work."""
        weights = np.asarray(weights)
        table = self.table
        key = None
        if self.state.theta is None:
            key = (int(weights.argmax()), resolution, float(input_tokens), None if models is None else frozenset(models),
                   frozenset(excluded), min_cost_weight, max_output_tokens, choices)
            found = table.decisions.get(key)
            if found is not None or key in table.decisions:
                return found
        limit = None if max_output_tokens is None else np.array([max_output_tokens], dtype=np.float64)
        decision = self.decide_batch(weights[None, :], resolution, np.array([input_tokens]), models, excluded,
                                     min_cost_weight, table, limit, np.array([choices]))[0]
        if key is not None:
            if len(table.decisions) >= _DECISIONS:
                table.decisions.clear()
            table.decisions[key] = decision
        return decision

    def decide_batch(self, weights: np.ndarray, resolution: Resolution, input_tokens: np.ndarray,
                     models: frozenset[str] | set[str] | None = None,
                     excluded: frozenset[str] | set[str] = frozenset(),
                     min_cost_weight: float = 0.0, table: ModelTable | None = None,
                     max_output_tokens: np.ndarray | None = None,
                     choices: np.ndarray | None = None) -> list[Decision | None]:
        """Rank the models for (n, K) cluster weights and (n,) prompt token counts (and the
        requests' (n,) limits on each answer's tokens, inf for none, and answers asked for), in one matrix
        operation, at the resolved target's λ (or `min_cost_weight`, a floor such as the budget
        guard's, when higher); None for each prompt when no model is allowed. Costs are divided
        by the fixed cost scale, never by a quantity of the candidates, so a model no prompt
        chooses changes no decision; the support guard ranks models without support in the
        prompt's clusters after those with it (module docstring). `table`: the model table to
        rank in (default: the current one)."""
        table = table or self.table
        n = len(weights)
        idx: slice | np.ndarray = slice(None)  # every model: views, no copies
        if models is not None or excluded:
            idx = np.flatnonzero([(models is None or m in models) and m not in excluded for m in table.names])
            if idx.size == 0:
                return [None] * n
        lam = max(resolution.cost_weight, min_cost_weight)
        gamma = weights @ table.psi[idx].T  # (n, M)
        support = table.support(weights, idx)
        costs = table.expected_costs(np.asarray(input_tokens, dtype=np.float64), weights,
                                     max_output_tokens, choices)[:, idx]  # (n, M)
        eligible = policy.supported(support, table.min_support, gamma, 1.0 - table.accuracy[idx], table.prior)
        order = policy.rank(gamma, costs / table.cost_scale, lam, eligible)  # (n, M)
        rows = np.arange(n)[:, None]
        gamma, support, costs = gamma[rows, order], support[rows, order], costs[rows, order]
        clusters = weights.argmax(axis=1)
        names = table.name_array[idx][order]
        return [Decision(names[r, 0], int(clusters[r]), float(gamma[r, 0]), float(costs[r, 0]), lam,
                         tuple(names[r]), resolution, gamma[r], costs[r], support[r], table.prior, table.min_support)
                for r in range(n)]

    def route(self, prompts: str | list[str], *, cost_weight: float | None = None, budget: float | None = None,
              quality: float | None = None, models: list[str] | None = None) -> Decision | list[Decision]:
        """Route one prompt (a Decision) or a batch (a list, embedded in one call) for at most one
        target: a cost weight λ, a budget (expected cost per request, in the prices' unit) or a
        quality (fraction of the best single model's expected score). NoRoutableModel when no
        model may answer; NotCalibrated for a budget or quality without a representative set."""
        # None or a number would fail in list() with a message about neither route nor prompts;
        # a chat message (a dict) would be routed as its keys, "role" and "content", and a set's
        # decisions come in an order no caller can match to its prompts.
        if not isinstance(prompts, str) and (not hasattr(prompts, "__iter__")
                                             or isinstance(prompts, (Mapping, set, frozenset))):
            raise TypeError(f"route takes a prompt (str) or a list of them, not {type(prompts).__name__}")
        texts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not all(isinstance(t, str) for t in texts):  # bytes would iterate as ints
            raise TypeError(f"route takes a prompt (str) or a list of them, not {type(prompts).__name__} "
                            f"of {sorted({type(t).__name__ for t in texts if not isinstance(t, str)})}")
        _check_encodable(texts)
        allowed = _allowed(models)
        # One table throughout: one another thread swapped in while the prompts are embedded
        # could lack the allowed models checked here (every decision None) or price the target
        # on other models than those that decide.
        table = self.table
        if not table.models or (allowed is not None and not allowed & set(table.names)):
            raise NoRoutableModel("no routable model: add a model first" if not table.models
                                  else f"none of {sorted(allowed)} is a routable model")
        target = _target(cost_weight, budget, quality) or self.default_target
        if self.repset is None and target.kind != "cost_weight":
            # resolve() can only say the curve is "not built yet": here it never will be.
            raise NotCalibrated(f"a {target.kind} target needs the λ curve, measured on a representative set: "
                                f"this router has none (UniRouter.load(..., repset=...) gives it one)")
        resolution = resolve(target, table.calibration(allowed))
        tokens = estimate_tokens(np.array([len(t) for t in texts], dtype=np.float64))
        decisions = self.decide_batch(self.weights(texts), resolution, tokens, allowed, table=table)
        return decisions[0] if isinstance(prompts, str) else decisions
