"""`uniroute models add|list|show|rm` drive a running gateway's admin API for ops."""
from __future__ import annotations

import json

import httpx

from app.cli.main import main
from tests.app.test_admin import ADMIN


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

        code, out, _ = run(capsys, gw, "list")
        assert code == 0 and "echo" in out and "ready" in out

        code, out, _ = run(capsys, gw, "show", "echo")
        shown = json.loads(out)
        assert code == 0 and shown["state"] == "ready" and shown["cost"]["per_request"] == 0.5

        code, _, _ = run(capsys, gw, "rm", "echo")
        assert code == 0
        assert httpx.get(gw + "/admin/models/echo", headers={"authorization": f"Bearer {ADMIN}"},
                         timeout=5).status_code == 404


def test_errors_are_one_line_and_exit_1(make_gateway, capsys):
    with make_gateway(models=[], admin_key=ADMIN) as gw:
        capsys.readouterr()  # the gateway's own start-up output
        code, _, err = run(capsys, gw, "show", "nobody")
        assert code == 1 and err == "uniroute models: HTTP 404: no registered model 'nobody'\n"
        code = main(["models", "--url", gw, "--admin-key", "wrong", "list"])
        assert code == 1 and "HTTP 401" in capsys.readouterr().err
    code = main(["models", "--url", "http://127.0.0.1:9", "list"])
    assert code == 1 and "cannot reach the gateway" in capsys.readouterr().err
