"""`uniroute build-state`: fit the router state (clusters, optional learned map) on training prompts.

The state is what the gateway loads at start-up (`state.npz` + `state.json`). Only prompts are
needed for K-means (a capture export, `{"id", "prompt"}` rows, will do); the learned map also
reads the dataset's labels, i.e. the training LLMs' correctness on those prompts.

Without `--clusters`, K is chosen on the data (router_core.choose_k: among the K leaving every
cluster `--min-cluster-size` prompts, the largest whose mean silhouette is within 0.005 of the
best). The state's metadata records
the choice and, per cluster, its size and the prompts nearest its centroid (`clusters`). Where
the data records the training LLMs' answers (RouterBench CSVs), the state also gets its output
scale: how long an answer each cluster's prompts draw (router_core.output_scale).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from app.cli import DEFAULT_CACHE, UsageError, finite_float, one_line_errors
from router_core.datasets import FORMATS
from router_core.state import METHODS

DEFAULT_PRIOR = 4.0
DEFAULT_MIN_CLUSTER = 15


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build-state", help="fit the router state (clusters) on training prompts")
    p.add_argument("--data", required=True, action="append",
                   help="dataset file or directory; repeat to concatenate several")
    p.add_argument("--format", default=None, choices=FORMATS)
    p.add_argument("--clusters", type=int, default=None,
                   help="K (default: chosen on the data by mean silhouette, see router_core.choose_k)")
    p.add_argument("--min-cluster-size", type=int, default=DEFAULT_MIN_CLUSTER,
                   help="when choosing K, the fewest prompts a cluster may hold (default %(default)s)")
    p.add_argument("--embedder", default="accurate", help="accurate | fast | sentence-transformers name or path")
    p.add_argument("--max-chars", type=int, default=None, help="characters of each prompt's tail to embed")
    p.add_argument("--method", default="uniroute_kmeans", choices=METHODS)
    p.add_argument("--prior", type=finite_float, default=DEFAULT_PRIOR,
                   help="Psi shrinkage pseudo-counts stored with the state (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="embedding cache directory")
    p.add_argument("--out", required=True, help="directory to write state.npz and state.json into")
    p.add_argument("--output-scale-only", action="store_true",
                   help="only measure the output scale of the state already in --out from --data's recorded "
                        "answers (the data it was fitted on); its clusters, and the profiles made under them, stay")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return one_line_errors("build-state", UsageError, 2, "error: ")(_run)(args)


def _load(paths: list[str], fmt: str | None) -> tuple[list[str], np.ndarray | None]:
    """Prompts of all datasets, and their losses when every part has the same models."""
    from router_core.datasets import load_dataset

    prompts: list[str] = []
    losses, models = [], None
    for path in paths:
        try:
            data = load_dataset(path, fmt)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot load {path}: {exc}") from None
        prompts += list(data.prompts)
        if models is None:
            models = list(data.models)
        losses.append(1.0 - data.scores if list(data.models) == models else None)
    joined = None if not models or any(x is None for x in losses) else np.concatenate(losses)
    return prompts, joined


def _answers(paths: list[str], fmt: str | None) -> dict[str, list[str]]:
    """Prompt text -> the recorded answers to it, from the datasets that record answers
    (RouterBench CSVs' responses); empty when none does."""
    from router_core.datasets import detect_format, routerbench_answers

    return routerbench_answers([p for p in paths if (fmt or detect_format(p)) == "routerbench"])


def _measure_output_scale(state, emb: np.ndarray, prompts: list[str], args: argparse.Namespace) -> None:
    """Give `state` the output scale of the data's recorded answers, when it records any."""
    from router_core.output_scale import mean_answer_lengths, set_output_scale

    lengths = mean_answer_lengths(prompts, _answers(args.data, args.format))
    answered = int(np.isfinite(lengths).sum())
    if not answered:
        return
    set_output_scale(state, emb, lengths, "the dataset's recorded answers, in characters")
    print(f"output scale per cluster (answer length over the average, from {answered} answered prompts): "
          f"{np.round(state.output_scale, 2).tolist()}", file=sys.stderr)


def _check_fitted_on(state, emb: np.ndarray, out: str) -> None:
    """UsageError unless the prompts of embeddings `emb` fall into the state's clusters as the
    prompts it was fitted on did (the sizes its metadata `clusters` records, when it has them):
    other data of the same size would pass the count and silently measure a wrong scale."""
    entries = state.metadata.get("clusters")
    recorded = {e["id"]: e["size"] for e in entries if isinstance(e, dict) and isinstance(e.get("size"), int)} \
        if isinstance(entries, list) else {}
    if not recorded:
        return
    sizes = np.bincount(state.assign(emb)[0], minlength=state.k)
    if any(recorded.get(k, int(sizes[k])) != int(sizes[k]) for k in range(state.k)):
        raise UsageError(f"--data's prompts fall into the clusters of the state in {out} as "
                         f"{sizes.tolist()}; the prompts it was fitted on fell as "
                         f"{[recorded.get(k) for k in range(state.k)]}: give the data it was fitted on")


def _add_output_scale(args: argparse.Namespace, prompts: list[str]) -> int:
    from router_core.embedding import CachedEmbedder, embed_for_routing
    from router_core.state import RouterState, state_embedder

    try:
        state = RouterState.load(args.out)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if len(prompts) != state.metadata.get("n_prompts"):
        raise UsageError(f"--data holds {len(prompts)} prompts; the state in {args.out} was fitted on "
                         f"{state.metadata.get('n_prompts')}: give the data it was fitted on")
    embedder = CachedEmbedder(state_embedder(state, args.out), args.cache_dir)
    emb = embed_for_routing(embedder, prompts, state.max_chars)
    _check_fitted_on(state, emb, args.out)
    _measure_output_scale(state, emb, prompts, args)
    if state.output_scale is None:
        raise UsageError("--data records no answers to measure an output scale from")
    state.save(args.out)
    print(f"wrote the output scale of {args.out}", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    from router_core.choose_k import DEFAULT_TOLERANCE, candidate_ks, choose_k
    from router_core.cluster_summary import describe
    from router_core.embedding import FAST_DIRNAME, embed_for_routing, load_embedder
    from router_core.shipped import FAST_EMBEDDER_DIR
    from router_core.state import build_state
    from router_core.text import DEFAULT_MAX_CHARS

    prompts, losses = _load(args.data, args.format)
    if args.output_scale_only:
        return _add_output_scale(args, prompts)
    if args.clusters is not None and not 1 <= args.clusters <= len(prompts):
        raise UsageError(f"--clusters must be between 1 and the number of prompts ({len(prompts)})")
    if args.method == "uniroute_learned_map" and losses is None:
        raise UsageError("the learned map needs labels from datasets that share the same models")
    if args.prior < 0:
        raise UsageError("--prior must be >= 0")
    max_chars = args.max_chars or DEFAULT_MAX_CHARS
    fast_dir = Path(args.out) / FAST_DIRNAME
    if args.embedder == "fast" and not (fast_dir / "model.safetensors").exists():
        # A fast state carries its own copy of the static model it was fitted with (the shipped
        # one), so that it still loads after an upgrade ships another; one already beside the
        # state (a rebuild) is the state's own and stays.
        shutil.copytree(FAST_EMBEDDER_DIR, fast_dir, dirs_exist_ok=True)
    try:
        embedder = load_embedder(args.embedder, args.cache_dir, fast_dir=fast_dir)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load embedder {args.embedder!r}: {exc}") from None
    print(f"embedding {len(prompts)} prompts with {args.embedder}", file=sys.stderr)
    emb = embed_for_routing(embedder, prompts, max_chars)  # on disk now: build_state's second pass reads it
    metadata: dict = {"training_set": [Path(p).name for p in args.data]}
    k = args.clusters
    if k is None:
        choice = choose_k(emb, candidate_ks(len(prompts), args.min_cluster_size), args.min_cluster_size, args.seed)
        k = choice.k
        metadata["k_choice"] = {"criterion": f"largest K within {DEFAULT_TOLERANCE} of the best mean silhouette",
                                "min_cluster_size": args.min_cluster_size,
                                "silhouettes": {str(c): round(v, 4) for c, v in choice.silhouettes.items()},
                                "smallest_cluster": {str(c): v for c, v in choice.smallest.items()}}
        # a K left out for a cluster below the minimum says so, or a better silhouette beside the
        # chosen K would read as a wrong choice
        table = ", ".join(f"K={c}: {v:.3f}" + (f" (a cluster of {choice.smallest[c]})"
                                              if choice.smallest[c] < args.min_cluster_size else "")
                          for c, v in choice.silhouettes.items())
        print(f"chose K={k}: the largest within {DEFAULT_TOLERANCE} of the best mean silhouette among the K "
              f"whose every cluster holds {args.min_cluster_size} prompts or more ({table})", file=sys.stderr)
    state = build_state(
        prompts, embedder, k, args.seed, args.method,
        embedder_spec=args.embedder, max_chars=max_chars, losses=losses, prior=args.prior, metadata=metadata,
    )
    state.metadata["clusters"] = describe(state.centroids, emb, prompts)
    _measure_output_scale(state, emb, prompts, args)
    state.save(args.out)
    print(f"wrote {args.method} state, K={state.k}, d={state.dim}, to {args.out}", file=sys.stderr)
    return 0

