"""The general representative set: gradable held-out prompts covering every cluster of the
general router states (router_core.general_mix).

Candidates are the held-out prompts of the general mix (never fitted) that something can grade:

- RouterBench arc-challenge / winogrande test rows -> `mc_letter` (references derived by
  `repset.routerbench_mc_items`);
- GSM8K test questions (RouterDC gsm8k-test) -> `numeric`, the number after "####" in GSM8K's answer;
- HumanEval test-split prompts -> `code_tests`, HumanEval's `test` code + "check(<entry_point>)";
- RouterDC MBPP prompts held out of the fit -> `code_tests`, the asserts the prompt carries;
- rated arena-bench-v1 prompts held out of the fit -> `llm_judge:rating`, GPT-4's reference answer.

Each candidate is assigned to its cluster under every state; items are then chosen stratified so
that every cluster of every state reaches `floor` items, then `target` (a pooled cluster is
profiled on every item, `RouterState.profile_weights`, so none is drawn for it), preferring
items that also fill another state's short cluster and, within a cluster, the grader it has
least of.

`python -m router_core.general_repset --help`.
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from router_core.embedding import CachedEmbedder, embed_for_routing
from router_core.general_mix import (
    ARENA_RATED,
    ROUTERBENCH,
    GeneralMix,
    MixConfig,
    MixPrompt,
    build_mix,
    normalised,
)
from router_core.repset import (
    CODE_TESTS,
    JUDGE,
    RepItem,
    RepresentativeSet,
    routerbench_mc_items,
    write_repset,
)
from router_core.state import RouterState, state_embedder

JUDGE_RATING = f"{JUDGE}:rating"
_REFERENCES = "references"


class GeneralRepsetError(ValueError):
    """A general representative set that cannot be built as asked."""


def _gsm8k_answers(data_dir: Path) -> dict[str, str]:
    out = {}
    for line in (data_dir / _REFERENCES / "gsm8k_test.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            out[rec["question"].strip()] = rec["answer"].rsplit("####", 1)[1].strip().replace(",", "")
    return out


def _humaneval_tests(data_dir: Path) -> dict[str, str]:
    out = {}
    with gzip.open(data_dir / _REFERENCES / "HumanEval.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rec = json.loads(line)
                out[rec["prompt"].strip()] = f"{rec['test']}\ncheck({rec['entry_point']})\n"
    return out


def _arena_references(data_dir: Path) -> dict[str, str]:
    path = data_dir / "arena_bench_v1" / "routing.jsonl"
    recs = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {f"{ARENA_RATED}/{r['id']}": r["reference"] for r in recs if r.get("reference")}


def _asserts(prompt: str) -> str:
    return "\n".join(line.strip() for line in prompt.splitlines() if line.strip().startswith("assert "))


def gradable_heldout(mix: GeneralMix, data_dir: str | Path) -> tuple[list[RepItem], Counter]:
    """The held-out prompts of `mix` that can be graded, as items whose id is the prompt's mix id,
    one per distinct prompt text; and how many held-out prompts were not usable, by reason."""
    root = Path(data_dir)
    held = {p.id: p for p in mix.heldout}
    gsm8k, humaneval, arena = _gsm8k_answers(root), _humaneval_tests(root), _arena_references(root)
    items: list[RepItem] = []
    skipped: Counter = Counter()
    for task, (usable, dropped) in routerbench_mc_items(root / "routerbench_zs").items():
        for item in usable:
            mix_id = f"{ROUTERBENCH}/{task}/{item.id}"
            if mix_id in held:
                items.append(replace(item, id=mix_id))
        skipped.update({f"{task}: {why}": n for why, n in dropped.items()})

    def add(p: MixPrompt, reference: str | None, grader: str, task: str) -> None:
        if reference:
            items.append(RepItem(p.id, p.prompt, reference, grader, task))
        else:
            skipped[f"{p.task}: no reference"] += 1

    for p in mix.heldout:
        if p.task == "routerdc/gsm8k":
            add(p, gsm8k.get(p.prompt.strip()), "numeric", "gsm8k")
        elif p.task == "routerdc/humaneval":
            add(p, humaneval.get(p.prompt.strip()), CODE_TESTS, "humaneval")
        elif p.task == "routerdc/mbpp":
            add(p, _asserts(p.prompt), CODE_TESTS, "mbpp")
        elif p.task == ARENA_RATED:
            add(p, arena.get(p.id), JUDGE_RATING, ARENA_RATED)
        elif not p.task.startswith(f"{ROUTERBENCH}/"):
            skipped[f"{p.task}: no grader in the data"] += 1
    fit_keys = {normalised(p.prompt) for p in mix.fit}
    unique: dict[str, RepItem] = {}
    for item in items:
        key = normalised(item.prompt)
        if key in fit_keys:  # build_mix drops fit prompts containing a held-out question; this cannot happen
            raise GeneralRepsetError(f"held-out prompt {item.id} is also a fit prompt")
        if key in unique:
            skipped["duplicate prompt"] += 1
        else:
            unique[key] = item
    return list(unique.values()), skipped


def select_stratified(clusters: np.ndarray, graders: list[str], floor: int, target: int,
                      seed: int = 0, pooled: list[tuple[int, ...]] | None = None) -> np.ndarray:
    """Indices of the chosen candidates. `clusters` (n, S) is each candidate's cluster under each
    of S states; `pooled[s]` are state s's pooled clusters, which every item profiles, so none is
    chosen for them. First every other (state, cluster) is brought to `floor` chosen candidates
    where it has enough, then to `target`; the cluster with the fewest candidates left goes first; among its
    candidates those that also fill other states' short clusters win, then the grader the cluster
    has least of, then a random order drawn with `seed`."""
    n, n_states = clusters.shape
    if not 0 < floor <= target:
        raise GeneralRepsetError(f"need 0 < floor <= target, got floor {floor}, target {target}")
    rank = np.random.default_rng(seed).permutation(n)
    chosen = np.zeros(n, dtype=bool)
    sizes = [int(clusters[:, s].max()) + 1 for s in range(n_states)]
    count = [np.zeros(k, dtype=int) for k in sizes]
    by_grader = [[Counter() for _ in range(k)] for k in sizes]
    skip = pooled or [()] * n_states
    for level in (floor, target):
        while True:
            short = [(int(np.sum(~chosen & (clusters[:, s] == c))), s, c)
                     for s in range(n_states) for c in range(sizes[s]) if count[s][c] < level and c not in skip[s]]
            short = [t for t in short if t[0] > 0]
            if not short:
                break
            _, s, c = min(short)
            pool = np.flatnonzero(~chosen & (clusters[:, s] == c))
            best = min(pool, key=lambda i: (-sum(count[o][clusters[i, o]] < level for o in range(n_states)
                                                 if o != s and clusters[i, o] not in skip[o]),
                                            by_grader[s][c][graders[i]], rank[i]))
            chosen[best] = True
            for o in range(n_states):
                count[o][clusters[best, o]] += 1
                by_grader[o][clusters[best, o]][graders[best]] += 1
    return np.flatnonzero(chosen)


@dataclass
class StateCoverage:
    """One state's clusters with the chosen items' graders per cluster."""

    name: str
    clusters: list[dict]
    graders: list[Counter]

    def table(self) -> str:
        """Per cluster: label, training prompts, items, items per grader (Markdown)."""
        lines = ["| cluster | label | training prompts | repset items | graders |", "|---|---|---|---|---|"]
        for c, info in enumerate(self.clusters):
            g = self.graders[c]
            lines.append(f"| {c} | {info['label']} | {info['size']} | {sum(g.values())} | "
                         f"{', '.join(f'{k} {v}' for k, v in sorted(g.items()))} |")
        return "\n".join(lines)


def build_general_repset(data_dir: str | Path, state_dirs: dict[str, Path], out_path: str | Path,
                         cache_dir: str | Path, floor: int = 15, target: int = 40,
                         seed: int = 0) -> tuple[RepresentativeSet, list[StateCoverage]]:
    """Build the set for the states at `state_dirs` (name -> directory; all fitted on general
    mixes that record one held-out split: the same config but for the tasks left out of the fit)
    and write it to `out_path`. Raises if some cluster of some state cannot reach `floor`."""
    states = {name: RouterState.load(d) for name, d in state_dirs.items()}
    if None in (s.metadata.get("mix") for s in states.values()):
        raise GeneralRepsetError("the states must all record the same general mix (metadata 'mix')")
    configs = {MixConfig.from_dict(s.metadata["mix"]) for s in states.values()}
    if len({replace(c, excluded=()) for c in configs}) != 1:
        raise GeneralRepsetError("the states must all record the same general mix (metadata 'mix'), "
                                 "but for the tasks left out of the fit")
    # the tasks left out change the fit, never the held-out prompts; each fit is checked against them
    built = [gradable_heldout(build_mix(data_dir, c), data_dir) for c in sorted(configs, key=repr)]
    candidates, skipped = built[0]
    if any([i.id for i in other] != [i.id for i in candidates] for other, _ in built[1:]):
        raise GeneralRepsetError("the states' mixes hold out different prompts")
    print(f"{len(candidates)} gradable held-out prompts "
          f"({', '.join(f'{g} {n}' for g, n in Counter(i.grader for i in candidates).items())}); "
          f"not usable: {dict(skipped)}", file=sys.stderr)
    prompts = [i.prompt for i in candidates]
    columns = []
    for name, state in states.items():
        embedder = CachedEmbedder(state_embedder(state, state_dirs[name]), cache_dir)
        columns.append(state.assign(embed_for_routing(embedder, prompts, state.max_chars))[0])
    clusters = np.stack(columns, axis=1)
    picked = select_stratified(clusters, [i.grader for i in candidates], floor, target, seed,
                               [s.pooled for s in states.values()])
    coverage = []
    for s, (name, state) in enumerate(states.items()):
        graders = [Counter() for _ in range(state.k)]
        for i in picked:
            for c in {int(clusters[i, s]), *state.pooled}:  # every item weighs in a pooled cluster
                graders[c][candidates[i].grader] += 1
        coverage.append(StateCoverage(name, state.metadata.get("clusters") or
                                      [{"label": "", "size": 0} for _ in range(state.k)], graders))
        short = [c for c in range(state.k) if sum(graders[c].values()) < floor]
        if short:
            raise GeneralRepsetError(f"{name}: clusters {short} have fewer than {floor} gradable held-out prompts")
    items = sorted((candidates[i] for i in picked), key=lambda it: it.id)
    return write_repset(items, out_path), coverage


_SOURCES = """Sources and licences (the prompts, references and tests are copied verbatim):

