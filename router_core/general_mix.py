"""The general training mix and the general default router states built on it.

The shipped states were fitted on three RouterBench tasks only, so real open-ended instructions
fall far from every centroid. This module assembles a broader mix from the shared data folder
(`../shared/data`, see its README), picks K by cross-validation, and fits one state per embedder:

- fit: RouterBench train CSVs (11 LLMs' labels), RouterDC's train files and its files without a
  split (7 LLMs' soft scores), part of the rated arena-bench-v1 prompts (13 LLMs' GPT-4 ratings),
  and the Arena-Hard v0.1 prompts (prompt only);
- held out (never fitted): RouterBench and RouterDC test files, `heldout_share` of the rated
  arena-bench-v1 prompts and of RouterDC's MBPP (the gradable prompts the general
  representative set draws from), and Arena-Hard v2.0, the check on unseen traffic;
- pooled (`POOLED_TASKS`): RouterDC's Chinese C-Eval and CMMLU are fitted, so that the states
  know the region where text the `fast` embedder cannot read lands (Chinese, and with it most
  other non-Latin scripts), but nothing grades a Chinese answer: a cluster made mostly of them is
  pooled, i.e. profiled on the whole representative set (`RouterState.profile_weights`);
- left out by default (`DEFAULT_EXCLUDED`): RouterDC's option-less ARC completion template, which
  forms clusters no gradable held-out prompt falls in;
- deduplicated (whitespace- and case-insensitive), with any fit prompt that contains a held-out
  prompt's question dropped (the same question in another template), then capped per benchmark
  task (`MixConfig.cap`, 300) so that MMLU-sized benchmarks do not swamp the open-ended prompts,
  which are all kept.

K is chosen per embedder by cross-validated Brier score of the per-cluster profiles (each labelled
source with its own LLMs; a pooled cluster predicts each model's mean), among the K whose every
cluster that is not pooled holds `floor` gradable held-out prompts.

`python -m router_core.general_mix --help` rebuilds the states; router_core.general_repset
builds the matching representative set from the held-out prompts.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from router_core import clustering
from router_core.datasets import (
    RoutingDataset,
    load_jsonl,
    load_routerbench,
    load_routerdc,
    read_routerbench_rows,
    routerbench_answers,
)
from router_core.drift import drift_threshold, nearest_distance
from router_core.embedding import (
    FAST_DIRNAME,
    CachedEmbedder,
    Embedder,
    embed_for_routing,
    load_embedder,
)
from router_core.output_scale import mean_answer_lengths, set_output_scale
from router_core.profiles import cluster_profiles
from router_core.shipped import FAST_EMBEDDER_DIR
from router_core.state import RouterState, build_state, state_embedder
from router_core.text import DEFAULT_MAX_CHARS

ROUTERBENCH, ROUTERDC = "routerbench", "routerdc"
ARENA_RATED, ARENA_V01, ARENA_V20 = "arena-bench-v1", "arena-hard-v0.1", "arena-hard-v2.0"
_ARENA_DIR = "arena_bench_v1"
_ARENA_FILES = {ARENA_RATED: "routing.jsonl", ARENA_V01: "prompts-arena-hard-v0.1.jsonl",
                ARENA_V20: "prompts-arena-hard-v2.0.jsonl"}
_RB_DIR, _DC_DIR = "routerbench_zs", "routerdc_7llm"
OPEN_ENDED = (ARENA_RATED, ARENA_V01)  # fitted uncapped
# RouterDC tasks without a train/test split of which a share is held out for the repset
# (their prompts carry what grades an answer: MBPP's asserts).
HELDOUT_SPLIT_TASKS = ("routerdc/mbpp",)
# Left out of the fit: RouterDC's ARC files are a "Question: ... Answer:" completion template
# without options that forms clusters of its own, and no held-out prompt in that form is gradable
# (RouterBench's arc-challenge, with options, stays). A cluster without gradable held-out prompts
# could never be profiled from the representative set.
DEFAULT_EXCLUDED = ("routerdc/arc_challenge", "routerdc/arc_easy")
# Fitted, though nothing in the data grades their answers: C-Eval and CMMLU are Chinese. Without
# them, text the `fast` embedder cannot read (Chinese, Japanese, Russian, ...) lies beyond every
# cluster's reach and the drift monitor flags it all; with them it has a region of its own. A
# cluster whose fit prompts are mostly these tasks is pooled (profiled on the whole set).
POOLED_TASKS = ("routerdc/ceval", "routerdc/cmmlu")
# Held-out tasks that router_core.general_repset can grade (references in the data).
GRADABLE_HELDOUT_TASKS = ("routerbench/arc-challenge", "routerbench/winogrande", "routerdc/gsm8k",
                          "routerdc/humaneval", "routerdc/mbpp", ARENA_RATED)
DEFAULT_FLOOR = 15  # representative items every cluster needs
DEFAULT_KS = (4, 6, 8, 12, 16, 24, 32)
DEFAULT_PRIOR = 4.0  # the Psi shrinkage the shipped states carry (`uniroute build-state`)

# Said of a pooled cluster in its label (GET /admin/state shows it).
POOLED_NOTE = "; no gradable prompt here: profiled on the whole representative set"

# Words for the automatic cluster labels.
TASK_WORDS = {
    "routerbench/arc-challenge": "grade-school science, multiple choice",
    "routerbench/winogrande": "commonsense fill-in-the-blank",
    "routerbench/mbpp": "short Python tasks",
    "routerdc/arc_challenge": "grade-school science",
    "routerdc/arc_easy": "grade-school science",
    "routerdc/mmlu": "exam questions, many subjects",
    "routerdc/cmmlu": "Chinese exam questions",
    "routerdc/ceval": "Chinese exam questions",
    "routerdc/gsm8k": "maths word problems",
    "routerdc/MATH_prealgebra": "prealgebra problems",
    "routerdc/humaneval": "Python function completion",
    "routerdc/mbpp": "Python tasks with asserts",
    "routerdc/javascript": "JavaScript function completion",
    ARENA_RATED: "open-ended chat requests",
    ARENA_V01: "open-ended chat requests",
    ARENA_V20: "open-ended chat requests",
}


@dataclass(frozen=True)
class MixPrompt:
    """One prompt with where it comes from: `task` is "<source>/<task>" for the benchmarks and
    the set's name for the Arena sets; `category` is an Arena-Hard prompt's topic, else ""."""

    id: str
    prompt: str
    task: str
    category: str = ""

    @property
    def source(self) -> str:
        """The dataset the prompt comes from (routerbench, routerdc or an Arena set)."""
        return self.task.split("/", 1)[0]


@dataclass(frozen=True)
class MixConfig:
    """How the mix is drawn; stored in the states' metadata so the repset rebuilds the same split."""

    cap: int = 300
    heldout_share: float = 0.5
    excluded: tuple[str, ...] = DEFAULT_EXCLUDED
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MixConfig:
        """The config recorded by `asdict`."""
        return cls(int(d["cap"]), float(d["heldout_share"]), tuple(d["excluded"]), int(d["seed"]))


