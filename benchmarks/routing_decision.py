"""Routing-decision latency: `python -m benchmarks.routing_decision`.

Times the gateway's decision for 1 prompt and for a batch of 1,000 prompts over 100 candidate
models, from a ready embedding for the K-means and the learned-map cluster weights, and from
text (embedding included, the same for both) for the shipped state's method. The decision is the same code path as the gateway:
cluster_weights -> gamma = W @ Psi.T -> policy.rank. Prompts are real RouterBench prompts
(the vendored subset); Psi and costs are random (their values do not change the timing).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = ROOT / "app" / "resources" / "state"
DATA_DIR = ROOT / "app" / "resources" / "routerbench_zs"


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


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(prog="python -m benchmarks.routing_decision", description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=100)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=50, help="timed runs per case without embedding")
    p.add_argument("--embed-repeats", type=int, default=3, help="timed runs per case with embedding")
    args = p.parse_args(argv)

    from router_core import policy
    from router_core.datasets import load_routerbench
    from router_core.embedding import embed_for_routing, load_embedder
    from router_core.state import RouterState

    state = RouterState.load(STATE_DIR)
    embedder = load_embedder(state.embedder)  # no cache: the embedding is timed for real
    prompts = load_routerbench(DATA_DIR).prompts
    rng = np.random.default_rng(0)
    texts = [prompts[i] for i in rng.choice(len(prompts), size=args.batch, replace=args.batch > len(prompts))]
    psi = rng.uniform(size=(args.models, state.k))
    cost = policy.normalise_costs(rng.uniform(0.01, 1.0, size=args.models))
    emb_all = embed_for_routing(embedder, texts, state.max_chars)
    states = {"uniroute_kmeans": RouterState(state.embedder, state.max_chars, state.centroids),
              "uniroute_learned_map": RouterState(state.embedder, state.max_chars, state.centroids,
                                                  theta=state.theta if state.theta is not None else 30 * state.centroids,
                                                  method="uniroute_learned_map")}
    print(f"state: K={state.k}, d={state.dim}, embedder {state.embedder} (max_chars {state.max_chars}); "
          f"{args.models} models; threads: {os.cpu_count()} cores", file=sys.stderr)
    for method, st in states.items():
        def decide(emb: np.ndarray, st: RouterState = st) -> np.ndarray:
            return policy.rank(st.cluster_weights(emb) @ psi.T, cost, 0.1)

        for batch in (1, args.batch):
            emb, batch_texts = emb_all[:batch], texts[:batch]
            _report(f"{method}: decision from embedding", batch, _times(lambda: decide(emb), args.repeats))
            # Embedding dominates and is the same for both methods: time it with the state's own.
            if method == state.method:
                reps = max(args.embed_repeats, 20) if batch == 1 else args.embed_repeats
                _report(f"{method}: embedding + decision", batch,
                        _times(lambda: decide(embed_for_routing(embedder, batch_texts, st.max_chars)), reps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
