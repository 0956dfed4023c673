"""`uniroute replay-upstream`: serve RouterBench's recorded LLM answers as an OpenAI-compatible upstream."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.demo import ROUTERBENCH_DIR

DESCRIPTION = """\
A DEMO AND TEST TOOL, NOT AN LLM. Serves the LLMs of a RouterBench subset under OpenAI's API
(/v1/chat/completions, /v1/completions, /v1/models), answering each prompt with the answer the
named model gave to it in RouterBench (found by exact text, then whitespace-insensitively).
Prompts without a recorded answer get a clearly marked stand-in. Latency imitates each model
(time to first token + time per token), scaled by --latency-scale.
"""


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, got {value}")
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
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=_port, default=8001, help="port to listen on (default: %(default)s)")
    parser.add_argument("--latency-scale", type=_non_negative, default=1.0,
                        help="multiply the simulated latency by this; 0 answers at once (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the recorded answers and serve them until interrupted."""
    if not args.data.is_dir():
        print(f"uniroute replay-upstream: error: --data {args.data} is not a directory", file=sys.stderr)
        return 2
    # Imported here so that `uniroute --help` stays quick.
    import uvicorn

    from app.demo.replay_upstream import create_replay_app
    from router_core.datasets import load_routerbench_responses

    try:
        responses = load_routerbench_responses(args.data)
    except (OSError, ValueError) as exc:
        print(f"uniroute replay-upstream: error: cannot load RouterBench answers from {args.data}: {exc}",
              file=sys.stderr)
        return 2
    if not responses:
        print(f"uniroute replay-upstream: error: no recorded answers in {args.data}", file=sys.stderr)
        return 2
    n_prompts = max(len(answers) for answers in responses.values())
    print(f"replaying {len(responses)} models, up to {n_prompts} recorded prompts each, on "
          f"http://{args.host}:{args.port}/v1 (latency x{args.latency_scale:g}) — a demo/test tool, not an LLM",
          file=sys.stderr)
    uvicorn.run(create_replay_app(responses, args.latency_scale), host=args.host, port=args.port,
                log_level="info")
    return 0
