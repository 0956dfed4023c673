"""benchmarks.peer's choice of load driver: wrk when on PATH, else the Python load generator."""
from __future__ import annotations

import json

import pytest

from benchmarks import peer
from benchmarks.gateway import UsageError
from benchmarks.workload import prompt_window


def test_without_wrk_auto_falls_back_to_the_python_load_generator_and_an_explicit_wrk_is_refused(
        monkeypatch, tmp_path):
    monkeypatch.setattr(peer.shutil, "which", lambda name: None)
    assert isinstance(peer.make_driver("auto", "short", tmp_path, 1), peer.LoadgenDriver)
    with pytest.raises(UsageError, match="--driver loadgen"):
        peer.make_driver("wrk", "short", tmp_path, 1)


def test_with_wrk_auto_uses_it_with_prompt_windows_escaped_for_json(monkeypatch, tmp_path):
    monkeypatch.setattr(peer.shutil, "which", lambda name: "/usr/bin/wrk")
    driver = peer.make_driver("auto", "short", tmp_path, 2)
    assert isinstance(driver, peer.WrkDriver) and driver.threads == 2
    lines = driver.windows.read_text().splitlines()
    # Each line, put inside a JSON string as the wrk script does, reads back as the prompt's text.
    assert [json.loads(f'"{line}"') for line in lines] == [prompt_window("short", i) for i in range(peer.WINDOWS)]
    assert isinstance(peer.make_driver("loadgen", "short", tmp_path, 1), peer.LoadgenDriver)
