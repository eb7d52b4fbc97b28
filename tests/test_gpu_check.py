"""The GPU check runs here too, on the CPU at tiny sizes, so that the command a lent GPU machine runs is
known to work before the (rare, short) time on it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_every_section_on_the_cpu(tmp_path):
    result = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--device", "cpu", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    for name in ("gpu_tests", "peaks", "steps", "sharing", "time_to_quality", "trials"):
        assert name in report and "error" not in report[name] and "skipped" not in report[name], (
            name,
            report[name],
        )
    assert "skipped" in report["gpu_tests"]["summary"]  # no CUDA here: the gpu tests skip, and say so
    widths = [r["width"] for r in report["steps"]["rows"]]
    assert widths == [64, 32, 16] and report["steps"]["rows"][2]["ratio"] < 1
    assert report["sharing"]["processes"] == 2 and report["sharing"]["steps_per_s_total"] > 0
    assert len(report["trials"]["rows"]) == 3 and all(r["psnr"] > 0 for r in report["trials"]["rows"])
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| strategy | width |" in table and "matmul peak" in table