@dataclass
class GeneralMix:
    """The fit prompts, their labels per source (each source with its own LLMs; ids are the fit
    prompts' ids), the held-out prompts, the check set, and what was dropped and why."""

    fit: list[MixPrompt]
    labelled: dict[str, RoutingDataset]
    heldout: list[MixPrompt]
    check: list[MixPrompt]
    dropped: Counter = field(default_factory=Counter)

    def task_counts(self) -> dict[str, int]:
        """Fit prompts per task, largest first."""
        return dict(Counter(p.task for p in self.fit).most_common())


def _note(message: str) -> None:
    print(f"general-mix: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- text keys


_WORD = re.compile(r"[^\W_]+")
# Lines that are template, not question: options "A) ...", instructions, asserts, fences.
_TEMPLATE_LINE = re.compile(r"^\s*(?:[A-E][).]\s|print only|answer:|please answer|assert\b|\"\"\"|'''|```)",
                            re.IGNORECASE)
_MIN_STEM = 30


def normalised(text: str) -> str:
    """Lower-case words joined by single spaces: the key for duplicates and containment."""
    return " ".join(_WORD.findall(text.lower()))


def question_stem(text: str) -> str:
    """The question of a prompt as written: its last paragraph without option, instruction,
    assert and fence lines (few-shot prompts put the question last). The whole text when that
    leaves fewer than 30 characters."""
    last = text.strip().split("\n\n")[-1]
    stem = "\n".join(line for line in last.split("\n") if line.strip() and not _TEMPLATE_LINE.match(line)).strip()
    return stem if len(stem) >= _MIN_STEM else text.strip()


def leaking(fit_texts: list[str], heldout_texts: list[str]) -> np.ndarray:
    """(len(fit_texts),) bool: the fit prompts that contain a held-out prompt's question stem
    (normalised, on word boundaries), i.e. the same question, possibly in another template."""
    keys = [f" {normalised(t)} " for t in fit_texts]
    postings: dict[str, set[int]] = defaultdict(set)
    for i, key in enumerate(keys):
        for word in set(key.split()):
            postings[word].add(i)
    hit = np.zeros(len(fit_texts), dtype=bool)
    for stem in {normalised(question_stem(t)) for t in heldout_texts}:
        words = set(stem.split())
        if len(stem) < _MIN_STEM // 2 or not all(w in postings for w in words):
            continue
        # only prompts holding the stem's two rarest words can contain it
        rare = sorted(words, key=lambda w: len(postings[w]))[:2]
        for i in set.intersection(*(postings[w] for w in rare)):
            if f" {stem} " in keys[i]:
                hit[i] = True
    return hit


# ---------------------------------------------------------------- sources


def _concat(parts: list[RoutingDataset], name: str) -> RoutingDataset:
    """Datasets joined row-wise over the union of their models (NaN where a part lacks one)."""
    models = list(dict.fromkeys(m for p in parts for m in p.models))
    blocks = []
    for p in parts:
        block = np.full((len(p), len(models)), np.nan)
        block[:, [models.index(m) for m in p.models]] = p.scores
        blocks.append(block)
    return RoutingDataset([i for p in parts for i in p.ids], [t for p in parts for t in p.prompts],
                          [t for p in parts for t in p.tasks], models, np.concatenate(blocks), None, name=name)


def _renamed(ds: RoutingDataset, ids: list[str], tasks: list[str]) -> RoutingDataset:
    return RoutingDataset(ids, ds.prompts, tasks, ds.models, ds.scores, None, name=ds.name)


def _arena_records(data_dir: Path, name: str) -> list[dict[str, Any]]:
    path = data_dir / _ARENA_DIR / _ARENA_FILES[name]
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def arena_prompts(data_dir: str | Path, name: str) -> list[MixPrompt]:
    """The prompts of an Arena set (ARENA_RATED, ARENA_V01 or ARENA_V20) in file order."""
    return [MixPrompt(f"{name}/{r['id']}", r["prompt"], name, str(r.get("category") or ""))
            for r in _arena_records(Path(data_dir), name)]


def heldout_share_ids(ids: list[str], share: float, seed: int) -> set[str]:
    """The `share` of `ids` held out for the representative set, drawn with `seed`."""
    rng = random.Random(seed)
    return set(rng.sample(sorted(ids), round(share * len(ids))))


def _labelled_sources(data_dir: Path, config: MixConfig) -> tuple[dict[str, RoutingDataset], list[MixPrompt]]:
    """(source -> labelled candidate fit prompts with ids "<task>/<id>", held-out prompts)."""
    heldout: list[MixPrompt] = []
    rb_parts = []
    for file in sorted((data_dir / _RB_DIR).glob("*.csv")):
        if file.stem.endswith("_test"):
            heldout += [MixPrompt(f"{ROUTERBENCH}/{r.task}/{r.id}", r.prompt, f"{ROUTERBENCH}/{r.task}")
                        for r in read_routerbench_rows(file)[1]]
        else:
            ds = load_routerbench(file)
            tasks = [f"{ROUTERBENCH}/{t}" for t in ds.tasks]
            rb_parts.append(_renamed(ds, [f"{t}/{i}" for t, i in zip(tasks, ds.ids)], tasks))
    dc_parts = []
    for file in sorted((data_dir / _DC_DIR).glob("*.json")):
        ds = load_routerdc(file)
        task = f"{ROUTERDC}/{ds.tasks[0]}"
        ids = [f"{ROUTERDC}/{file.stem}/{k}" for k in range(len(ds))]
        ds = _renamed(ds, ids, [task] * len(ds))
        if task in HELDOUT_SPLIT_TASKS:
            held = heldout_share_ids(ids, config.heldout_share, config.seed)
            keep = np.array([i not in held for i in ids])
            heldout += [MixPrompt(i, p, task) for i, p, k in zip(ids, ds.prompts, keep) if not k]
            ds = ds.subset(keep)
        elif file.stem.endswith("test"):
            heldout += [MixPrompt(i, p, task) for i, p in zip(ids, ds.prompts)]
            continue
        dc_parts.append(ds)
    rated = load_jsonl(data_dir / _ARENA_DIR / _ARENA_FILES[ARENA_RATED])
    ids = [f"{ARENA_RATED}/{i}" for i in rated.ids]
    rated = _renamed(rated, ids, [ARENA_RATED] * len(ids))
    held = heldout_share_ids(ids, config.heldout_share, config.seed)
    keep = np.array([i not in held for i in ids])
    heldout += [MixPrompt(i, p, ARENA_RATED) for i, p, k in zip(ids, rated.prompts, keep) if not k]
    return ({ROUTERBENCH: _concat(rb_parts, ROUTERBENCH), ROUTERDC: _concat(dc_parts, ROUTERDC),
             ARENA_RATED: rated.subset(keep)}, heldout)


def build_mix(data_dir: str | Path, config: MixConfig = MixConfig()) -> GeneralMix:
    """The general mix from the shared data folder (see the module docstring for the rules)."""
    root = Path(data_dir)
    labelled, heldout = _labelled_sources(root, config)
    check = arena_prompts(root, ARENA_V20)
    candidates = [MixPrompt(i, p, t) for ds in labelled.values() for i, p, t in zip(ds.ids, ds.prompts, ds.tasks)]
    candidates += arena_prompts(root, ARENA_V01)
    dropped: Counter = Counter()
    kept = []
    for p in candidates:
        if p.task in config.excluded:
            dropped[f"excluded task {p.task}"] += 1
        else:
            kept.append(p)
    leak = leaking([p.prompt for p in kept], [p.prompt for p in heldout + check])
    dropped["contains a held-out or check question"] += int(leak.sum())
    kept = [p for p, bad in zip(kept, leak) if not bad]
    seen: set[str] = set()
    unique = []
    for p in kept:
        key = normalised(p.prompt)
        if key in seen:
            dropped["duplicate"] += 1
        else:
            seen.add(key)
            unique.append(p)
    fit = _capped(unique, config.cap, config.seed, dropped)
    fit_ids = {p.id for p in fit}
    labelled = {s: ds.subset(np.array([i in fit_ids for i in ds.ids])) for s, ds in labelled.items()}
    _note(f"{len(fit)} fit prompts ({', '.join(f'{t} {n}' for t, n in Counter(p.task for p in fit).items())}); "
          f"{len(heldout)} held out; {len(check)} check; dropped {dict(dropped)}")
    return GeneralMix(fit, labelled, heldout, check, dropped)


def _capped(prompts: list[MixPrompt], cap: int, seed: int, dropped: Counter) -> list[MixPrompt]:
    """At most `cap` prompts per benchmark task, drawn with `seed`, in their original order; the
    open-ended Arena prompts are all kept (they are the traffic a general state is for)."""
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        by_task[p.task].append(i)
    rng = random.Random(seed)
    keep: set[int] = set()
    for task, rows in sorted(by_task.items()):
        chosen = rows if len(rows) <= cap or task in OPEN_ENDED else rng.sample(rows, cap)
        dropped[f"over the cap ({task})"] += len(rows) - len(chosen)
        keep.update(chosen)
    for key in [k for k, n in dropped.items() if n == 0]:
        del dropped[key]
    return [p for i, p in enumerate(prompts) if i in keep]


# ---------------------------------------------------------------- choosing K


@dataclass(frozen=True)
class KScore:
    """Validation of one K, averaged over cross-validation folds: per-source mean Brier score and
    log-loss of the per-cluster profiles' predicted error against held-out fold prompts' losses;
    the share of the check prompts beyond the drift threshold; and, for the clusters fitted on all
    fit prompts, the fewest gradable held-out prompts any cluster that is not pooled holds
    (`coverage`) and how many clusters are pooled."""

    k: int
    brier: dict[str, float]
    log_loss: dict[str, float]
    drift_share: float
    coverage: int
    pooled: int = 0

    @property
    def mean_brier(self) -> float:
        """Brier score averaged over sources (each source weighs the same)."""
        return float(np.mean(list(self.brier.values())))

    @property
    def mean_log_loss(self) -> float:
        """Log-loss averaged over sources."""
        return float(np.mean(list(self.log_loss.values())))


def validation_folds(mix: GeneralMix, folds: int = 5, seed: int = 0) -> np.ndarray:
    """(len(mix.fit),) int: each labelled prompt's cross-validation fold in [0, folds), dealt at
    random with `seed` within each task; -1 for unlabelled prompts (always training prompts)."""
    labelled = {i for ds in mix.labelled.values() for i in ds.ids}
    by_task: dict[str, list[int]] = defaultdict(list)
    for row, p in enumerate(mix.fit):
        if p.id in labelled:
            by_task[p.task].append(row)
    rng = random.Random(seed)
    fold = np.full(len(mix.fit), -1, dtype=int)
    for _, rows in sorted(by_task.items()):
        rows = list(rows)
        rng.shuffle(rows)
        fold[rows] = np.arange(len(rows)) % folds
    return fold


def _losses_at(mix: GeneralMix) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """source -> (rows of mix.fit, losses (n, M)) for its labelled prompts."""
    row_of = {p.id: r for r, p in enumerate(mix.fit)}
    return {s: (np.array([row_of[i] for i in ds.ids], dtype=np.intp), ds.losses) for s, ds in mix.labelled.items()}


def pooled_clusters(labels: np.ndarray, prompts: list[MixPrompt], k: int) -> list[int]:
    """The clusters (fit labels in [0, k)) whose prompts are mostly of POOLED_TASKS."""
    pooled = np.array([p.task in POOLED_TASKS for p in prompts])
    return [c for c in range(k) if (labels == c).any() and pooled[labels == c].mean() > 0.5]


def _fold_scores(emb: np.ndarray, parts: dict[str, tuple[np.ndarray, np.ndarray]], val: np.ndarray, k: int,
                 prior: float, seed: int, check_emb: np.ndarray,
                 prompts: list[MixPrompt]) -> tuple[dict[str, tuple[float, float]], float]:
    """One fold: ({source: (Brier, log-loss)}, check share beyond drift) for clusters fitted on ~val;
    a pooled cluster predicts the model's mean error, as the gateway's profile does there."""
    train = ~val
    centroids = clustering.fit_kmeans(emb[train], k, seed=seed)
    labels, _ = clustering.assign(centroids, emb)
    threshold = drift_threshold(nearest_distance(centroids, emb[train]))
    pooled = pooled_clusters(labels[train], [p for p, t in zip(prompts, train) if t], k)
    out = {}
    for source, (rows, losses) in parts.items():
        fit_rows = train[rows]
        psi, _ = cluster_profiles(labels[rows[fit_rows]], losses[fit_rows], k, prior)
        psi[:, pooled] = np.nanmean(losses[fit_rows], axis=0)[:, None]
        pred = psi[:, labels[rows[~fit_rows]]].T  # (n_val, M) predicted error
        truth = losses[~fit_rows]
        seen = ~np.isnan(truth)
        p, y = np.clip(pred[seen], 1e-6, 1 - 1e-6), truth[seen]
        out[source] = (float(np.mean((p - y) ** 2)), float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))))
    return out, float(np.mean(nearest_distance(centroids, check_emb) > threshold))


