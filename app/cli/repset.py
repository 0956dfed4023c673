"""`uniroute repset build`: draw a representative set from prompts (a capture export, say).

    uniroute repset build --data capture.jsonl --state DIR --per-cluster 15 --out repset.jsonl \\
        [--reference-model M --url http://gateway:8000 --admin-key K [--api-key CLIENT_KEY]]

Each prompt of `--data` (JSONL rows `{"id", "prompt"}`, optionally `grader`, `reference`,
`task`) is embedded and assigned a cluster under the state; `--per-cluster` prompts are drawn
from each cluster, no two with routing embeddings at cosine similarity `--near-duplicate` or
more (router_core.repset_build). An item keeps the `grader` and `reference` its row carries;
otherwise its grader is `--grader` (default `llm_judge:rating`) and its reference, for a judge,
is model M's answer, asked through the gateway's /v1/chat/completions (with `--api-key`, the
gateway's client key, when it has keys). Its task is the row's `task`, else `cluster-<k>`.
"""
from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from tqdm import tqdm

from app.cli import (
    DEFAULT_CACHE,
    AdminError,
    UsageError,
    admin_call,
    finite_float,
    gateway_options,
    one_line_errors,
)
from router_core.repset_build import DEFAULT_THRESHOLD

DEFAULT_GRADER = "llm_judge:rating"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("repset", help="build a representative set from prompts")
    verbs = p.add_subparsers(dest="verb", required=True)
    b = verbs.add_parser("build", help="draw a representative set stratified by cluster")
    b.add_argument("--data", required=True, help="JSONL of {id, prompt[, grader, reference, task]} rows")
    b.add_argument("--state", required=True, help="router state folder (or shipped name) the clusters come from")
    b.add_argument("--per-cluster", type=int, required=True, help="items to draw from each cluster")
    b.add_argument("--out", required=True, help="the representative set file to write")
    b.add_argument("--grader", default=DEFAULT_GRADER, help="grader of items whose row names none (default %(default)s)")
    b.add_argument("--near-duplicate", type=finite_float, default=DEFAULT_THRESHOLD,
                   help="cosine similarity at which two prompts count as one (default %(default)s)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--reference-model", help="registered model whose answers become judge items' references")
    gateway_options(b)  # the admin key checks that the reference model is registered
    b.add_argument("--api-key", default=os.environ.get("UNIROUTE_API_KEY"), help="the gateway's client key, if any")
    b.add_argument("--max-tokens", type=int, default=1024, help="length limit of a reference answer")
    b.add_argument("--concurrency", type=int, default=8)
    b.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="embedding cache directory")
    b.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    gateway_errors = one_line_errors("repset build", AdminError, 1)(_run)
    return one_line_errors("repset build", UsageError, 2, "error: ")(gateway_errors)(args)


def read_rows(path: str) -> list[dict]:
    """The rows of a prompts file: objects with a non-empty string id (unique) and prompt."""
    from router_core.datasets import jsonl_records

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    rows, seen = [], set()
    for where, row in jsonl_records(text, path, UsageError):
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) and row[k] for k in ("id", "prompt")):
            raise UsageError(f"{where}: expected an object with non-empty string 'id' and 'prompt'")
        if row["id"] in seen:
            raise UsageError(f"{where}: id {row['id']!r} appears twice")
        seen.add(row["id"])
        rows.append(row)
    if not rows:
        raise UsageError(f"{path}: no rows")
    return rows


