"""benchmarks/run_all.py names scripts that exist, with flags their parsers accept.

No benchmark runs here: each script's ``main`` is called with ``parse_args`` patched to
stop right after parsing, so a renamed script or flag fails this test, not ``make bench``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:  # `pytest` alone does not put the repository root on the path
    sys.path.insert(0, ROOT)

from benchmarks import run_all  # noqa: E402

RUNS = sorted(set(run_all.QUICK + run_all.FULL))
BENCH_ONLY = {"diffusers", "torchcfm", "flow_matching", "zuko"}
"""Peers that only the ``bench`` extra installs (CI installs ``dev``)."""


class Parsed(Exception):
    """Raised by the patched ``parse_args`` instead of running the benchmark."""


@pytest.mark.parametrize("run", RUNS, ids=[" ".join((r.script, *r.args)) for r in RUNS])
def test_flags_parse(run: run_all.Run, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        module = importlib.import_module(f"benchmarks.{run.script}")
    except ModuleNotFoundError as e:  # a peer of the `bench` extra, not of `dev`
        if e.name not in BENCH_ONLY:
            raise
        pytest.skip(f"{run.script} needs {e.name} (pip install -e '.[bench]')")
    if "ArgumentParser" not in inspect.getsource(module):
        assert run.args == (), f"{run.script} takes no flags"
        assert callable(module.main)
        return
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, *a: Any, **k: Any) -> None:
        raise Parsed(parse(self, *a, **k))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr("sys.argv", [run.script, *run.args])
    with pytest.raises(Parsed):
        module.main()


def test_main_runs_each_command_and_reports_failures(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1 if cmd[2] == "benchmarks.bench_sde" else 0)

    monkeypatch.setattr(run_all.subprocess, "run", fake_run)
    assert run_all.main([]) == 1
    assert calls == [run_all.command(r) for r in run_all.QUICK]
    out = capsys.readouterr().out
    assert "$ python -m benchmarks.bench_ode --quick" in out
    assert "FAILED: python -m benchmarks.bench_sde --quick" in out

    monkeypatch.setattr(run_all, "QUICK", run_all.QUICK[:1])
    assert run_all.main([]) == 0