def score_k(emb: np.ndarray, mix: GeneralMix, fold: np.ndarray, check_emb: np.ndarray, cover_emb: np.ndarray,
            ks: list[int], prior: float = DEFAULT_PRIOR, seed: int = 0) -> list[KScore]:
    """For each K and each fold f: K-means on every fit prompt not in fold f, per-source profiles
    (shrinkage `prior`) from the labelled ones, scored on fold f's labels; averaged over folds.
    `cover_emb` are the gradable held-out prompts counted per cluster of a fit on all of mix.fit."""
    parts = _losses_at(mix)
    folds = sorted(set(fold[fold >= 0].tolist()))
    out = []
    for k in ks:
        runs = [_fold_scores(emb, parts, fold == f, k, prior, seed, check_emb, mix.fit) for f in folds]
        centroids = clustering.fit_kmeans(emb, k, seed=seed)
        pooled = pooled_clusters(clustering.assign(centroids, emb)[0], mix.fit, k)
        counts = np.delete(np.bincount(clustering.assign(centroids, cover_emb)[0], minlength=k), pooled)
        score = KScore(k, {s: float(np.mean([r[0][s][0] for r in runs])) for s in parts},
                       {s: float(np.mean([r[0][s][1] for r in runs])) for s in parts},
                       float(np.mean([r[1] for r in runs])), int(counts.min(initial=len(cover_emb))), len(pooled))
        out.append(score)
        _note(f"K={k}: mean Brier {score.mean_brier:.5f}, check beyond drift {score.drift_share:.1%}, "
              f"fewest gradable held-out prompts in a cluster {score.coverage} ({len(pooled)} pooled)")
    return out


