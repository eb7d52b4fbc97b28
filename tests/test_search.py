"""The search never spends compute twice: repeated proposals are answered, not retrained, and a finite
space ends the study early. A real study (Ray, Optuna, MLflow) on a three-configuration space."""

from __future__ import annotations

from dataclasses import replace

import optuna
import pyarrow.parquet as pq
import pytest

from study.run.options import StudyOptions
from study.search import space as spaces
from study.search.space import config_key, trial_config

TINY = dict(
    dense_iters=30,
    retrain_iters=10,
    rays_per_step=32,
    samples=8,
    eval_views=1,
    seed=0,
    max_concurrent=2,
    allow_weak_dense=True,  # 30 steps do not learn the scene; what is tested here is the search
)


def three_configs(trial: optuna.Trial) -> dict:
    # beta is no parameter under relu: coreset at beta 1 and at beta 5 are one configuration
    choice = trial.suggest_categorical("choice", ["uniform-32", "coreset-b1", "coreset-b5", "edge"])
    if choice == "uniform-32":
        return trial_config("uniform", 32)
    if choice == "edge":
        return trial_config("edge", threshold=0.05)
    return trial_config("coreset", 32, beta=1.0 if choice == "coreset-b1" else 5.0, phi="relu")


@pytest.fixture
def finite_space(monkeypatch):
    space = replace(
        spaces.SPACES["quick"],
        name="finite",
        define=three_configs,
        flat_define=None,
        seed_points=[],
        scheduler="fifo",
    )
    monkeypatch.setitem(spaces.SPACES, "finite", space)
    return space


def test_a_repeated_proposal_is_answered_not_retrained_and_a_finite_space_ends_early(tmp_path, finite_space):
    import ray

    from study.run.runner import launch

    lines: list[str] = []
    try:
        result = launch(
            StudyOptions(
                space="finite",
                out=tmp_path / "s",
                cache_dir=tmp_path / "cache",
                trials=8,
                sampler="random",
                **TINY,
            ),
            echo=lines.append,
        )
    finally:
        ray.shutdown()
    rows = pq.read_table(tmp_path / "s" / "results.parquet").to_pylist()
    keys = [config_key(r) for r in rows]
    assert len(rows) == 3 and len(set(keys)) == 3  # three configurations, each retrained once
    assert result.exhausted and result.repeats_avoided >= 1
    assert any("the space is exhausted" in line for line in lines)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's' / 'optuna.db'}")
    measured = [t for t in study.trials if "repeat_of" not in t.user_attrs]
    repeats = [t for t in study.trials if "repeat_of" in t.user_attrs]
    assert sorted(t.user_attrs["config_key"] for t in measured) == sorted(keys)
    assert len(repeats) == result.repeats_avoided
    for t in repeats:  # the sampler was told what the study measured for that configuration
        twin = next(m for m in measured if m.user_attrs["config_key"] == t.user_attrs["repeat_of"])
        assert t.state == twin.state and t.values == twin.values
    summary = (tmp_path / "s" / "report.md").read_text()
    assert f"{result.repeats_avoided} repeated proposals answered without retraining" in summary
    assert "(the space is exhausted)" in summary


MOASHA_STUDY = ["--space", "full", "--downscale", "4", "--trials", "8", "--dense-iters", "30"]
MOASHA_STUDY += ["--retrain-iters", "27", "--rays-per-step", "32", "--samples", "8", "--eval-views", "1"]
MOASHA_STUDY += ["--allow-weak-dense"]  # 30 steps do not learn the scene; what is tested is the scheduling
"""A tiny `full` study: MOASHA's rungs at 1, 3 and 9 of 27 retraining steps (eta 3) stop some trials."""


