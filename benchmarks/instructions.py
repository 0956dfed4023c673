"""Instructions per routed request, counted by callgrind: `python -m benchmarks.instructions`.

CPU time per request (benchmarks.cpu_per_request) moves by ±30% when other jobs share the
machine's two cores, which hides a lever worth 5%. Instructions executed do not move: valgrind's
callgrind counts them, whatever else runs (two runs of one tree agree to 0.1%). So this runs each
tree's gateway (`python -m app.cli.main serve`, the shipped state of `--embedder`, three models on
the upstream stub) under callgrind with counting off, warms it up, then counts the gateway
process's instructions (user space, all threads) over `--requests` routed chat requests from
`--clients` clients, non-streamed and then streamed. Kernel work (the sockets' system calls) is
not counted, and an instruction is not a fixed time: the figure ranks changes, CPU time on a
quiet machine says what they are worth. `--against DIR` (repeatable) measures other source trees
the same way, one after the other, and prints this tree's ratio to each. Needs valgrind (Debian's
package); a gateway starts in about 40 s under it and serves about 30 requests a second.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import report
from benchmarks.gateway import ROUTED_MODEL, stub_models
from benchmarks.loadgen import run, run_load
from benchmarks.services import (
    Service,
    log,
    start_gateway,
    start_stub,
    write_config,
)
from benchmarks.trees import compare, comparison_arguments
from benchmarks.workload import chat_request

MODES = {"non_stream": False, "stream": True}


def counted_instructions(out_dir: Path) -> int:
    """The instructions callgrind counted, from the dumps it wrote into `out_dir`."""
    total = 0
    for path in out_dir.glob("callgrind.*"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))  # each dump carries the count up to it
    return total


def callgrind(gateway: Service, *switches: str) -> None:
    """Tell the gateway's callgrind to do something (`-i on`, `-i off`, `-d`)."""
    subprocess.run(["callgrind_control", *switches, str(gateway.pid)], check=True, capture_output=True)


def measure_tree(root: Path, workdir: Path, config: Path, args: argparse.Namespace, state_dir: Path) -> dict[str, float]:
    """Million instructions per request of one tree's gateway, per mode."""
    out: dict[str, float] = {}
    first = 0
    for mode in args.modes:
        stream = MODES[mode]
        dumps = Path(tempfile.mkdtemp(dir=workdir, prefix="callgrind-"))
        launcher = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                    f"--callgrind-out-file={dumps}/callgrind.%p"]
        log(f"{root}: {mode}: starting the gateway under callgrind (about 40 s) ...")
        with start_gateway(workdir, config=config, state_dir=str(state_dir), cache_dir=args.cache_dir,
                           name=f"gateway-{root.name}-{mode}", root=root, launcher=launcher) as gateway:
            def load(n: int) -> int:
                nonlocal first
                result = run(run_load(gateway.url, lambda i: chat_request(ROUTED_MODEL, "short", first + i, stream),
                                      concurrency=args.clients, max_requests=n, max_seconds=3600.0))
                first += n
                if result.errors():
                    raise RuntimeError(f"{root}: failed requests: {dict(result.errors())}")
                return len(result.outcomes)

            load(args.warmup)
            callgrind(gateway, "-i", "on")
            served = load(args.requests)
            callgrind(gateway, "-i", "off")
            callgrind(gateway, "-d")
            out[mode] = counted_instructions(dumps) / served / 1e6
        log(f"{root}: {mode}: {out[mode]:.3f} M instructions per request")
    return out


def measure(args: argparse.Namespace, trees: dict[str, Path], state_dir: Path, workdir: Path) -> dict:
    """Every tree, one after the other, against one stub."""
    with start_stub(workdir, delay_ms=args.delay_ms) as stub:
        config = write_config(workdir, stub_models(stub.url))
        counts = {name: measure_tree(root, workdir, config, args, state_dir) for name, root in trees.items()}
    return {"benchmark": "instructions", "embedder": args.embedder, "clients": args.clients,
            "requests": args.requests, "warmup": args.warmup, "trees": {k: str(v) for k, v in trees.items()},
            "m_instructions_per_request": counts, "machine": report.machine()}


def text(result: dict) -> str:
    """The result as a markdown table."""
    trees = list(result["trees"])
    counts = result["m_instructions_per_request"]
    headers = ["mode", *(f"{t} M instructions/request" for t in trees), *(f"this / {t}" for t in trees[1:])]
    rows = [[mode, *(f"{counts[t][mode]:.3f}" for t in trees),
             *(f"{counts['this'][mode] / counts[t][mode]:.3f}" for t in trees[1:])] for mode in counts["this"]]
    return report.markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=300, help="counted requests per mode (default %(default)s)")
    p.add_argument("--warmup", type=int, default=200, help="requests before counting (default %(default)s)")
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES), help="what to count (default: both)")
    comparison_arguments(p, "another source tree whose gateway to count too (repeatable)")
    args = p.parse_args(argv)
    if min(args.requests, args.clients) < 1 or args.warmup < 0:
        p.error("--requests and --clients must be >= 1, --warmup >= 0")
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    if missing:
        print(f"benchmarks.instructions: error: {', '.join(missing)} not on PATH (Debian's package: valgrind)", file=sys.stderr)
        return 2
    return compare("instructions", p, args, argv, measure, text)


if __name__ == "__main__":
    sys.exit(main())
