"""Each benchmark runs end to end in its quickest mode, as a user runs it (`python -m ...` with
`--json -`), and prints exactly one JSON object of the documented shape with finite, positive
figures (positive where noise cannot make them otherwise). Speed itself is never asserted
here: the benchmarks print it."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import peer
from router_core.repset import load_repset
from router_core.shipped import DEFAULT_REPSET, SHIPPED_STATES

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    """One embedding cache for the module's gateways: the representative set is embedded once."""
    return str(tmp_path_factory.mktemp("bench-cache"))


def run_benchmark(module: str, *args: str, expect_rc: int = 0) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIROUTE_")}
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == expect_rc, done.stderr[-3000:]
    return done


def json_out(done: subprocess.CompletedProcess) -> dict:
    """stdout is exactly one JSON object (progress went to stderr)."""
    return json.loads(done.stdout)


def finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def positive(value: object) -> bool:
    return finite(value) and value > 0


def test_gateway_benchmark_prints_overhead_throughput_and_embedder_figures(cache_dir):
    out = json_out(run_benchmark("gateway", "--quick", "--concurrency", "1", "4", "--seconds", "10",
                                 "--cache-dir", cache_dir, "--json", "-"))
    assert out["embedder"] == "fast"  # the default, as the gateway's
    assert set(out["overhead_ms"]) == {"p50", "p95", "p99"}
    # A difference of two percentiles measured apart: noise can make it negative on a loaded
    # machine, so only its being a number is checked (the benchmark prints the figure).
    assert all(finite(out["overhead_ms"][p]) for p in ("p50", "p95", "p99"))
    for key in ("rps", "direct_rps", "embedder_batch_rps", "embedder_single_rps", "embedder_single_ms",
                "routed_fraction", "gateway_peak_rss_mb"):
        assert positive(out[key]), key
    assert [(c["concurrency"], c["prompt"]) for c in out["cases"]] == [(1, "short"), (4, "short")]
    for case in out["cases"]:
        assert case["gateway"]["errors"] == {} and case["direct"]["errors"] == {}
        assert case["gateway"]["ok"] == case["gateway"]["requests"] > 0
        assert positive(case["gateway_cpu_percent"]) and positive(case["gateway_rss_peak_mb"])
        assert case["gateway_overhead_observed"] == case["gateway"]["requests"]
    assert out["machine"]["nproc"] >= 1 and out["machine"]["cpu_model"]


def test_gateway_benchmark_refuses_a_missing_state_and_says_how_to_build_one(tmp_path):
    done = run_benchmark("gateway", "--embedder", "fast", "--state-dir", str(tmp_path), "--json", "-", expect_rc=2)
    assert done.stdout == ""
    assert "uniroute build-state --embedder fast" in done.stderr


def test_gateway_benchmark_refuses_a_state_built_with_the_other_embedder():
    shipped = SHIPPED_STATES["accurate"]
    done = run_benchmark("gateway", "--embedder", "fast", "--state-dir", str(shipped), expect_rc=2)
    assert "built with embedder 'accurate'" in done.stderr


def test_cpu_per_request_compares_this_tree_with_another_in_both_modes(cache_dir):
    # The other tree is this one: what is checked is the comparison's shape, never a speed.
    out = json_out(run_benchmark("cpu_per_request", "--requests", "20", "--repeats", "2", "--warmup", "5",
                                 "--against", str(ROOT), "--cache-dir", cache_dir, "--json", "-"))
    assert list(out["trees"]) == ["this", ROOT.name] and set(out["modes"]) == {"non_stream", "stream"}
    for mode in out["modes"].values():
        assert mode["errors"] == {} and mode["requests_per_run"] == 20
        for tree in out["trees"]:
            assert len(mode["runs_ms"][tree]) == 2 and all(positive(v) for v in mode["runs_ms"][tree])
            assert positive(mode["cpu_ms_per_request"][tree])
    assert out["cpu_ms_per_request"] == {m: out["modes"][m]["cpu_ms_per_request"]["this"] for m in out["modes"]}


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_instructions_counts_a_tree_under_callgrind(cache_dir):
    out = json_out(run_benchmark("instructions", "--modes", "non_stream", "--requests", "10", "--warmup", "3",
                                 "--cache-dir", cache_dir, "--json", "-"))
    assert list(out["trees"]) == ["this"] and list(out["m_instructions_per_request"]["this"]) == ["non_stream"]
    # A routed request runs hundreds of thousands of instructions at the least, and far fewer than a billion.
    assert 0.1 < out["m_instructions_per_request"]["this"]["non_stream"] < 1000


def test_time_to_routable_prints_measured_time_against_its_bound(cache_dir):
    out = json_out(run_benchmark("time_to_routable", "--latency-ms", "20", "--concurrency", "32",
                                 "--cache-dir", cache_dir, "--json", "-"))
    items = load_repset(DEFAULT_REPSET).items  # the default set, judge items included
    n, judged = len(items), sum(item.grader.startswith("llm_judge") for item in items)
    assert out["prompts"] == n and out["latency_ms"] == 20
    (run,) = out["runs"]
    assert run["concurrency"] == 32 and run["prompts"] == n and run["errors"] == 0
    # Every prompt answered, and a judge's verdict for each judged item (the default set's are one call each).
    assert judged > 0 and run["calls"] == n + judged
    assert run["bound_s"] == pytest.approx(run["calls"] * 0.020 / 32)
    assert run["waves_bound_s"] == pytest.approx(math.ceil(run["calls"] / 32) * 0.020)
    assert positive(run["spend"])
    assert positive(run["measured_s"]) and run["ratio"] == pytest.approx(run["measured_s"] / run["bound_s"])