- RouterBench (Hu et al., arXiv 2403.12031; dataset by Martian, MIT), arc-challenge and winogrande
  TEST rows as redistributed by RouterDC: `mc_letter`, the letter the correct models chose;
- GSM8K (openai/grade-school-math, MIT): test questions, `numeric`, the number after "####";
- HumanEval (openai/human-eval, MIT): test-split problems, `code_tests`, its `test` code +
  `check(<entry_point>)`;
- MBPP (Austin et al., Google Research, CC BY 4.0) as redistributed by RouterDC (Chen et al.,
  NeurIPS 2024, `datasets/split2_model7`): prompts held out of the fit, `code_tests`, the
  asserts the prompt carries;
- arena-hard-auto's first set, arena-bench-v1 (lmarena, Apache-2.0): rated prompts held out of the
  fit, `llm_judge:rating`, GPT-4's reference answer.

No prompt of the set is in the router states' fit (test splits and held-out shares only)."""


def readme_fragment(repset: RepresentativeSet, coverage: list[StateCoverage], command: str,
                    state_commands: list[str]) -> str:
    """The README section for a built set: sources and licences, the build commands (the states',
    then the set's), counts per grader and task, and the per-cluster table of each state."""
    graders = Counter(i.grader for i in repset.items)
    tasks = Counter(i.task for i in repset.items)
    parts = [f"# General representative set (version {repset.version})", "",
             f"{len(repset.items)} items: " + ", ".join(f"{g} {n}" for g, n in sorted(graders.items())) +
             "; by task: " + ", ".join(f"{t} {n}" for t, n in sorted(tasks.items())) + ".", "",
             _SOURCES, "", "Built with:", "", "```", *dict.fromkeys(state_commands), command, "```"]
    for cov in coverage:
        parts += ["", f"## Clusters of the `{cov.name}` state", "", cov.table()]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(
        prog="python -m router_core.general_repset",
        description="Build the general representative set from the held-out prompts of the general mix, "
                    "covering every cluster of the given general states (python -m router_core.general_mix).")
    parser.add_argument("--data", type=Path, default=here.parent / "shared" / "data",
                        help="the shared data folder (default %(default)s)")
    parser.add_argument("--state", action="append", required=True, metavar="NAME=DIR",
                        help="a general state to cover, e.g. fast=out/state/fast (repeat for each)")
    parser.add_argument("--out", type=Path, required=True, help="the JSONL file to write")
    parser.add_argument("--cache-dir", type=Path, required=True, help="embedding cache directory")
    parser.add_argument("--floor", type=int, default=15, help="items every cluster must have (default %(default)s)")
    parser.add_argument("--target", type=int, default=40, help="items per cluster aimed at (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--readme", type=Path, default=None, help="also write the README fragment here")
    args = parser.parse_args(argv)
    dirs = {name: Path(d) for name, d in (s.split("=", 1) for s in args.state)}
    try:
        repset, coverage = build_general_repset(args.data, dirs, args.out, args.cache_dir, args.floor,
                                                args.target, args.seed)
    except (GeneralRepsetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = Counter(i.grader for i in repset.items)
    print(f"wrote {args.out}: {len(repset.items)} items, version {repset.version}; "
          f"graders {dict(sorted(counts.items()))}; tasks {dict(Counter(i.task for i in repset.items))}")
    for cov in coverage:
        print(f"\n{cov.name}\n{cov.table()}")
    if args.readme:
        command = "python -m router_core.general_repset " + " ".join(argv if argv is not None else sys.argv[1:])
        built = [RouterState.load(d).metadata.get("built_with") or f"# {d}: built without a recorded command"
                 for d in dirs.values()]
        args.readme.write_text(readme_fragment(repset, coverage, command, built))
    return 0


if __name__ == "__main__":
    sys.exit(main())
