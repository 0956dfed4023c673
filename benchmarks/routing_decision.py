"""Routing-decision latency: `python -m benchmarks.routing_decision`.

Times the gateway's decision for 1 prompt and for a batch of 1,000 prompts over 100 candidate
models, from ready cluster weights for the K-means and the learned-map states, and from text
(embedding included, the same for both) for the shipped state's method. It is the gateway's
code path: `UniRouter.decide_batch` (gamma = W @ Psi.T, costs, policy.rank, error intervals)
and `UniRouter.route`. Prompts are real RouterBench prompts (the demo's subset); Psi and prices
are random (their values do not change the timing).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable

import numpy as np

from app.demo import ROUTERBENCH_DIR


def _times(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm-up: the first call pays lazy initialisation (and fills caches)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _report(label: str, batch: int, times: list[float]) -> None:
    q = np.percentile(np.array(times) * 1e3, [50, 95])
    print(f"{label:<44} batch {batch:>5}  p50 {q[0]:9.3f} ms  p95 {q[1]:9.3f} ms  "
          f"per prompt {q[0] / batch * 1e3:9.1f} us  (n={len(times)})")


def random_models(k: int, n: int, rng: np.random.Generator) -> list:
    """`n` models with random profiles over `k` clusters and random per-request prices."""
    from router_core.pricing import Price
    from router_core.profiles import Profile
    from router_core.router import RoutedModel

    return [RoutedModel(f"m{j:03d}", Price(per_request=float(rng.uniform(0.01, 1.0))),
                        Profile(list(rng.uniform(size=k)), [20.0] * k, 0.5, 400, 200.0, "bench", "bench"))
            for j in range(n)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.routing_decision", description=__doc__.splitlines()[0])
    p.add_argument("--state", default="fast", help="a shipped state (fast, accurate) or a state folder")
    p.add_argument("--models", type=int, default=100)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=50, help="timed runs per case without embedding")
    p.add_argument("--embed-repeats", type=int, default=3, help="timed runs per case with embedding")
    args = p.parse_args(argv)

    from router_core.datasets import load_routerbench
    from router_core.pricing import estimate_tokens
    from router_core.router import UniRouter
    from router_core.shipped import state_path
    from router_core.state import RouterState, state_embedder

    directory = state_path(args.state)
    state = RouterState.load(directory)
    embedder = state_embedder(state, directory)  # no cache: the embedding is timed for real
    prompts = load_routerbench(ROUTERBENCH_DIR).prompts
    rng = np.random.default_rng(0)
    texts = [prompts[i] for i in rng.choice(len(prompts), size=args.batch, replace=args.batch > len(prompts))]
    models = random_models(state.k, args.models, rng)
    tokens = estimate_tokens(np.array([len(t) for t in texts], dtype=np.float64))
    states = {"uniroute_kmeans": RouterState(state.embedder, state.max_chars, state.centroids),
              "uniroute_learned_map": RouterState(state.embedder, state.max_chars, state.centroids,
                                                  theta=state.theta if state.theta is not None else 30 * state.centroids,
                                                  method="uniroute_learned_map")}
    print(f"state {args.state}: K={state.k}, d={state.dim}, embedder {state.embedder} (max_chars {state.max_chars}); "
          f"{args.models} models; {os.cpu_count()} cores", file=sys.stderr)
    for method, st in states.items():
        router = UniRouter(st, embedder)
        router.set_models(models)
        resolution = router.resolve(None)
        weights = router.weights(texts)
        for batch in (1, args.batch):
            w, tok, batch_texts = weights[:batch], tokens[:batch], texts[:batch]
            _report(f"{method}: decision from cluster weights", batch,
                    _times(lambda: router.decide_batch(w, resolution, tok), args.repeats))
            # Embedding dominates and is the same for both methods: time it with the state's own.
            if method == state.method:
                reps = max(args.embed_repeats, 20) if batch == 1 else args.embed_repeats
                fresh = UniRouter(st, embedder, lru_size=0)  # no LRU hit: every prompt is embedded
                fresh.set_models(models)
                _report(f"{method}: embedding + decision", batch, _times(lambda: fresh.route(batch_texts), reps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
