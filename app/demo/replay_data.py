"""What the demo's replay upstream serves: the recorded answers of RouterBench's 11 LLMs and
arena-bench-v1's 13, one name per LLM (the seven in both under their RouterBench names, 17
LLMs in all), and the replay judge."""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from app.demo import ROUTERBENCH_DIR
from app.demo.arena import ARENA_DIR, ArenaRecords, load_arena
from app.demo.replay_judge import JUDGE_MODEL, ReplayJudge
from app.demo.replay_upstream import create_replay_app
from router_core.datasets import load_routerbench_responses


def merge_responses(*books: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """model -> prompt -> answer over several books; an earlier book's answer wins a tie."""
    out: dict[str, dict[str, str]] = {}
    for book in books:
        for model, answers in book.items():
            merged = out.setdefault(model, {})
            for prompt, answer in answers.items():
                merged.setdefault(prompt, answer)
    return out


def demo_replay_app(latency_scale: float = 1.0, routerbench_dir: str | Path = ROUTERBENCH_DIR,
                    arena: ArenaRecords | None = None) -> FastAPI:
    """The replay upstream of the demo: every recorded answer of both datasets (`arena` None: the
    vendored arena records), and the replay judge as `replay-judge`."""
    arena = arena if arena is not None else load_arena(ARENA_DIR)
    responses = merge_responses(load_routerbench_responses(routerbench_dir), arena.responses())
    return create_replay_app(responses, latency_scale, judges={JUDGE_MODEL: ReplayJudge(arena).reply})
