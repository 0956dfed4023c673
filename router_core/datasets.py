"""Routing datasets: prompts, the labelled scores of candidate LLMs on them, and their costs.

Every source is read into one `RoutingDataset`. Sources:

- canonical JSONL (`load_jsonl` / `write_jsonl`), one prompt a line:
  `{"id": str, "prompt": str, "task": str (optional), "scores": {model: float in [0, 1]},
  "costs": {model: float} (optional)}`; a model absent from a line's `scores`, or null there, is
  unlabelled on that prompt; a file of prompts alone (`{"id", "prompt"}`, as a capture export)
  has no `scores` and no models;
- RouterBench CSVs (`load_routerbench`, `read_routerbench_rows`, `load_routerbench_responses`);
- RouterDC JSON lists (`load_routerdc`).

Loaders raise `DatasetError` (a `ValueError`) with the file and the reason for bad input, and
say on stderr what they drop, never silently.
"""
from __future__ import annotations

import ast
import csv
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

Format = Literal["jsonl", "routerbench", "routerdc"]
FORMATS: tuple[str, ...] = ("jsonl", "routerbench", "routerdc")

# RouterBench columns that are neither a model's label nor a `<model>|...` column.
_ROUTERBENCH_META = {"", "sample_id", "prompt", "eval_name", "oracle_model_to_route_to"}


class DatasetError(ValueError):
    """A dataset file that cannot be read as the format it claims to be."""


def _note(message: str) -> None:
    print(f"uniroute: {message}", file=sys.stderr)


@dataclass
class RoutingDataset:
    """Prompts with the scores (1 = correct) and costs of M candidate LLMs on each.

    `scores` is (n, M) float64 in [0, 1] with NaN where a model has no label for a prompt;
    `costs` is (n, M) float64 (e.g. USD per request; NaN = unknown) or None when the source
    has no costs (see `with_model_costs` / `priced`).
    """

    ids: list[str]
    prompts: list[str]
    tasks: list[str]
    models: list[str]
    scores: np.ndarray
    costs: np.ndarray | None = None
    name: str = ""

    def __post_init__(self) -> None:
        n, m = len(self.ids), len(self.models)
        if not (len(self.prompts) == len(self.tasks) == n):
            raise ValueError(f"ids, prompts, tasks differ in length: {n}, {len(self.prompts)}, {len(self.tasks)}")
        if self.scores.shape != (n, m):
            raise ValueError(f"scores has shape {self.scores.shape}, expected {(n, m)}")
        if self.costs is not None and self.costs.shape != (n, m):
            raise ValueError(f"costs has shape {self.costs.shape}, expected {(n, m)}")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def losses(self) -> np.ndarray:
        """(n, M) loss = 1 - score; NaN where unlabelled."""
        return 1.0 - self.scores

    def subset(self, idx: Iterable[int] | np.ndarray) -> RoutingDataset:
        """The prompts at `idx` (integer positions or a boolean mask of length n), in that order."""
        rows = np.asarray(idx)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = rows.astype(np.intp, copy=False)
        return replace(
            self,
            ids=[self.ids[i] for i in rows],
            prompts=[self.prompts[i] for i in rows],
            tasks=[self.tasks[i] for i in rows],
            scores=self.scores[rows],
            costs=None if self.costs is None else self.costs[rows],
        )

    def with_model_costs(self, table: dict[str, float]) -> RoutingDataset:
        """A copy whose cost for every model in `table` is that model's fixed cost per request,
        replacing its per-prompt costs; other models keep their per-prompt costs. Without
        per-prompt costs the table must price every model."""
        unknown = sorted(set(table) - set(self.models))
        if unknown:
            _note(f"model-cost table names models not in {self.name or 'the dataset'}, ignored: {', '.join(unknown)}")
        unpriced = [m for m in self.models if m not in table]
        if self.costs is None and unpriced:
            raise DatasetError(
                f"{self.name or 'the dataset'} has no per-prompt costs and the model-cost table "
                f"lacks: {', '.join(unpriced)}"
            )
        costs = np.full(self.scores.shape, np.nan) if self.costs is None else self.costs.copy()
        for j, model in enumerate(self.models):
            if model in table:
                costs[:, j] = table[model]
        return replace(self, costs=costs)

    def priced(self, table: dict[str, float] | None) -> RoutingDataset:
        """The dataset with costs: `table` applied if given; else its own per-prompt costs,
        or a `DatasetError` saying that it has none."""
        if table is not None:
            return self.with_model_costs(table)
        if self.costs is None:
            raise DatasetError(
                f"{self.name or 'the dataset'} has no per-prompt costs; give a model-cost table "
                f"(a JSON or YAML mapping of model name to cost per request) for its models: "
                f"{', '.join(self.models)}"
            )
        return self