def test_moasha_stops_trials_at_rungs_records_them_stopped_and_resumes_with_its_decisions(tmp_path):
    """A real `study launch --space full` (its default scheduler is moasha) on the built-in scene, killed
    right after its fourth record and resumed."""
    import json
    import signal
    import subprocess
    import sys
    import uuid
    from pathlib import Path

    from mlflow import MlflowClient

    from study.durable import read_lines
    from study.record.store import StudyFolder
    from study.record.study_record import StudyRecord
    from tests.test_resilience import driver_env, kill_leftovers

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "s"
    mark = uuid.uuid4().hex
    args = [sys.executable, "-m", "study.cli", "launch", *MOASHA_STUDY, "--out", str(out)]
    try:
        first = subprocess.run(
            args,
            capture_output=True,
            text=True,
            cwd=root,
            timeout=600,
            start_new_session=True,
            env=driver_env(tmp_path, mark, NERF_STUDY_KILL_AT="trial_recorded:4"),
        )
        assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
        before = {r["trial_id"]: r for r in read_lines(out / "trials.jsonl")}
        decided_before = read_lines(out / "rungs.jsonl")
        second = subprocess.run(
            [*args, "--resume"],
            capture_output=True,
            text=True,
            cwd=root,
            timeout=600,
            start_new_session=True,
            env=driver_env(tmp_path, mark),
        )
        assert second.returncode == 0, second.stderr[-3000:]
    finally:
        kill_leftovers(mark)
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert len(rows) == 8 and len({config_key(r) for r in rows}) == 8
    stopped = [r for r in rows if r["status"] == "STOPPED"]
    complete = [r for r in rows if r["status"] == "COMPLETE"]
    assert stopped and complete  # eta 3 at rungs 1, 3 and 9 of 27 steps stops some, not all
    for r in stopped:
        assert r["rung_iteration"] in (1, 3, 9) and r["rung_psnr"] is not None and r["size_mb"] > 0
        assert r["psnr"] is None and r["pareto"] is False
    assert all(r["rung_iteration"] == 9 for r in complete)  # they passed every rung
    for trial_id, row in before.items():  # nothing recorded before the kill was redone or changed
        assert {k: v for k, v in rows_by_id(rows)[trial_id].items() if k in row} == row
    decisions = read_lines(out / "rungs.jsonl")
    assert decisions[: len(decided_before)] == decided_before  # the decisions survived the kill as taken
    stops = {d["trial_id"] for d in decisions if d["decision"] == "stop"}
    assert stops == {r["trial_id"] for r in stopped}  # every stop recorded, none revived
    folder = StudyFolder(out)
    record = StudyRecord.load(folder)
    study = optuna.load_study(study_name="s", storage=folder.optuna_url())
    measured = [t for t in study.trials if "repeat_of" not in t.user_attrs]
    assert sorted(t.user_attrs["tune_trial_id"] for t in measured if t.state.name == "COMPLETE") == sorted(
        r["trial_id"] for r in complete
    )  # Optuna's COMPLETE trials are exactly the full-budget ones
    assert sorted(t.user_attrs["tune_trial_id"] for t in measured if t.state.name == "PRUNED") == sorted(
        r["trial_id"] for r in stopped
    )
    client = MlflowClient(record.tracking_uri(folder))
    for r in stopped:
        run = client.get_run(r["mlflow_run_id"])
        assert run.info.status == "KILLED" and run.data.tags["trial_status"] == "STOPPED"
        assert run.data.metrics["rung_psnr"] == pytest.approx(r["rung_psnr"])
    report = (out / "report.md").read_text()
    assert "Stopped at a rung (never on the front)" in report
    assert json.loads((out / "study.json").read_text())["scheduler"] == "moasha"


def rows_by_id(rows: list[dict]) -> dict[str, dict]:
    return {r["trial_id"]: r for r in rows}


def test_a_kill_right_after_moasha_decides_a_stop_records_it_stopped_on_resume(tmp_path):
    """MOASHA's path is decide, append to rungs.jsonl, stop, record: a driver killed between the append
    and the record leaves the decision alone on disk. The resume records that trial STOPPED from it
    (and says so), never reruns it, and ends with every store agreeing."""
    import signal
    import subprocess
    import sys
    import uuid
    from pathlib import Path

    import optuna

    from study.durable import read_lines
    from tests.test_resilience import driver_env, kill_leftovers

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "s"
    mark = uuid.uuid4().hex
    args = [sys.executable, "-m", "study.cli", "launch", *MOASHA_STUDY, "--out", str(out)]
    run = lambda extra, **env: subprocess.run(
        args + extra, capture_output=True, text=True, cwd=root, timeout=600, start_new_session=True,
        env=driver_env(tmp_path, mark, **env),
    )  # fmt: skip
    try:
        first = run([], NERF_STUDY_KILL_AT="rung_stop")
        assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
        stop = [d for d in read_lines(out / "rungs.jsonl") if d["decision"] == "stop"][-1]
        assert stop["trial_id"] not in {r["trial_id"] for r in read_lines(out / "trials.jsonl")}
        second = run(["--resume"])
        assert second.returncode == 0, second.stderr[-3000:]
    finally:
        kill_leftovers(mark)
    assert f"recording trial {stop['trial_id']} as stopped at rung {stop['iteration']}" in second.stderr
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert len(rows) == 8 and len({config_key(r) for r in rows}) == 8  # none lost, none run twice
    assert rows_by_id(rows)[stop["trial_id"]]["status"] == "STOPPED"
    log = read_lines(out / "trials.jsonl")
    assert sorted(r["trial_id"] for r in log) == sorted(r["trial_id"] for r in rows)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{out / 'optuna.db'}")
    told = {
        t.user_attrs["tune_trial_id"]: t.state.name
        for t in study.trials
        if "tune_trial_id" in t.user_attrs and "repeat_of" not in t.user_attrs and t.state.name != "FAIL"
    }
    assert told == {r["trial_id"]: {"COMPLETE": "COMPLETE", "STOPPED": "PRUNED"}[r["status"]] for r in rows}
    assert {r["trial_id"] for r in rows} == {r["trial_id"] for r in read_lines(out / "mlflow_runs.jsonl")}
