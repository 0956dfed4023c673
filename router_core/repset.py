"""The representative prompt set: the labelled prompts every new LLM is profiled on.

A JSONL file, one item a line: {"id", "prompt", "reference", "grader", "task"} (graders: those
of router_core.grading, `code_tests` included, plus "llm_judge" and "llm_judge:<kind>" which
the gateway grades with a judge model, see router_core.judging).

Its version is the first 12 hex digits of the SHA-256 of the file's bytes: no number to bump
by hand, and any edit (even of whitespace) is a new version, under which a model's answers are
asked again. Graded answers and profiles record the version they were made under.

`RepsetClusters` is a set embedded under one router state: a model's scores on it become its
profile Ψ. `build_default_repset` derives the shipped set from RouterBench's multiple-choice
tasks (run `python -m router_core.repset --help`).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import numbers
import random
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from router_core.datasets import RouterBenchRow, jsonl_records, read_routerbench_rows
from router_core.grading import chosen_option, grade
from router_core.judging import JUDGE_PREFIX, parse_judge_grader
from router_core.profiles import Profile, soft_profiles

JUDGE = JUDGE_PREFIX  # "llm_judge", alone or as "llm_judge:<kind>"
CODE_TESTS = "code_tests"
# RouterBench's multiple-choice tasks; mbpp is code graded by tests it does not ship.
MC_TASKS = ("arc-challenge", "winogrande")


class RepsetError(ValueError):
    """A representative set file that cannot be used, with the file, line and reason."""


@dataclass(frozen=True)
class RepItem:
    """One representative prompt with what a correct answer must match."""

    id: str
    prompt: str
    reference: str
    grader: str
    task: str = ""


@dataclass(frozen=True)
class RepresentativeSet:
    """The items of one version of the set, in file order."""

    version: str
    items: list[RepItem]


def _version(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:12]


def _item(record: object, where: str) -> RepItem:
    if not isinstance(record, dict):
        raise RepsetError(f"{where}: expected a JSON object")
    for key in ("id", "prompt", "reference", "grader"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise RepsetError(f"{where}: {key!r} must be a non-empty string")
    task = record.get("task", "")
    if not isinstance(task, str):
        raise RepsetError(f"{where}: 'task' must be a string")
    item = RepItem(record["id"], record["prompt"], record["reference"], record["grader"], task)
    try:
        if item.grader.partition(":")[0] == JUDGE:
            parse_judge_grader(item.grader)  # a judge kind that exists; any reference text will do
        else:
            # an empty answer exercises the reference's parsing (code_tests: it compiles, nothing
            # runs), so a bad one fails at load
            grade(item.grader, "", item.reference)
    except ValueError as exc:
        raise RepsetError(f"{where}: {exc}") from None
    return item


def load_repset(path: str | Path) -> RepresentativeSet:
    """Read and check a representative set file (ids unique, graders known, references valid)."""
    p = Path(path)
    try:
        content = p.read_bytes()
    except OSError as exc:
        raise RepsetError(f"cannot read the representative set {p}: {exc.strerror}") from None
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RepsetError(f"{p}: not UTF-8 text: {exc}") from None
    items: list[RepItem] = []
    seen: set[str] = set()
    for where, record in jsonl_records(text, p, RepsetError):
        item = _item(record, where)
        if item.id in seen:
            raise RepsetError(f"{where}: id {item.id!r} appears twice")
        seen.add(item.id)
        items.append(item)
    if not items:
        raise RepsetError(f"{p}: the representative set has no items")
    return RepresentativeSet(_version(content), items)


def write_repset(items: list[RepItem], path: str | Path) -> RepresentativeSet:
    """Write `items` as a representative set file (parent directories created); returns the
    set as `load_repset` will read it."""
    if len({item.id for item in items}) != len(items):
        raise RepsetError("representative set ids must be unique")
    content = "".join(json.dumps(asdict(item), ensure_ascii=False) + "\n" for item in items).encode("utf-8")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(content)
    return RepresentativeSet(_version(content), list(items))


@dataclass(frozen=True)
class RepsetClusters:
    """The representative set's prompts and their (n, K) cluster weights under one router state:
    what turns a model's scores on the set into its profile Ψ with one weighted average."""

    repset: RepresentativeSet
    weights: np.ndarray
    state_version: str
    # Pseudo-counts pulling a thin cluster's error toward the model's overall error; the
    # router state carries the value chosen with its clusters (router_core.profiles).
    prior: float
    # (n, K) the prompts' weights as a routed prompt gets them (`RouterState.cluster_weights`),
    # where they differ from the profiles' `weights` (a pooled cluster weighs every prompt in a
    # profile, never in a routing); None: the same. The λ curve prices and scores the prompts
    # with these, or it would not describe the decisions the router makes on such prompts.
    routing_weights: np.ndarray | None = None

    @property
    def routed_weights(self) -> np.ndarray:
        """(n, K) the prompts' weights as routed prompts (`routing_weights`, else `weights`)."""
        return self.weights if self.routing_weights is None else self.routing_weights

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.repset.items]

    def unknown_ids(self, ids: object) -> list[str]:
        """Ids not in the representative set (to reject precomputed scores that don't fit it)."""
        known = set(self.ids)
        return sorted(i for i in ids if i not in known)

    def profile(self, scores: dict[str, float], avg_output_tokens: float = 0.0) -> Profile:
        """Ψ of a model from its scores in [0, 1] by prompt id; unscored prompts are ignored.
        ValueError when no prompt of the set is scored, or for a score outside [0, 1] (NaN
        included: leave an unanswered prompt out), which would make an error rate below 0 or
        above 1 that wins or loses every routing; and for an `avg_output_tokens` (0: not
        measured) below 0 or not finite, which would make the model's expected costs so."""
        # A str or None is no score either: comparing it failed with a TypeError about '<='.
        bad = [(i, v) for i, v in scores.items() if not (isinstance(v, numbers.Real) and 0.0 <= v <= 1.0)]
        if bad:
            raise ValueError(f"scores must lie in [0, 1]; {len(bad)} do not, e.g. {bad[:3]}")
        if not (isinstance(avg_output_tokens, numbers.Real) and math.isfinite(avg_output_tokens)
                and avg_output_tokens >= 0):
            raise ValueError(f"avg_output_tokens must be a finite number >= 0, got {avg_output_tokens!r}")
        losses = np.array([1.0 - scores[i] if i in scores else np.nan for i in self.ids])[:, None]
        errors, counts = soft_profiles(self.weights, losses, self.prior)
        scored = [scores[i] for i in self.ids if i in scores]
        return Profile(
            errors=[float(e) for e in errors[0]],
            counts=[float(c) for c in counts[0]],
            accuracy=float(np.mean(scored)),
            n_prompts=len(scored),
            avg_output_tokens=float(avg_output_tokens),
            repset_version=self.repset.version,
            state_version=self.state_version,
        )