# ---------------------------------------------------------------- helpers shared by the loaders


def _unit_score(value: Any, where: str) -> float:
    """A label in [0, 1]; NaN for an empty value."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: score {value!r} is not a number") from None
    if not 0.0 <= score <= 1.0:  # also rejects NaN written out explicitly
        raise DatasetError(f"{where}: score {value!r} is outside [0, 1]")
    return score


def _cost(value: Any, where: str) -> float:
    """A cost >= 0; NaN for an empty value."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    try:
        cost = float(value)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: cost {value!r} is not a number") from None
    if not (math.isfinite(cost) and cost >= 0.0):
        raise DatasetError(f"{where}: cost {value!r} is not a finite number >= 0")
    return cost


def _matrix(rows: list[dict[str, float]], models: list[str]) -> np.ndarray:
    """(n, M) array from per-row {model: value} dicts; NaN where a row lacks a model."""
    out = np.full((len(rows), len(models)), np.nan)
    col = {m: j for j, m in enumerate(models)}
    for i, row in enumerate(rows):
        for model, value in row.items():
            out[i, col[model]] = value
    return out


def _models_in_order(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Model names in order of first appearance."""
    return list(dict.fromkeys(m for row in rows for m in row))


def read_model_costs(path: str | Path) -> dict[str, float]:
    """A model-cost table: a JSON or YAML file mapping model name to its cost per request."""
    import yaml  # YAML is a superset of JSON, so one parser reads both

    p = Path(path)
    try:
        table = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DatasetError(f"cannot read model-cost table {p}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise DatasetError(f"{p}: not JSON or YAML: {exc}") from None
    if not isinstance(table, dict) or not table:
        raise DatasetError(f"{p}: expected a mapping of model name to cost, e.g. {{\"gpt-4o\": 0.005}}")
    return {str(model): _cost(cost, f"{p}: {model}") for model, cost in table.items()}


# ---------------------------------------------------------------- canonical JSONL


def jsonl_records(text: str, source: str | Path, error: type[ValueError]) -> Iterator[tuple[str, Any]]:
    """("file:line", parsed JSON) for each non-blank line of JSON Lines `text`; a line that is not
    JSON raises `error` naming it."""
    # JSON strings hold no raw newline, so "\n" alone separates records (splitlines would also
    # split inside a string holding U+2028).
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"{source}:{lineno}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{where}: not JSON: {exc.msg}") from None


def load_jsonl(path: str | Path) -> RoutingDataset:
    """Read canonical JSONL (see the module docstring). Ids must be unique."""
    p = Path(path)
    ids, prompts, tasks, score_rows, cost_rows = [], [], [], [], []
    seen: set[str] = set()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"cannot read {p}: {exc.strerror}") from None
    for where, rec in jsonl_records(text, p, DatasetError):
        if not isinstance(rec, dict):
            raise DatasetError(f"{where}: expected a JSON object")
        pid, prompt, scores = rec.get("id"), rec.get("prompt"), rec.get("scores", {})
        if not isinstance(pid, str) or not pid:
            raise DatasetError(f"{where}: 'id' must be a non-empty string")
        if pid in seen:
            raise DatasetError(f"{where}: id {pid!r} appears twice")
        if not isinstance(prompt, str):
            raise DatasetError(f"{where}: 'prompt' must be a string")
        if not isinstance(scores, dict):
            raise DatasetError(f"{where}: 'scores' must be an object {{model: score}}")
        costs = rec.get("costs") or {}
        if not isinstance(costs, dict):
            raise DatasetError(f"{where}: 'costs' must be an object {{model: cost}}")
        seen.add(pid)
        ids.append(pid)
        prompts.append(prompt)
        tasks.append(str(rec.get("task") or ""))
        score_rows.append({m: _unit_score(s, f"{where}: {m}") for m, s in scores.items()})
        cost_rows.append({m: _cost(c, f"{where}: {m}") for m, c in costs.items()})
    if not ids:
        raise DatasetError(f"{p}: no records")
    models = _models_in_order(score_rows + cost_rows)
    has_costs = any(cost_rows)
    return RoutingDataset(ids, prompts, tasks, models, _matrix(score_rows, models),
                          _matrix(cost_rows, models) if has_costs else None, name=p.stem)


def write_jsonl(ds: RoutingDataset, path: str | Path) -> None:
    """Write `ds` as canonical JSONL; unlabelled scores and unknown costs are written as null."""
    with Path(path).open("w", encoding="utf-8") as out:
        for i, pid in enumerate(ds.ids):
            rec: dict[str, Any] = {"id": pid, "prompt": ds.prompts[i], "task": ds.tasks[i],
                                   "scores": _row_dict(ds.models, ds.scores[i])}
            if ds.costs is not None:
                rec["costs"] = _row_dict(ds.models, ds.costs[i])
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _row_dict(models: list[str], row: np.ndarray) -> dict[str, float | None]:
    # every model on every line (null = unlabelled / unknown), so the model order survives
    return {m: None if np.isnan(v) else float(v) for m, v in zip(models, row)}


# ---------------------------------------------------------------- RouterBench CSV


@dataclass
class RouterBenchRow:
    """One RouterBench CSV row as recorded: labels/costs hold only the models with a value."""

    id: str
    task: str
    prompt: str
    labels: dict[str, float]
    responses: dict[str, str]
    costs: dict[str, float]


def _joined(cell: str) -> str:
    """RouterBench stores prompts and answers as a Python list literal of strings; join them
    with newlines. A cell that is not such a literal is taken as plain text."""
    try:
        value = ast.literal_eval(cell)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return cell
    if isinstance(value, (list, tuple)):
        return "\n".join(str(v) for v in value)
    return value if isinstance(value, str) else cell


def _csv_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("*.csv"))
        if not files:
            raise DatasetError(f"{path}: no *.csv files")
        return files
    if not path.is_file():
        raise DatasetError(f"{path}: no such file or directory")
    return [path]


def read_routerbench_rows(path: str | Path) -> tuple[list[str], list[RouterBenchRow]]:
    """Every row of the RouterBench CSV(s) at `path` (one file, or all *.csv in a directory,
    in name order), nothing dropped. Returns (models, rows)."""
    csv.field_size_limit(1 << 30)  # prompts and answers are long single cells
    models: list[str] | None = None
    rows: list[RouterBenchRow] = []
    for file in _csv_files(Path(path)):
        try:
            with file.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                header = reader.fieldnames or []
                missing = {"sample_id", "prompt", "eval_name"} - set(header)
                if missing:
                    raise DatasetError(f"{file}: not a RouterBench CSV (no {', '.join(sorted(missing))} column)")
                file_models = [c for c in header if c not in _ROUTERBENCH_META and "|" not in c]
                if models is None:
                    models = file_models
                elif set(file_models) != set(models):
                    raise DatasetError(f"{file}: its models differ from the other files' ({', '.join(file_models)})")
                for lineno, rec in enumerate(reader, 2):
                    where = f"{file}:{lineno}"
                    labels = {m: _unit_score(rec[m], f"{where}: {m}") for m in models}
                    costs = {m: _cost(rec.get(f"{m}|total_cost"), f"{where}: {m}|total_cost") for m in models}
                    responses = {m: _joined(rec[f"{m}|model_response"]) for m in models
                                 if (rec.get(f"{m}|model_response") or "").strip()}
                    rows.append(RouterBenchRow(
                        id=rec["sample_id"], task=rec["eval_name"], prompt=_joined(rec["prompt"]),
                        labels={m: v for m, v in labels.items() if not math.isnan(v)},
                        responses=responses,
                        costs={m: v for m, v in costs.items() if not math.isnan(v)},
                    ))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DatasetError(f"cannot read {file}: {exc}") from None
    return models or [], rows


def load_routerbench(path: str | Path) -> RoutingDataset:
    """RouterBench CSV(s) as a dataset (task = eval_name, per-prompt costs = total_cost).

    Rows lacking a label for some model are dropped, then rows repeating an earlier sample_id
    (the first is kept); both counts go to stderr."""
    p = Path(path)
    models, rows = read_routerbench_rows(p)
    n_rows, n_distinct = len(rows), len({r.id for r in rows})
    labelled = [r for r in rows if len(r.labels) == len(models)]
    kept: dict[str, RouterBenchRow] = {}
    for r in labelled:
        kept.setdefault(r.id, r)
    _note(
        f"{p}: {n_rows} rows, {n_distinct} distinct sample_ids; dropped {n_rows - len(labelled)} rows "
        f"lacking a label for some model, then {len(labelled) - len(kept)} rows repeating a sample_id "
        f"(kept the first); {len(kept)} prompts"
    )
    if not kept:
        raise DatasetError(f"{p}: no fully labelled rows")
    final = list(kept.values())
    return RoutingDataset(
        ids=[r.id for r in final],
        prompts=[r.prompt for r in final],
        tasks=[r.task for r in final],
        models=models,
        scores=_matrix([r.labels for r in final], models),
        costs=_matrix([r.costs for r in final], models),
        name=p.stem,
    )


def routerbench_answers(paths: list[str | Path]) -> dict[str, list[str]]:
    """Prompt text -> every model's recorded answer to it, over the RouterBench CSV(s) at `paths`."""
    answers: dict[str, list[str]] = {}
    for path in paths:
        for by_prompt in load_routerbench_responses(path).values():
            for text, answer in by_prompt.items():
                answers.setdefault(text, []).append(answer)
    return answers


def load_routerbench_responses(path: str | Path) -> dict[str, dict[str, str]]:
    """model -> {joined prompt text -> that model's recorded answer} over every row at `path`
    (labelled or not); a prompt text seen twice keeps its first answer."""
    models, rows = read_routerbench_rows(path)
    out: dict[str, dict[str, str]] = {m: {} for m in models}
    for r in rows:
        for model, answer in r.responses.items():
            out[model].setdefault(r.prompt, answer)
    return out


# ---------------------------------------------------------------- RouterDC JSON

_SPLIT_SUFFIX = re.compile(r"[_-](train|test)$")


def load_routerdc(path: str | Path) -> RoutingDataset:
    """RouterDC JSON list(s) of {"question", "scores"} (scores a dict or its Python literal).
    task = file stem without a _train/_test/-train/-test suffix; ids are "<task>.<i>", numbered
    on across the files of one task. No costs."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.json"))
        if not files:
            raise DatasetError(f"{p}: no *.json files")
    elif p.is_file():
        files = [p]
    else:
        raise DatasetError(f"{p}: no such file or directory")
    ids, prompts, tasks, score_rows = [], [], [], []
    per_task: Counter[str] = Counter()
    for file in files:
        try:
            records = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"cannot read {file}: {exc}") from None
        if not isinstance(records, list):
            raise DatasetError(f"{file}: expected a JSON list of {{\"question\", \"scores\"}}")
        task = _SPLIT_SUFFIX.sub("", file.stem)
        for k, rec in enumerate(records):
            where = f"{file}[{k}]"
            if not isinstance(rec, dict) or not isinstance(rec.get("question"), str):
                raise DatasetError(f"{where}: expected an object with a string 'question'")
            scores = rec.get("scores")
            if isinstance(scores, str):
                try:
                    scores = ast.literal_eval(scores)
                except (ValueError, SyntaxError):
                    raise DatasetError(f"{where}: 'scores' is not a dict literal") from None
            if not isinstance(scores, dict):
                raise DatasetError(f"{where}: 'scores' must be a {{model: score}} dict")
            ids.append(f"{task}.{per_task[task]}")
            per_task[task] += 1
            prompts.append(rec["question"])
            tasks.append(task)
            score_rows.append({str(m): _unit_score(s, f"{where}: {m}") for m, s in scores.items()})
    if not ids:
        raise DatasetError(f"{p}: no records")
    models = _models_in_order(score_rows)
    return RoutingDataset(ids, prompts, tasks, models, _matrix(score_rows, models), None, name=p.stem)


# ---------------------------------------------------------------- dispatch


def detect_format(path: str | Path) -> Format:
    """The format of `path` from its suffix, or for a directory from the files in it."""
    p = Path(path)
    if p.is_dir():
        for fmt, pattern in (("routerbench", "*.csv"), ("routerdc", "*.json"), ("jsonl", "*.jsonl")):
            if any(p.glob(pattern)):
                if fmt == "jsonl":
                    raise DatasetError(f"{p}: a JSONL dataset is one file; give its path")
                return fmt  # type: ignore[return-value]
        raise DatasetError(f"{p}: no *.csv (RouterBench) or *.json (RouterDC) files")
    if not p.exists():
        raise DatasetError(f"{p}: no such file or directory")
    by_suffix = {".jsonl": "jsonl", ".csv": "routerbench", ".json": "routerdc"}
    if p.suffix.lower() not in by_suffix:
        raise DatasetError(f"{p}: cannot tell the format from the name; give it ({', '.join(FORMATS)})")
    return by_suffix[p.suffix.lower()]  # type: ignore[return-value]


def load_dataset(path: str | Path, fmt: Format | None = None) -> RoutingDataset:
    """Load `path` as `fmt` ("jsonl", "routerbench", "routerdc"; None = detect from the path)."""
    fmt = fmt or detect_format(path)
    loaders = {"jsonl": load_jsonl, "routerbench": load_routerbench, "routerdc": load_routerdc}
    if fmt not in loaders:
        raise DatasetError(f"unknown dataset format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return loaders[fmt](path)
