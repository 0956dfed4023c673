"""A small real copy of the shared data folder (`../shared/data`) for the general-mix tests.

The shared folder sits beside the checkout for developers and CI; a user's clone has none, so
tests using it skip with that reason. The copy keeps the folder layout and the first rows of
every file, so the real loaders, keys and graders run on real prompts in seconds.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason=f"the shared data folder {SHARED_DATA} is absent (it sits beside a developer's or CI's checkout, "
           "not in a user's clone)",
)


def _head_lines(src: Path, dest: Path, n: int, extra: list[str] | None = None) -> None:
    lines = [line for line in src.read_text(encoding="utf-8").splitlines() if line.strip()][:n]
    dest.write_text("\n".join(lines + (extra or [])) + "\n", encoding="utf-8")


def tiny_shared_data(dest: Path, rows: int = 30) -> Path:
    """Write the first `rows` rows of every shared data file into `dest` (same layout) and return
    it (the Arena answers: those to the rated prompts kept). Arena-Hard v0.1 also gets a copy of
    the first v2.0 prompt and a re-spaced, re-cased copy of its own first prompt, so the copy
    holds a check prompt and a duplicate to be caught."""
    csv.field_size_limit(1 << 30)
    rb, dc, arena, refs = (dest / name for name in ("routerbench_zs", "routerdc_7llm", "arena_bench_v1", "references"))
    for d in (rb, dc, arena, refs):
        d.mkdir(parents=True, exist_ok=True)
    for src in sorted((SHARED_DATA / "routerbench_zs").glob("*.csv")):
        with src.open(newline="", encoding="utf-8") as fh, (rb / src.name).open("w", newline="", encoding="utf-8") as out:
            reader = csv.reader(fh)
            writer = csv.writer(out)
            for i, row in enumerate(reader):
                if i > rows:
                    break
                writer.writerow(row)
    for src in sorted((SHARED_DATA / "routerdc_7llm").glob("*.json")):
        records = json.loads(src.read_text(encoding="utf-8"))[:rows]
        (dc / src.name).write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    v2 = SHARED_DATA / "arena_bench_v1" / "prompts-arena-hard-v2.0.jsonl"
    v01 = SHARED_DATA / "arena_bench_v1" / "prompts-arena-hard-v0.1.jsonl"
    first_v2 = json.loads(v2.read_text(encoding="utf-8").splitlines()[0])
    first_v01 = json.loads(v01.read_text(encoding="utf-8").splitlines()[0])
    planted = [json.dumps({"id": "planted-v2", "prompt": first_v2["prompt"], "category": "planted"}),
               json.dumps({"id": "planted-dup", "prompt": "  " + first_v01["prompt"].upper().replace(" ", "\n "),
                           "category": first_v01["category"]})]
    _head_lines(v2, arena / v2.name, rows)
    _head_lines(v01, arena / v01.name, rows, planted)
    _head_lines(SHARED_DATA / "arena_bench_v1" / "routing.jsonl", arena / "routing.jsonl", rows)
    kept = {json.loads(line)["id"] for line in (arena / "routing.jsonl").read_text(encoding="utf-8").splitlines()}
    (arena / "answers").mkdir(exist_ok=True)
    for src in sorted((SHARED_DATA / "arena_bench_v1" / "answers").glob("*.jsonl")):
        lines = [line for line in src.read_text(encoding="utf-8").splitlines()
                 if line.strip() and json.loads(line)["question_id"] in kept]
        (arena / "answers" / src.name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    shutil.copy(SHARED_DATA / "references" / "gsm8k_test.jsonl", refs)
    shutil.copy(SHARED_DATA / "references" / "HumanEval.jsonl.gz", refs)
    return dest
