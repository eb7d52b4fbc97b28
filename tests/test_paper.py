"""`study paper` end to end at the toy budget on the built-in scene: a real study (Ray, Optuna, MLflow),
then the report's tables checked against the results table they claim to summarise."""

from __future__ import annotations

import json
import math
import re
import statistics

import pyarrow.parquet as pq
import pytest

from study.paper.findings import drop_finding, order_finding
from study.paper.numbers import PAPER, Cell
from tests.test_cli import assert_one_line_error
from tests.test_cli import study as run_cli


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    result = run_cli("paper", "--budget", "toy", "--out", str(root / "p"), "--cache-dir", str(root / "cache"))
    assert result.returncode == 0, result.stderr[-3000:]
    return {"dir": root / "p", "stdout": result.stdout}


def mean_psnr(rows, strategy, **where):
    """The paper's tables report the TEST PSNR (the study chose nothing by it)."""
    values = [
        r["test_psnr"]
        for r in rows
        if r["status"] == "COMPLETE"
        and r["strategy"] == strategy
        and all(r[k] == v for k, v in where.items())
    ]
    return statistics.fmean(values), len(values)


def test_every_grid_point_ran_with_replicates(paper_run):
    rows = pq.read_table(paper_run["dir"] / "results.parquet").to_pylist()
    assert all(r["status"] == "COMPLETE" for r in rows)
    # 3 edge thresholds once; uniform, 3 importance criteria and 2 coreset widths twice each (toy: 2 seeds)
    assert len(rows) == 3 + 6 * 2
    coreset64 = [r for r in rows if r["strategy"] == "coreset" and r["width"] == 64]
    assert sorted(r["replicate"] for r in coreset64) == [0, 1]
    assert sorted(r["seed"] for r in coreset64) == [0, 1]  # replicate r runs at seed + r
    assert len({r["psnr"] for r in coreset64}) == 2  # different seeds, different models


def test_report_tables_match_the_results_table(paper_run):
    rows = pq.read_table(paper_run["dir"] / "results.parquet").to_pylist()
    report = (paper_run["dir"] / "paper_report.md").read_text()
    tables = json.loads((paper_run["dir"] / "paper_tables.json").read_text())
    for heading in ("## Table 1", "## Table 2", "## Table 3", "## Table 4", "## Findings", "## Figures"):
        assert heading in report
    assert "missing" not in report and "nan" not in report.lower()
    assert "Every PSNR below is measured on the held-out test views" in report
    assert all(r["test_psnr"] != r["psnr"] for r in rows)  # validation and test scores, apart
    baseline, _ = mean_psnr(rows, "edge", threshold=0.0)
    assert tables["baseline"]["psnr"]["mean"] == pytest.approx(baseline)
    for criterion, label in (
        ("importance-in", "w_in"),
        ("importance-out", "w_out"),
        ("importance-prod", "w_in x w_out"),
    ):
        value, n = mean_psnr(rows, criterion, width=64)
        assert n == 2 and tables["importance"][criterion]["mean"] == pytest.approx(value)
        row = next(line for line in report.splitlines() if line.startswith(f"| {label} |"))
        assert row.split("|")[2].strip().startswith(f"{value:.2f} ± ")
        assert f"| {PAPER['importance'][criterion]} |" in row
    value, _ = mean_psnr(rows, "coreset", width=128)
    row = next(line for line in report.splitlines() if line.startswith("| 128 |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    params = next(r["params"] for r in rows if r["strategy"] == "coreset" and r["width"] == 128)
    assert cells[1] == f"{params:,}" and cells[5].startswith(f"{value:.2f} ± ") and cells[6] == "21.3"
    kept = next(r["kept_fraction"] for r in rows if r["strategy"] == "edge" and r["threshold"] == 0.05)
    row = next(line for line in report.splitlines() if line.startswith("| 0.05 |"))
    assert row.split("|")[2].strip() == f"{kept:.1%}" and "| 40% |" in row
    minutes = [r["train_time"] * 100 / 60 for r in rows if r["strategy"] == "coreset" and r["width"] == 64]
    assert tables["coreset"]["64"]["min_per_100k"]["mean"] == pytest.approx(statistics.fmean(minutes))
    findings = report.split("## Findings")[1].split("## Figures")[0]
    assert len(re.findall(r"\*\*(reproduced|not reproduced|reversed)", findings)) >= 14


def test_figures_exist_and_the_report_is_in_mlflow(paper_run):
    from mlflow import MlflowClient

    folder = paper_run["dir"]
    for name in ("fig2_weight_histogram.png", "fig4_renders.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in (folder / "paper_report.md").read_text()
    summary = json.loads((folder / "study.json").read_text())
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    names = {a.path for a in client.list_artifacts(summary["mlflow"]["parent_run_id"])}
    assert {"paper_report.md", "paper_tables.json", "fig2_weight_histogram.png", "fig4_renders.png"} <= names
    assert paper_run["stdout"].startswith("# Reproducing")


def test_verdicts_follow_the_numbers():
    assert "**reproduced**" in drop_finding("x", Cell.of([0.3, 0.5]), 0.2)
    assert "**not reproduced**" in drop_finding("x", Cell.of([3.0]), 0.2)
    assert "**reproduced**" in order_finding("x", Cell.of([20.0]), Cell.of([19.0]), 0.5)
    assert "**reversed**" in order_finding("x", Cell.of([18.0, 18.1]), Cell.of([20.0, 20.1]), 0.5)
    assert "within the seed spread" in order_finding("x", Cell.of([19.0, 20.0]), Cell.of([19.6, 19.8]), 0.5)
    assert math.isnan(Cell.of([]).mean) and Cell.of([1.0]).std == 0.0


def test_bad_budget_is_one_line():
    assert_one_line_error(run_cli("paper", "--budget", "huge"), "'huge'", "cpu", "paper", "toy")
    assert_one_line_error(run_cli("paper", "--budget", "toy", "--replicates", "0"), "replicates", "0")