def choose_k(scores: list[KScore], tolerance: float = 0.002, floor: int = DEFAULT_FLOOR) -> int:
    """Among the K whose every cluster that is not pooled holds at least `floor` gradable held-out
    prompts, the smallest whose mean Brier score is within `tolerance` (relative) of the best of them."""
    covered = [s for s in scores if s.coverage >= floor]
    if not covered:
        raise ValueError(f"no candidate K leaves every cluster {floor} gradable held-out prompts; try smaller K")
    best = min(s.mean_brier for s in covered)
    return min(s.k for s in covered if s.mean_brier <= best * (1 + tolerance))


def k_table(scores: list[KScore]) -> str:
    """The validation table as Markdown."""
    sources = list(scores[0].brier)
    head = ["K", *(f"Brier {s}" for s in sources), "mean Brier", "mean log-loss", "check beyond drift",
            "min gradable/cluster", "pooled"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in scores:
        cells = [str(s.k), *(f"{s.brier[x]:.4f}" for x in sources), f"{s.mean_brier:.4f}",
                 f"{s.mean_log_loss:.4f}", f"{s.drift_share:.1%}", str(s.coverage), str(s.pooled)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- cluster labels


def _truncate(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def describe_clusters(centroids: np.ndarray, emb: np.ndarray, prompts: list[MixPrompt],
                      top: int = 3, examples: int = 3) -> list[dict[str, Any]]:
    """Per cluster: {"id", "label", "size", "top_tasks": [[task, share], ...], "examples"}; the
    label names the most frequent tasks in words with their shares, the examples are the question
    stems of the prompts nearest the centroid, cut to 120 characters."""
    labels, sims = clustering.assign(centroids, emb)
    out = []
    for c in range(centroids.shape[0]):
        members = np.flatnonzero(labels == c)
        counts = Counter(prompts[i].task for i in members).most_common(top)
        shares = [[task, round(n / max(len(members), 1), 3)] for task, n in counts]
        label = ", ".join(f"{task} ({TASK_WORDS.get(task, task)}) {share:.0%}" for task, share in shares
                          if share >= 0.1 or task == shares[0][0])
        nearest = members[np.argsort(-sims[members])]
        picked: list[str] = []
        for i in nearest:
            text = _truncate(question_stem(prompts[i].prompt))
            if text not in picked:
                picked.append(text)
            if len(picked) == examples:
                break
        out.append({"id": c, "label": label or "empty", "size": len(members), "top_tasks": shares,
                    "examples": picked})
    return out


# ---------------------------------------------------------------- the states


def answer_lengths(data_dir: str | Path, prompts: list[MixPrompt]) -> np.ndarray:
    """(n,) mean length in characters of the training LLMs' recorded answers to each prompt
    (RouterBench's responses in its train files, the rated Arena prompts' answers); NaN where
    none is recorded (RouterDC and the unrated Arena sets have no answers)."""
    root = Path(data_dir)
    answers = routerbench_answers([f for f in sorted((root / _RB_DIR).glob("*.csv")) if not f.stem.endswith("_test")])
    rated = {r["id"]: r["prompt"] for r in _arena_records(root, ARENA_RATED)}
    for file in sorted((root / _ARENA_DIR / "answers").glob("*.jsonl")):
        for line in file.read_text(encoding="utf-8").splitlines():
            record = json.loads(line) if line.strip() else {}
            text = rated.get(record.get("question_id"))
            if text is not None and isinstance(record.get("answer"), str):
                answers.setdefault(text, []).append(record["answer"])
    return mean_answer_lengths([p.prompt for p in prompts], answers)


_MEASURED_ON = "the training LLMs' recorded answers (RouterBench train responses, rated arena-bench-v1 answers), " \
    "in characters"


def fit_general_state(mix: GeneralMix, embedder: Embedder, spec: str, k: int, seed: int, config: MixConfig,
                      lengths: np.ndarray | None = None, prior: float = DEFAULT_PRIOR,
                      max_chars: int = DEFAULT_MAX_CHARS, extra: dict[str, Any] | None = None) -> RouterState:
    """A K-means state on all of mix.fit, with the mix, its config and the cluster labels in its
    metadata (the drift threshold is recorded by `build_state`), and the output scale measured
    from `lengths`, the fit prompts' `answer_lengths` (None: no output scale)."""
    prompts = [p.prompt for p in mix.fit]
    meta = {"training_set": "general mix (router_core.general_mix)", "mix": asdict(config),
            "mix_tasks": mix.task_counts(), **(extra or {})}
    state = build_state(prompts, embedder, k, seed, embedder_spec=spec, max_chars=max_chars, prior=prior,
                        metadata=meta)
    emb = embed_for_routing(embedder, prompts, max_chars)
    state.pooled = tuple(pooled_clusters(clustering.assign(state.centroids, emb)[0], mix.fit, k))
    if lengths is not None:
        set_output_scale(state, emb, lengths, _MEASURED_ON)
    clusters = describe_clusters(state.centroids, emb, mix.fit)
    for c in state.pooled:
        clusters[c]["label"] += POOLED_NOTE
    state.metadata["clusters"] = clusters
    return state


_LETTER = re.compile(r"[^\W\d_]")


def mostly_non_ascii(text: str) -> bool:
    """Whether most of a text's letters are outside ASCII (Chinese, Cyrillic, Korean, ...): the
    prompts neither embedder was trained to read."""
    letters = _LETTER.findall(text)
    return bool(letters) and sum(not ch.isascii() for ch in letters) > len(letters) / 2


def drift_breakdown(state: RouterState, embedder: Embedder, prompts: list[MixPrompt]) -> dict[str, dict[str, float]]:
    """Share of `prompts` beyond the state's drift threshold, with their count, overall, per
    category and by script (mostly ASCII letters or not)."""
    emb = embed_for_routing(embedder, [p.prompt for p in prompts], state.max_chars)
    far = state.nearest_distance(emb) > state.drift_threshold
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        groups["all"].append(i)
        groups[f"category {p.category or p.task}"].append(i)
        groups["script non-ASCII" if mostly_non_ascii(p.prompt) else "script ASCII"].append(i)
    return {g: {"n": len(rows), "beyond": float(far[rows].mean())} for g, rows in sorted(groups.items())}


def _embedder(spec: str, cache_dir: Path, fast_dir: Path) -> Embedder:
    return load_embedder(spec, cache_dir, fast_dir=fast_dir)


def gradable_heldout_prompts(mix: GeneralMix) -> list[MixPrompt]:
    """The held-out prompts of the tasks the representative set can grade (GRADABLE_HELDOUT_TASKS);
    a few of them may still lack a reference, which router_core.general_repset finds out."""
    return [p for p in mix.heldout if p.task in GRADABLE_HELDOUT_TASKS]


def build_general_states(data_dir: Path, out_dir: Path, fast_dir: Path, cache_dir: Path, config: MixConfig,
                         ks: list[int], folds: int = 5, tolerance: float = 0.002, floor: int = DEFAULT_FLOOR,
                         old_states: dict[str, Path] | None = None,
                         specs: tuple[str, ...] = ("fast", "accurate"), command: str = "") -> dict[str, Any]:
    """Build the mix, choose K per embedder by cross-validation (among the K leaving every cluster
    `floor` gradable held-out prompts), fit and save the `fast` and `accurate` states under
    `out_dir/<spec>` (the fast one with a copy of `fast_dir`, the model it was embedded with), and
    return the report (K tables, chosen K, drift shares, cluster labels). `command` is recorded
    in the states' metadata as how they were built."""
    started = time.monotonic()
    mix = build_mix(data_dir, config)
    lengths = answer_lengths(data_dir, mix.fit)
    fold = validation_folds(mix, folds, config.seed)
    check = [p.prompt for p in mix.check]
    cover = [p.prompt for p in gradable_heldout_prompts(mix)]
    report: dict[str, Any] = {"mix": asdict(config), "fit_tasks": mix.task_counts(), "dropped": dict(mix.dropped),
                              "n_fit": len(mix.fit), "n_labelled": int((fold >= 0).sum()), "folds": folds,
                              "n_heldout": len(mix.heldout), "n_gradable_heldout": len(cover), "embedders": {}}
    for spec in specs:
        embedder = _embedder(spec, cache_dir, fast_dir)
        emb = embed_for_routing(embedder, [p.prompt for p in mix.fit], DEFAULT_MAX_CHARS)
        check_emb = embed_for_routing(embedder, check, DEFAULT_MAX_CHARS)
        cover_emb = embed_for_routing(embedder, cover, DEFAULT_MAX_CHARS)
        scores = score_k(emb, mix, fold, check_emb, cover_emb, ks, seed=config.seed)
        k = choose_k(scores, tolerance, floor)
        table = k_table(scores)
        print(f"\n{spec}: cross-validation of K (chosen K={k})\n{table}\n", flush=True)
        selection = {"chosen": k, "tolerance": tolerance, "folds": folds, "floor": floor,
                     "scores": [asdict(s) for s in scores]}
        state = fit_general_state(mix, embedder, spec, k, config.seed, config, lengths,
                                  extra={"built_with": command, "k_selection": selection})
        target = out_dir / spec
        if target.exists():
            shutil.rmtree(target)
        state.save(target)
        if spec == "fast" and Path(fast_dir).resolve() != FAST_EMBEDDER_DIR.resolve():
            # a state keeps its own model, unless it is the shipped one (found by its recorded id)
            shutil.copytree(fast_dir, target / FAST_DIRNAME)
            embedder = CachedEmbedder(state_embedder(state, target), cache_dir)  # the copy, as the gateway loads it
        breakdown = drift_breakdown(state, embedder, mix.check)
        new_drift = breakdown["all"]["beyond"]
        entry = {"k": k, "table": table, "scores": [asdict(s) for s in scores],
                 "drift_threshold": state.drift_threshold, "check_beyond_drift": new_drift,
                 "check_breakdown": breakdown, "clusters": state.metadata["clusters"]}
        if old_states and spec in old_states:
            old = RouterState.load(old_states[spec])
            old_embedder = CachedEmbedder(state_embedder(old, old_states[spec]), cache_dir)
            entry["old_check_breakdown"] = drift_breakdown(old, old_embedder, mix.check)
            entry["old_check_beyond_drift"] = entry["old_check_breakdown"]["all"]["beyond"]
        report["embedders"][spec] = entry
        _note(f"{spec}: wrote K={k} state to {target}; Arena-Hard v2.0 beyond drift {new_drift:.1%}")
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def add_output_scale(data_dir: Path, directory: Path, cache_dir: Path) -> RouterState:
    """Measure the output scale of the general state saved in `directory` and save it there: its
    mix is rebuilt from the config in its metadata, its centroids (and so every profile made
    under it) stay as they are."""
    state = RouterState.load(directory)
    mix = build_mix(data_dir, MixConfig.from_dict(state.metadata["mix"]))
    if len(mix.fit) != state.metadata.get("n_prompts"):
        raise ValueError(f"the rebuilt mix has {len(mix.fit)} fit prompts, the state was fitted on "
                         f"{state.metadata.get('n_prompts')}: not the data it was built from")
    embedder = CachedEmbedder(state_embedder(state, directory), cache_dir)
    emb = embed_for_routing(embedder, [p.prompt for p in mix.fit], state.max_chars)
    set_output_scale(state, emb, answer_lengths(data_dir, mix.fit), _MEASURED_ON)
    state.save(directory)
    return state


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(
        prog="python -m router_core.general_mix",
        description="Build the general training mix, choose K on validation and write the general "
                    "`fast` and `accurate` router states (then build the matching representative set "
                    "with `python -m router_core.general_repset`).")
    parser.add_argument("--data", type=Path, default=here.parent / "shared" / "data",
                        help="the shared data folder (default %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="directory to write fast/ and accurate/ into")
    parser.add_argument("--output-scale-only", action="store_true",
                        help="only measure the output scale of the states already in --out (their clusters "
                             "and the profiles made under them unchanged)")
    parser.add_argument("--fast-embedder", type=Path,
                        default=FAST_EMBEDDER_DIR,
                        help="the static model the fast state uses (default: the shipped one, %(default)s)")
    parser.add_argument("--cache-dir", type=Path, required=True, help="embedding cache directory")
    parser.add_argument("--ks", default=",".join(map(str, DEFAULT_KS)), help="candidate K (default %(default)s)")
    parser.add_argument("--cap", type=int, default=MixConfig.cap,
                        help="fit prompts per benchmark task at most; Arena prompts are not capped "
                             "(default %(default)s)")
    parser.add_argument("--heldout-share", type=float, default=MixConfig.heldout_share,
                        help="share of the rated Arena prompts and of RouterDC MBPP kept out of the fit for the "
                             "representative set (default %(default)s)")
    parser.add_argument("--exclude", default=",".join(DEFAULT_EXCLUDED),
                        help="tasks left out of the fit (default %(default)s; '' for none)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds for K (default %(default)s)")
    parser.add_argument("--floor", type=int, default=DEFAULT_FLOOR,
                        help="gradable held-out prompts every cluster must hold (default %(default)s)")
    parser.add_argument("--tolerance", type=float, default=0.002,
                        help="smallest K within this relative margin of the best mean Brier wins (default %(default)s)")
    parser.add_argument("--old-state", action="append", default=[], metavar="SPEC=DIR",
                        help="a state to compare drift with, e.g. fast=router_core/resources/state/fast (repeatable)")
    parser.add_argument("--embedders", default="fast,accurate", help="states to build (default %(default)s)")
    parser.add_argument("--report", type=Path, default=None, help="write the report JSON here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    command_args = argv if argv is not None else sys.argv[1:]
    config = MixConfig(args.cap, args.heldout_share, tuple(t for t in args.exclude.split(",") if t), args.seed)
    if args.output_scale_only:
        for spec in (s for s in args.embedders.split(",") if s):
            state = add_output_scale(args.data, args.out / spec, args.cache_dir)
            print(f"{spec}: output scale per cluster {np.round(state.output_scale, 2).tolist()}")
        return 0
    old = dict(item.split("=", 1) for item in args.old_state)
    report = build_general_states(args.data, args.out, args.fast_embedder, args.cache_dir, config,
                                  [int(k) for k in args.ks.split(",")], args.folds, args.tolerance,
                                  args.floor, {s: Path(d) for s, d in old.items()},
                                  tuple(s for s in args.embedders.split(",") if s),
                                  " ".join(["python -m router_core.general_mix", *command_args]))
    for spec, entry in report["embedders"].items():
        print(f"{spec}: K={entry['k']}, drift threshold {entry['drift_threshold']:.4f}; Arena-Hard v2.0 beyond it:")
        old = entry.get("old_check_breakdown", {})
        for group, got in entry["check_breakdown"].items():
            was = f" (old state {old[group]['beyond']:.1%})" if group in old else ""
            print(f"  {group}: {got['beyond']:.1%} of {got['n']}{was}")
    print(f"built in {report['seconds']} s")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