def mc_reference(row: RouterBenchRow) -> str | None:
    """The option letter a RouterBench row's correct models chose (the most common, should
    their parsed answers differ), or None when no correct model's answer names an option."""
    letters = Counter(chosen_option(row.responses.get(m, "")) for m, label in row.labels.items() if label == 1)
    letters.pop(None, None)
    return letters.most_common(1)[0][0] if letters else None


def regrades_as_recorded(row: RouterBenchRow, reference: str) -> bool:
    """Whether grading every model's recorded answer against `reference` gives its recorded label."""
    return all(grade("mc_letter", row.responses.get(m, ""), reference) == label for m, label in row.labels.items())


def routerbench_mc_items(routerbench_dir: str | Path) -> dict[str, tuple[list[RepItem], Counter]]:
    """Per multiple-choice task, the RouterBench TEST rows usable as `mc_letter` items (in file
    order) and how many rows were dropped for each reason: rows labelled for every model whose
    reference letter can be derived and reproduces every recorded label when regraded."""
    files = sorted(Path(routerbench_dir).glob("*_test.csv"))
    if not files:
        raise RepsetError(f"{routerbench_dir}: no RouterBench *_test.csv files")
    rows: list[RouterBenchRow] = []
    for file in files:
        models, file_rows = read_routerbench_rows(file)
        # a row lacking some model's label cannot show that regrading reproduces the labels
        rows.extend(r for r in file_rows if r.task in MC_TASKS and len(r.labels) == len(models))
    out: dict[str, tuple[list[RepItem], Counter]] = {}
    for task in MC_TASKS:
        usable, dropped = [], Counter()
        for row in (r for r in rows if r.task == task):
            reference = mc_reference(row)
            if reference is None:
                dropped["no derivable reference"] += 1
            elif not regrades_as_recorded(row, reference):
                dropped["regrading disagrees with a recorded label"] += 1
            else:
                usable.append(RepItem(row.id, row.prompt, reference, "mc_letter", row.task))
        if not usable:
            raise RepsetError(f"{routerbench_dir}: no usable {task} rows in the test split")
        out[task] = (usable, dropped)
    return out


def build_default_repset(routerbench_dir: str | Path, out_path: str | Path, per_task: int = 200,
                         seed: int = 0) -> RepresentativeSet:
    """The default set from RouterBench's TEST split (the shipped router state is fitted on the
    train split): for each multiple-choice task, the usable rows (`routerbench_mc_items`), then
    `per_task` of them drawn at random with `seed` (all, if fewer), kept in file order."""
    if per_task < 1:
        raise RepsetError(f"per_task must be >= 1, got {per_task}")
    rng = random.Random(seed)
    items: list[RepItem] = []
    for task, (usable, dropped) in routerbench_mc_items(routerbench_dir).items():
        chosen = sorted(rng.sample(range(len(usable)), min(per_task, len(usable))))
        items.extend(usable[i] for i in chosen)
        why = ", ".join(f"{n} {reason}" for reason, n in dropped.items()) or "none"
        print(f"{task}: {len(usable)} usable labelled test rows (dropped: {why}); kept {len(chosen)}",
              file=sys.stderr)
    return write_repset(items, out_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router_core.repset",
                                     description="Build the default representative set from RouterBench.")
    parser.add_argument("--routerbench", required=True, help="directory of RouterBench *_test.csv files")
    parser.add_argument("--out", required=True, help="the JSONL file to write")
    parser.add_argument("--per-task", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        repset = build_default_repset(args.routerbench, args.out, args.per_task, args.seed)
    except (RepsetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {len(repset.items)} items, version {repset.version}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
