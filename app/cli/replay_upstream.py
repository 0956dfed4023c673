"""`uniroute replay-upstream`: serve recorded LLM answers (RouterBench, arena-bench-v1) and GPT-4's
recorded judgments as an OpenAI-compatible upstream."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.cli import port_number
from app.demo import ROUTERBENCH_DIR
from app.demo.arena import ARENA_DIR

DESCRIPTION = """\
A DEMO AND TEST TOOL, NOT AN LLM. Serves the LLMs of a RouterBench subset and of arena-bench-v1
(17 LLMs; the seven in both under their RouterBench names) under OpenAI's API
(/v1/chat/completions, /v1/completions, /v1/models), answering each prompt with the answer the
named model gave to it there (found by exact text, then whitespace-insensitively). The model
'replay-judge' answers a rating request of uniroute's LLM judge with GPT-4's recorded judgment.
A prompt a model has no recorded answer to gets a clearly marked stand-in, except in the
gateway's profiling calls (header x-uniroute-purpose: profiling): there an HTTP 422
'no_recorded_answer', so the item counts as unanswered, not wrong. Latency imitates each
model (time to first token + time per token), scaled by --latency-scale.
"""


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `replay-upstream` subcommand."""
    parser = sub.add_parser(
        "replay-upstream",
        help="demo/test tool, not an LLM: serve RouterBench's recorded answers in OpenAI's format",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, default=ROUTERBENCH_DIR,
                        help="directory of RouterBench CSV files (default: the vendored subset)")
    parser.add_argument("--arena", type=Path, default=ARENA_DIR,
                        help="directory of the arena-bench-v1 records (default: the vendored subset)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=port_number, default=8001, help="port to listen on (default: %(default)s)")
    parser.add_argument("--latency-scale", type=_non_negative, default=1.0,
                        help="multiply the simulated latency by this; 0 answers at once (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the recorded answers and serve them until interrupted."""
    for flag, path in (("--data", args.data), ("--arena", args.arena)):
        if not path.is_dir():
            print(f"uniroute replay-upstream: error: {flag} {path} is not a directory", file=sys.stderr)
            return 2
    # Imported here so that `uniroute --help` stays quick.
    import uvicorn

    from app.demo.arena import load_arena
    from app.demo.replay_data import demo_replay_app

    try:
        arena = load_arena(args.arena)
        app = demo_replay_app(args.latency_scale, routerbench_dir=args.data, arena=arena)
    except (OSError, ValueError, KeyError) as exc:  # DatasetError is a ValueError
        print(f"uniroute replay-upstream: error: cannot load the recorded answers: {exc}", file=sys.stderr)
        return 2
    print(f"replaying the recorded answers of RouterBench ({args.data}) and arena-bench-v1 ({args.arena}), "
          f"with the replay judge, on http://{args.host}:{args.port}/v1 (latency x{args.latency_scale:g}) "
          "— a demo/test tool, not an LLM", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
