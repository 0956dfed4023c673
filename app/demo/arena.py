"""The demo's arena-bench-v1 records: 275 open-ended prompts with GPT-4's reference answers, the
recorded answers of 13 chat LLMs and GPT-4's 1-10 rating (with its judgment text) of each.

The seven LLMs that also answer in the RouterBench subset are named as RouterBench names them
(`ROUTERBENCH_NAMES`), so the demo serves each under one name; the six others keep their arena
names. Data, source and licence: `data/arena_bench_v1/README.md`.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from app.demo import DATA_DIR
from router_core.pricing import Price
from router_core.repset import RepItem

ARENA_DIR = DATA_DIR / "arena_bench_v1"

# arena name -> RouterBench name, for the LLMs both datasets hold
ROUTERBENCH_NAMES = {
    "gpt-3.5-turbo-1106": "gpt-3.5-turbo-1106",
    "gpt-4-1106-preview": "gpt-4-1106-preview",
    "claude-1": "claude-v1",
    "claude-2.1": "claude-v2",
    "claude-instant-1": "claude-instant-v1",
    "Llama-2-70b-chat": "meta/llama-2-70b-chat",
    "Mistral-7B-Instruct-v0.1": "mistralai/mistral-7b-chat",
}


def demo_name(arena_name: str) -> str:
    """The name the demo serves an arena LLM under: its RouterBench name when it has one."""
    return ROUTERBENCH_NAMES.get(arena_name, arena_name)


@dataclass(frozen=True)
class RecordedAnswer:
    """One LLM's recorded answer to one prompt, with GPT-4's rating of it (None when unrated)."""

    answer: str
    rating: int | None
    judgment: str | None

    @property
    def score(self) -> float | None:
        """The rating as a score in [0, 1], as router_core.judging reads a rating: (n - 1) / 9."""
        return None if self.rating is None else (self.rating - 1) / 9


@dataclass(frozen=True)
class ArenaRecords:
    """The prompts, every LLM's recorded answers (by demo name, then prompt id) and list prices."""

    items: dict[str, RepItem]  # the prompts with GPT-4's reference answers, judged by rating
    answers: dict[str, dict[str, RecordedAnswer]]
    prices: dict[str, Price]

    @property
    def models(self) -> list[str]:
        """The LLMs with recorded answers, by demo name, sorted."""
        return sorted(self.answers)

    def responses(self) -> dict[str, dict[str, str]]:
        """model -> {prompt text -> recorded answer}, the replay upstream's shape."""
        return {model: {self.items[pid].prompt: a.answer for pid, a in by_id.items()}
                for model, by_id in self.answers.items()}


def load_arena(path: str | Path = ARENA_DIR) -> ArenaRecords:
    """Read the arena records at `path` (`prompts.jsonl`, `answers.jsonl.gz`, `prices.json`)."""
    root = Path(path)
    items = {}
    for line in (root / "prompts.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            items[rec["id"]] = RepItem(rec["id"], rec["prompt"], rec["reference"], "llm_judge:rating", "arena-bench-v1")
    answers: dict[str, dict[str, RecordedAnswer]] = {}
    with gzip.open(root / "answers.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            if rec["id"] in items:
                answers.setdefault(demo_name(rec["model"]), {})[rec["id"]] = RecordedAnswer(
                    rec["answer"], rec.get("rating"), rec.get("judgment"))
    table = json.loads((root / "prices.json").read_text(encoding="utf-8"))
    prices = {demo_name(m): Price(input_per_mtok=p["input_per_mtok"], output_per_mtok=p["output_per_mtok"])
              for m, p in table.items()}
    return ArenaRecords(items, answers, prices)
