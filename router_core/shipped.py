"""Every resource that ships inside router_core, named in one place.

- `state/fast`, `state/accurate`: the general router states, fitted on a broad mix of benchmark
  and real open-ended prompts (router_core.general_mix; labels of their clusters in their
  state.json). `fast` embeds with a static model distilled from MiniLM (`fast-embedder/`, one
  copy shared by the shipped fast states), `accurate` with MiniLM itself; `fast` is the default.
- `state/routerbench-fast`, `state/routerbench-accurate`: the first states, fitted on RouterBench's
  ARC, Winogrande and MBPP training prompts only (K = 10); the RouterBench evaluations use them.
- `repset/general.jsonl`: the default representative prompt set new models are profiled on
  (multiple choice, maths, code with tests, open-ended with reference answers; every cluster of
  both general states covered); `repset/routerbench_mc.jsonl`: the first, multiple choice only.
"""
from __future__ import annotations

from pathlib import Path

RESOURCES = Path(__file__).parent / "resources"
SHIPPED_STATES = {name: RESOURCES / "state" / name
                  for name in ("fast", "accurate", "routerbench-fast", "routerbench-accurate")}
DEFAULT_STATE = "fast"
FAST_EMBEDDER_DIR = RESOURCES / "fast-embedder"
DEFAULT_REPSET = RESOURCES / "repset" / "general.jsonl"
ROUTERBENCH_REPSET = RESOURCES / "repset" / "routerbench_mc.jsonl"


def state_path(name_or_path: str | Path) -> Path:
    """The folder of a shipped state named `fast` or `accurate`, or the given folder itself."""
    return SHIPPED_STATES.get(str(name_or_path), Path(name_or_path))
