"""Every resource that ships inside router_core, named in one place.

- `state/fast`, `state/accurate`: the router states (clusters) that come with uniroute. `fast`
  embeds with a static model distilled from MiniLM (stored beside it), `accurate` with MiniLM
  itself; routing quality is the same on our evaluations (docs/evaluation.md), so `fast` is the
  default.
- `repset/`: the default representative prompt set new models are profiled on.
"""
from __future__ import annotations

from pathlib import Path

RESOURCES = Path(__file__).parent / "resources"
SHIPPED_STATES = {"fast": RESOURCES / "state" / "fast", "accurate": RESOURCES / "state" / "accurate"}
DEFAULT_STATE = "fast"
DEFAULT_REPSET = RESOURCES / "repset" / "routerbench_mc.jsonl"


def state_path(name_or_path: str | Path) -> Path:
    """The folder of a shipped state named `fast` or `accurate`, or the given folder itself."""
    return SHIPPED_STATES.get(str(name_or_path), Path(name_or_path))