def test_soak_counts_and_explains_every_failure(cache_dir):
    # Half the flaky upstream's requests fail or are cut, so a short soak surely meets faults.
    out = json_out(run_benchmark("soak", "--minutes", "0.1", "--clients", "4", "--segments", "2",
                                 "--fail-rate", "0.3", "--cut-rate", "0.2", "--cache-dir", cache_dir, "--json", "-"))
    assert out["requests"] > 0 and out["unexplained"] == 0
    assert out["ok"] + sum(f["count"] for f in out["failures"]) == out["requests"]
    assert all(f["expected"] for f in out["failures"])
    assert out["injected"]["flaky"]["failed"] > 0
    assert out["gateway_metrics"]["upstream_failures"]
    rss = out["rss_mb"]
    assert positive(rss["start"]) and positive(rss["end"]) and rss["peak"] >= max(rss["start"], rss["end"])
    assert math.isfinite(rss["growth"]) and len(out["timeline"]) >= 1


def test_routing_decision_benchmark_times_both_methods_with_and_without_embedding():
    done = run_benchmark("routing_decision", "--models", "5", "--batch", "20", "--repeats", "2",
                         "--embed-repeats", "1")
    lines = done.stdout.splitlines()
    for method in ("uniroute_kmeans", "uniroute_learned_map"):
        assert any(line.startswith(f"{method}: decision from cluster weights") for line in lines), done.stdout
    assert sum("embedding + decision" in line for line in lines) == 2  # batch 1 and batch 20


WRK = pytest.param("wrk", marks=pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not on PATH"))


@pytest.mark.parametrize("driver", ["loadgen", WRK])
def test_peer_benchmark_prints_every_targets_figures_as_medians_of_its_rounds(cache_dir, driver):
    # The Python load generator always (it is the fallback), wrk when installed; LiteLLM joins
    # the wrk run where it is installed (`make bench-peer`), as in `make bench`.
    out = json_out(run_benchmark("peer", "--driver", driver, "--litellm", "auto" if driver == "wrk" else "none",
                                 "--clients", "1", "2", "--stream-clients", "1", "--rounds", "2", "--seconds", "1",
                                 "--stream-seconds", "0.5", "--warm-seconds", "0.5", "--cache-dir", cache_dir,
                                 "--json", "-"))
    peer_installed = out["versions"]["litellm"] is not None
    names = ["direct", "uniroute"] + (["litellm"] if peer_installed else [])
    assert out["targets"] == names
    assert out["driver"] == ("wrk" if driver == "wrk" else "Python load generator")
    assert (out["versions"]["wrk"] or "").startswith("wrk") == (driver == "wrk") and out["versions"]["uniroute"]
    assert [lv["clients"] for lv in out["levels"]] == [1, 2]
    for lv in out["levels"]:
        for name in names:
            t = lv["targets"][name]
            assert t["requests"] > 0 and t["errors"] == 0, (name, t)
            for key in ("p50_ms", "p99_ms", "rps", "cpu_ms_per_request"):
                assert positive(t[key]), (name, key)
        assert set(lv["overhead_p50_ms"]) == set(names) - {"direct"}
        assert all(finite(v) for v in lv["overhead_p50_ms"].values())  # a difference: noise may make it < 0
        assert positive(lv["uniroute_vs_litellm_rps"]) if peer_installed else lv["uniroute_vs_litellm_rps"] is None
    (stream,) = out["streams"]
    assert stream["clients"] == 1 and all(positive(stream["first_event_p50_ms"][n]) for n in names)
    assert all(finite(v) for v in stream["minus_direct_ms"].values())
    out["command"] = "python -m benchmarks.peer (test)"  # set by publish() on --write-docs
    section = peer.docs_section(out)
    assert section.startswith(f"## Against a peer ({out['driver']})") and out["versions"]["uniroute"] in section
    assert section.count("| 1 |") == 2 and "| 2 |" in section  # both tables, every client count


def test_workers_benchmark_prints_throughput_per_worker_count(cache_dir):
    out = json_out(run_benchmark("workers", "--workers", "1", "2", "--clients", "2", "--seconds", "3",
                                 "--cache-dir", cache_dir, "--json", "-"))
    assert [c["workers"] for c in out["cases"]] == [1, 2] and out["clients"] == 2
    for case in out["cases"]:
        for key in ("rps", "direct_rps", "speedup", "gateway_cpu_percent"):
            assert positive(case[key]), key
        assert case["gateway"]["errors"] == {}
    assert out["cases"][0]["speedup"] == 1.0


def test_upstream_client_benchmark_prints_cpu_per_call_for_each_mode():
    out = json_out(run_benchmark("upstream_client", "--requests", "30", "--rounds", "1", "--json", "-"))
    for mode in ("non_stream", "stream"):
        per = out[mode]["cpu_us_per_call"]
        assert positive(per["uniroute"])
        assert all(positive(v) for v in per.values())  # aiohttp's too, when it is installed
    assert (out["requests_per_round"], out["rounds"]) == (30, 1)