def ask(client: httpx.Client, url: str, model: str, prompt: str, api_key: str | None, max_tokens: int) -> str:
    """Model `model`'s answer to `prompt` through the gateway (AdminError when there is none)."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
            "max_tokens": max_tokens}
    try:
        r = client.post(url.rstrip("/") + "/v1/chat/completions", json=body, headers=headers)
    except httpx.TransportError as exc:
        raise AdminError(f"cannot reach the gateway at {url}: {exc}") from None
    if r.status_code >= 400:
        raise AdminError(f"{model} answered HTTP {r.status_code}: {r.text[:200]}")
    try:
        text = r.json()["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError):
        text = ""
    if not text.strip():
        raise AdminError(f"{model} gave an empty answer to a prompt: its reference would be empty")
    return text


def references(args: argparse.Namespace, prompts: list[str]) -> list[str]:
    """Model --reference-model's answers to `prompts`, asked --concurrency at a time."""
    if args.admin_key:
        admin_call(args.url, args.admin_key, "GET", f"/models/{args.reference_model}")
    with httpx.Client(timeout=httpx.Timeout(120.0, connect=5.0)) as client, \
            ThreadPoolExecutor(max_workers=max(1, args.concurrency)) as pool:
        answers = pool.map(lambda p: ask(client, args.url, args.reference_model, p, args.api_key, args.max_tokens),
                           prompts)
        return list(tqdm(answers, total=len(prompts), desc=f"references from {args.reference_model}",
                         file=sys.stderr))


def _run(args: argparse.Namespace) -> int:
    from router_core.embedding import CachedEmbedder, embed_for_routing
    from router_core.repset import JUDGE, RepItem, RepsetError, write_repset
    from router_core.repset_build import stratified_draw
    from router_core.shipped import state_path
    from router_core.state import RouterState, state_embedder

    if args.per_cluster < 1:
        raise UsageError("--per-cluster must be >= 1")
    # checked before the embedding, not by the draw after it (a ValueError's traceback there)
    if not 0 < args.near_duplicate <= 1:
        raise UsageError(f"--near-duplicate must be in (0, 1], got {args.near_duplicate:g}")
    rows = read_rows(args.data)
    try:
        directory = state_path(args.state)
        state = RouterState.load(directory)
        embedder = CachedEmbedder(state_embedder(state, directory), args.cache_dir)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load the state {args.state}: {exc}") from None
    print(f"embedding {len(rows)} prompts under the {state.k}-cluster state {state.version}", file=sys.stderr)
    emb = embed_for_routing(embedder, [r["prompt"] for r in rows], state.max_chars)
    labels = state.cluster_weights(emb).argmax(axis=1)
    draw = stratified_draw(emb, labels, state.k, args.per_cluster, args.near_duplicate, args.seed, state.pooled)
    if state.pooled:
        print(f"clusters {list(state.pooled)} are pooled (profiled on the whole set): nothing drawn there",
              file=sys.stderr)
    chosen = [(rows[i], int(labels[i])) for i in draw.indices]
    graders = [row.get("grader") or args.grader for row, _ in chosen]
    missing = [j for j, (row, _) in enumerate(chosen) if not row.get("reference")]
    if missing and any(not graders[j].startswith(JUDGE) for j in missing):
        raise UsageError("rows graded other than by an llm_judge need their own 'reference'")
    answers: dict[int, str] = {}
    if missing:
        if not args.reference_model:
            raise UsageError(f"{len(missing)} drawn items have no reference: give --reference-model "
                             "(with --url) to ask a model for them")
        answers = dict(zip(missing, references(args, [chosen[j][0]["prompt"] for j in missing])))
    items = [RepItem(row["id"], row["prompt"], row.get("reference") or answers[j], graders[j],
                     row.get("task") or f"cluster-{cluster}")
             for j, (row, cluster) in enumerate(chosen)]
    try:
        written = write_repset(items, args.out)
    except RepsetError as exc:
        raise UsageError(str(exc)) from None
    per = ", ".join(f"{c}: {n}" for c, n in draw.per_cluster.items())
    print(f"wrote {args.out}: {len(items)} items (per cluster {per}), version {written.version}; "
          f"{draw.near_duplicates} near-duplicates left out", file=sys.stderr)
    short = draw.short(args.per_cluster)
    if short:
        print(f"warning: clusters {sorted(short)} have fewer than {args.per_cluster} distinct prompts", file=sys.stderr)
    return 0
