"""`uniroute models add|set|list|show|rm|jobs|cancel|reprofile|enable|disable|answers` drive a
running gateway's admin API for ops; Ctrl-C stops following a job, not the job."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from app.cli.main import main
from tests.app.test_admin import ADMIN
from tests.support.fault_upstream import Fault


def run(capsys, gw: str, *argv: str) -> tuple[int, str, str]:
    code = main(["models", "--url", gw, "--admin-key", ADMIN, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_add_follows_the_job_then_list_show_and_rm(make_gateway, fault_upstream, capsys):
    _, url = fault_upstream
    with make_gateway(models=[], admin_key=ADMIN, profile_concurrency=16) as gw:
        code, out, err = run(capsys, gw, "add", "echo", "--base-url", url, "--per-request", "0.5")
        assert code == 0, err
        job = json.loads(out)
        assert job["state"] == "done" and job["done"] == job["total"] > 0
        assert "profiling echo" in err  # the progress bar went to stderr
        assert "warning" not in err  # no answer was cut at its max_tokens

        code, out, _ = run(capsys, gw, "list")
        assert code == 0 and "echo" in out and "ready" in out

        code, out, _ = run(capsys, gw, "show", "echo")
        shown = json.loads(out)
        assert code == 0 and shown["state"] == "ready" and shown["cost"]["per_request"] == 0.5

        code, _, _ = run(capsys, gw, "rm", "echo")
        assert code == 0
        assert httpx.get(gw + "/admin/models/echo", headers={"authorization": f"Bearer {ADMIN}"},
                         timeout=5).status_code == 404


def test_add_warns_when_the_jobs_answers_were_cut_at_its_max_tokens(make_gateway, fault_upstream, capsys):
    _, url = fault_upstream
    with make_gateway(models=[], admin_key=ADMIN) as gw:
        code, out, err = run(capsys, gw, "add", "short", "--base-url", url, "--per-request", "0.5",
                             "--limit", "10", "--max-tokens", "2")
    assert code == 0 and json.loads(out)["truncated"] == 10
    assert "uniroute models: warning: 10 of the 10 graded answers ended at the job's max_tokens" in err


def test_set_changes_where_a_model_is_reached_and_its_price_keeping_its_profile(make_gateway, model_config,
                                                                               fault_upstream, capsys):
    upstream, url = fault_upstream
    with make_gateway(models=[model_config("m", url)], admin_key=ADMIN) as gw:
        capsys.readouterr()
        code, out, err = run(capsys, gw, "set", "m", "--upstream-model", "m-v2", "--api-key-env", "M_API_KEY",
                             "--per-request", "3")
        assert code == 0, err
        assert json.loads(out) == {"name": "m", "base_url": url, "upstream_model": "m-v2", "api_key_env": "M_API_KEY",
                                   "cost": {"input_per_mtok": 0.0, "output_per_mtok": 0.0, "per_request": 3.0},
                                   "state": "ready"}
        code, out, _ = run(capsys, gw, "set", "m", "--input-per-mtok", "2")  # one price: the others stay
        assert code == 0 and json.loads(out)["cost"] == {"input_per_mtok": 2.0, "output_per_mtok": 0.0,
                                                         "per_request": 3.0}
        code, out, _ = run(capsys, gw, "set", "m", "--no-api-key")
        assert code == 0 and json.loads(out)["api_key_env"] is None
        httpx.post(gw + "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                   timeout=10).raise_for_status()
        assert upstream.received[-1].model == "m-v2" and "authorization" not in upstream.received[-1].headers
        code, _, err = run(capsys, gw, "set", "m")
        assert code == 2 and err.startswith("uniroute models: error: nothing to change")
        code, _, err = run(capsys, gw, "set", "m", "--base-url", "ftp://x")
        assert code == 1 and "base_url" in err


def test_a_name_holding_url_characters_reaches_that_model_never_another(make_gateway, model_config, fault_upstream,
                                                                        capsys):
    _, url = fault_upstream
    names = ["q", "q?s", "h#s", "p%2F", "a/b"]
    with make_gateway(models=[model_config(n, url) for n in names], admin_key=ADMIN) as gw:
        capsys.readouterr()
        for name in names:
            code, out, err = run(capsys, gw, "show", name)
            assert code == 0 and json.loads(out)["name"] == name, err
        code, out, err = run(capsys, gw, "disable", "h#s")
        assert code == 0 and json.loads(out) == {"name": "h#s", "state": "disabled", "enabled": False, "error": None}
        code, _, err = run(capsys, gw, "rm", "q?s")
        assert code == 0, err
        listed = httpx.get(gw + "/admin/models", headers={"authorization": f"Bearer {ADMIN}"}, timeout=5).json()
        assert {m["name"]: m["enabled"] for m in listed["data"]} == {"q": True, "h#s": False, "p%2F": True, "a/b": True}


def test_errors_are_one_line_and_exit_1(make_gateway, capsys):
    with make_gateway(models=[], admin_key=ADMIN) as gw:
        capsys.readouterr()  # the gateway's own start-up output
        code, _, err = run(capsys, gw, "show", "nobody")
        assert code == 1 and err == "uniroute models: HTTP 404: no registered model 'nobody'\n"
        code = main(["models", "--url", gw, "--admin-key", "wrong", "list"])
        assert code == 1 and "HTTP 401" in capsys.readouterr().err
    code = main(["models", "--url", "http://127.0.0.1:9", "list"])
    assert code == 1 and "cannot reach the gateway" in capsys.readouterr().err


def test_the_gateway_options_also_follow_the_verb(make_gateway, capsys, monkeypatch):
    monkeypatch.delenv("UNIROUTE_ADMIN_KEY", raising=False)
    monkeypatch.delenv("UNIROUTE_URL", raising=False)
    with make_gateway(models=[], admin_key=ADMIN) as gw:
        capsys.readouterr()
        assert main(["models", "list", "--url", gw, "--admin-key", ADMIN]) == 0
        assert capsys.readouterr().out.startswith("name")
        assert main(["state", "show", "--url", gw, "--admin-key", ADMIN]) == 0
        assert json.loads(capsys.readouterr().out)["state"]["version"]
        # before the verb as ever; given in both places, the verb's wins
        assert main(["models", "--url", gw, "--admin-key", "wrong", "list", "--admin-key", ADMIN]) == 0
        assert main(["models", "--url", gw, "--admin-key", ADMIN, "list", "--admin-key", "wrong"]) == 1
        assert "HTTP 401" in capsys.readouterr().err


def test_an_unreadable_scores_file_is_one_line_and_exit_2(tmp_path, capsys):
    bad, listed = tmp_path / "bad.json", tmp_path / "list.json"
    bad.write_text("{bad")
    listed.write_text("[1]")
    for path, said in ((tmp_path / "none.json", "No such file or directory"), (bad, "not JSON"),
                       (listed, "must be a JSON object")):
        code = main(["models", "--url", "http://127.0.0.1:9", "add", "m", "--base-url", "http://x/v1",
                     "--per-request", "1", "--scores", str(path)])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith(f"uniroute models: error: --scores {path}: ") and said in err
        assert err.count("\n") == 1


def test_a_listing_whose_reader_has_gone_ends_quietly(make_gateway):
    # `uniroute models list | head -0`: the reading end of the pipe is closed before a line is printed
    read, write = os.pipe()
    os.close(read)
    with make_gateway(models=[], admin_key=ADMIN) as gw:
        lister = subprocess.run([sys.executable, "-m", "app.cli.main", "models", "--url", gw, "--admin-key", ADMIN,
                                 "list"], stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write)
    assert lister.returncode == 141 and lister.stderr == "", lister.stderr


def test_jobs_reprofile_cancel_disable_and_enable(make_gateway, fault_upstream, capsys):
    upstream, url = fault_upstream
    with make_gateway(models=[], admin_key=ADMIN) as gw:
        code, out, _ = run(capsys, gw, "add", "echo", "--base-url", url, "--per-request", "0.5", "--limit", "20",
                             "--seed", "4", "--max-tokens", "16")
        first = json.loads(out)
        assert code == 0 and first["state"] == "done" and first["total"] == 20
        assert first["options"] == {"limit": 20, "seed": 4, "max_tokens": 16}
        assert upstream.received[-1].body["max_tokens"] == 16

        upstream.set_fault("echo", Fault(delay_s=0.5))
        code, out, _ = run(capsys, gw, "reprofile", "echo", "--limit", "10", "--concurrency", "1", "--no-wait")
        again = json.loads(out)
        assert code == 0 and again["model"] == "echo"
        code, out, _ = run(capsys, gw, "jobs", "echo")
        lines = out.splitlines()
        assert code == 0 and len(lines) == 3
        assert first["id"] in lines[1] and "done" in lines[1] and again["job_id"] in lines[2] and "running" in lines[2]
        code, out, err = run(capsys, gw, "jobs", "ecko")  # a misspelt name is not a model without jobs
        assert code == 1 and "no model 'ecko'" in err and out == ""

        code, out, _ = run(capsys, gw, "cancel", again["job_id"])
        assert code == 0 and json.loads(out)["state"] == "cancelled"
        code, out, _ = run(capsys, gw, "disable", "echo")
        assert code == 0 and json.loads(out)["state"] == "disabled"
        code, out, _ = run(capsys, gw, "enable", "echo")
        assert code == 0 and json.loads(out)["state"] == "ready"
        code, out, _ = run(capsys, gw, "answers", "echo", "--filter", "wrong", "--limit", "3")
        shown = json.loads(out)
        # every fake answer is graded wrong: the first job's 20, and any the cancelled reprofile
        # stored before its cancel (on a loaded machine the CLI's steps above outlast its delay)
        _, out, _ = run(capsys, gw, "answers", "echo", "--limit", "1000")
        assert code == 0 and shown["total"] == json.loads(out)["total"] >= 20 and len(shown["data"]) == 3


def test_ctrl_c_while_following_says_the_job_goes_on_without_a_traceback(make_gateway, fault_upstream):
    _, url = fault_upstream
    with make_gateway(models=[], admin_key=ADMIN) as gw:
        cli = subprocess.Popen([sys.executable, "-m", "app.cli.main", "models", "--url", gw, "--admin-key", ADMIN,
                                "add", "slow", "--base-url", url, "--upstream-model", "slow:delay=0.2",
                                "--per-request", "1", "--concurrency", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        jobs: list = []
        while not jobs and time.monotonic() < deadline:
            time.sleep(0.2)
            jobs = httpx.get(gw + "/admin/jobs", headers={"authorization": f"Bearer {ADMIN}"}, timeout=5).json()["data"]
        time.sleep(1.0)  # following by now
        cli.send_signal(signal.SIGINT)
        out, err = cli.communicate(timeout=30)
        job = httpx.get(gw + f"/admin/jobs/{jobs[0]['id']}", headers={"authorization": f"Bearer {ADMIN}"},
                        timeout=5).json()
    assert cli.returncode == 130 and out == ""
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("uniroute models: stopped following; job ") and "goes on" in last
    assert f"uniroute models cancel {jobs[0]['id']}" in last
    assert job["state"] == "running"


def test_a_non_finite_number_is_one_line_and_exit_2_not_a_traceback(capsys):
    # float() takes "nan" and "inf": they reached the admin API's JSON encoder (a traceback),
    # a state's prior or the near-duplicate threshold (a traceback after the embedding)
    gateway = ["--url", "http://127.0.0.1:9", "--admin-key", "k"]
    for argv in (["models", *gateway, "add", "m", "--base-url", "http://x/v1", "--per-request", "nan"],
                 ["models", *gateway, "set", "m", "--output-per-mtok", "inf"],
                 ["models", *gateway, "reprofile", "m", "--spend-cap=-inf"],
                 ["state", *gateway, "apply", "--state-dir", "s", "--repset", "r", "--spend-cap", "nan"],
                 ["build-state", "--data", "d", "--out", "o", "--prior", "nan"],
                 ["repset", "build", "--data", "d", "--state", "s", "--per-cluster", "1", "--out", "o",
                  "--near-duplicate", "nan"]):
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        err = capsys.readouterr().err
        assert stopped.value.code == 2, argv
        assert "must be a finite number" in err and "Traceback" not in err, err


def test_a_near_duplicate_threshold_out_of_range_is_refused_before_any_work(tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"id": "a", "prompt": "hello"}\n')
    for threshold in ("0", "1.5", "-1"):
        code = main(["repset", "build", "--data", str(rows), "--state", "no-such-state", "--per-cluster", "1",
                     "--out", str(tmp_path / "out.jsonl"), "--near-duplicate", threshold])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("uniroute repset build: error: --near-duplicate must be in (0, 1]"), err
