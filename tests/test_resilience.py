"""A study survives its driver: real kills (SIGKILL of the driver's process group) at the moments that
matter, resumed after each; one study per folder; a tracking server that goes down and comes back;
bad folders for `study report` / `study ui`. Real Ray, Optuna, MLflow; tiny budgets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from tests.loopback_cluster import free_port, wait_for
from tests.test_cli import assert_one_line_error

ROOT = Path(__file__).resolve().parents[1]
# what is tested is what a kill leaves behind, not image quality: the smallest budgets that run real trials
TINY = [
    "--space",
    "quick",
    "--dense-iters",
    "30",
    "--retrain-iters",
    "24",
    "--checkpoint-every",
    "8",
    "--rays-per-step",
    "32",
    "--samples",
    "8",
    "--eval-views",
    "1",
    "--seed",
    "0",
    "--allow-weak-dense",  # 30 steps do not learn the scene; what is tested here is not quality
]


def driver_env(tmp_path: Path, mark: str, **extra: str) -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "NERF_STUDY_CACHE": str(tmp_path / "cache"),
        "CHAOS_MARK": mark,
        **extra,
    }


def kill_leftovers(mark: str) -> None:
    """Ray's processes of a killed driver that left its process group: found by the environment they
    inherited from it, and killed, so that no test leaves a Ray cluster behind."""
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("CHAOS_MARK") == mark:
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue


def run_study(args: list[str], env: dict, *, timeout: float = 300) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [sys.executable, "-m", "study.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=timeout,
            start_new_session=True,
        )
    finally:
        kill_leftovers(env["CHAOS_MARK"])


def test_kills_at_every_moment_that_matters_lose_nothing(tmp_path):
    out = tmp_path / "s"
    mark = uuid.uuid4().hex
    launch = ["launch", *TINY, "--trials", "4", "--max-concurrent", "2", "--out", str(out)]
    resume = [*launch, "--resume"]
    moments = [  # (kill point, then what a resume must have made of it)
        ("dense_training", launch),  # the dense model half-trained, nothing in its cache yet
        ("trial_checkpoint", resume),  # a trial mid-retraining, just after a checkpoint
        ("trial_ended", resume),  # a trial ended, its files and row not written
        ("trial_recorded", resume),  # its row written, Optuna and MLflow not told
        ("report", resume),  # results.parquet written, the report not
    ]
    seen: list[str] = []
    for point, args in moments:
        result = run_study(args, driver_env(tmp_path, mark, NERF_STUDY_KILL_AT=point))
        assert result.returncode == -signal.SIGKILL, (point, result.stderr[-3000:])
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        seen.append(result.stderr)
        if point == "trial_checkpoint":
            for state in (out / "tune-0").glob("experiment_state*.json"):  # Tune's own state is not needed
                state.unlink()
        if point == "trial_recorded":
            with open(out / "trials.jsonl", "ab") as log:  # and a record cut in half by the kill
                log.write(b'{"trial_id": "cut-in-ha')
    final = run_study(resume, driver_env(tmp_path, mark))
    assert final.returncode == 0, final.stderr[-4000:]
    assert "Traceback" not in final.stderr
    messages = "".join(seen) + final.stderr
    assert "reruns from there" in messages  # the trial cut after its checkpoint continued from it
    assert "which finished as the driver died" in messages  # the trial that ended unrecorded
    assert "strategy=edge" in "".join(p.name for p in out.glob("tune-*/*"))  # the warm-start points ran
    assert "repaired trials.jsonl" in messages

    assert_stores_agree(out, 4)
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert any((r["resumed_from_iteration"] or 0) > 0 for r in rows), messages[-6000:]


def assert_stores_agree(out: Path, n: int) -> None:
    """Exactly n COMPLETE trials, each configuration once, and the log, the table, MLflow and Optuna
    agreeing trial by trial."""
    import optuna
    from mlflow import MlflowClient

    from study.durable import read_lines
    from study.record.schema import mlflow_metrics
    from study.record.store import StudyFolder
    from study.record.study_record import StudyRecord
    from study.search.space import config_key

    folder = StudyFolder(out)
    lines = read_lines(folder / "trials.jsonl")
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert len(lines) == len(rows) == n and all(r["status"] == "COMPLETE" for r in rows)
    assert len({r["trial_id"] for r in rows}) == n and len({config_key(r) for r in rows}) == n
    record = StudyRecord.load(folder)
    client = MlflowClient(record.tracking_uri(folder))
    children = client.search_runs(
        [record.mlflow.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{record.mlflow.parent_run_id}'",
    )
    assert sorted(c.data.tags["trial_id"] for c in children) == sorted(r["trial_id"] for r in rows)
    study = optuna.load_study(study_name=record.optuna_study, storage=folder.optuna_url())
    complete = [t for t in study.trials if t.state.name == "COMPLETE" and "repeat_of" not in t.user_attrs]
    assert len(complete) == n and not [t for t in study.trials if t.state.name == "RUNNING"]
    assert sorted(t.user_attrs["tune_trial_id"] for t in complete) == sorted(r["trial_id"] for r in rows)
    runs = {c.data.tags["trial_id"]: c for c in children}
    for row in rows:
        assert row["mlflow_run_id"] == runs[row["trial_id"]].info.run_id
        expected = mlflow_metrics(row)
        assert {k: runs[row["trial_id"]].data.metrics[k] for k in expected} == pytest.approx(expected)
    assert (out / "report.md").is_file() and record.status == "finished"


def test_a_kill_while_the_first_points_are_queued_loses_none(tmp_path):
    """The first points (one per strategy) are queued in Optuna one by one: a driver killed after the
    first leaves the rest to the resume, which queues each missing one once and no present one again."""
    import optuna

    from study.search.space import config_key, get_space

    out = tmp_path / "s"
    mark = uuid.uuid4().hex
    launch = ["launch", *TINY, "--scheduler", "moasha", "--trials", "2", "--out", str(out)]
    first = run_study(launch, driver_env(tmp_path, mark, NERF_STUDY_KILL_AT="first_points"))
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]

    def queued() -> list[str]:
        study = optuna.load_study(study_name="s", storage=f"sqlite:///{out / 'optuna.db'}")
        return [
            t.user_attrs.get("config_key") or config_key(t.params or t.system_attrs["fixed_params"])
            for t in study.get_trials(deepcopy=False)
        ]

    seeds = [config_key(p) for p in get_space("quick").seed_points]
    assert queued() == seeds[:1]  # killed with one point queued
    # the resume is killed as soon as a trial checkpoints: by then it has queued what was missing
    again = run_study(
        [*launch, "--resume"], driver_env(tmp_path, mark, NERF_STUDY_KILL_AT="trial_checkpoint")
    )
    assert again.returncode == -signal.SIGKILL, again.stderr[-3000:]
    assert sorted(queued()) == sorted(seeds)  # every first point, each once


def test_a_driver_killed_alone_with_its_trials_still_running_loses_nothing(tmp_path):
    """The driver dies on its own (its Ray processes and the trials it started run on), and the study is
    resumed at once, beside them: exactly N trials, none lost or run twice, and every store agrees."""
    out = tmp_path / "s"
    mark = uuid.uuid4().hex
    launch = ["launch", *TINY, "--trials", "4", "--max-concurrent", "2", "--out", str(out)]
    env = driver_env(tmp_path, mark, NERF_STUDY_KILL_AT="trial_checkpoint:2", NERF_STUDY_KILL_DRIVER_ONLY="1")
    try:
        first = subprocess.run(
            [sys.executable, "-m", "study.cli", *launch],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=300,
            start_new_session=True,
        )
        assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
        orphans = [p for p in psutil.process_iter() if safe_environ(p).get("CHAOS_MARK") == mark]
        assert orphans  # Ray's processes outlived the driver
        second = subprocess.run(
            [sys.executable, "-m", "study.cli", *launch, "--resume"],
            capture_output=True,
            text=True,
            env=driver_env(tmp_path, mark),
            cwd=ROOT,
            timeout=300,
            start_new_session=True,
        )
        assert second.returncode == 0, second.stderr[-3000:]
    finally:
        kill_leftovers(mark)
    assert_stores_agree(out, 4)


def safe_environ(proc: psutil.Process) -> dict:
    try:
        return proc.environ()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return {}


def test_a_second_launch_on_a_busy_folder_is_refused_in_one_line(tmp_path):
    out = tmp_path / "s"
    mark = uuid.uuid4().hex
    env = driver_env(tmp_path, mark)
    args = [sys.executable, "-m", "study.cli", "launch", *TINY, "--trials", "2", "--out", str(out)]
    first = subprocess.Popen(
        args,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        for line in first.stderr:  # the first driver holds the folder once it says what it trains
            if line.startswith("dense model:"):
                break
        second = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
        assert_one_line_error(second, "in use by pid", "one study runs per folder")
        first.communicate(timeout=300)
        assert first.returncode == 0
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        kill_leftovers(mark)
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert len(rows) == 2 and len(list(out.glob("tune-*"))) == 1
    summary = json.loads((out / "study.json").read_text())
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{out.resolve() / 'mlflow.db'}")
    parents = client.search_runs([summary["mlflow"]["experiment_id"]], filter_string="tags.kind = 'study'")
    assert len(parents) == 1
    # the lock dies with its holder: a kill leaves none behind (the chaos test resumes after kills)


def start_mlflow_server(folder: Path, port: int) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{folder / 'store.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def healthy(uri: str, server: subprocess.Popen) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        assert server.poll() is None, "mlflow server exited"
        return False


def stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=30)


def test_a_tracking_server_that_goes_down_stalls_nothing_and_loses_nothing(tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_mlflow_server(tmp_path / "server", port)
    mark = uuid.uuid4().hex
    out = tmp_path / "s"
    # MLflow's own retry budget, shortened through its own settings: the records wait on our side
    env = driver_env(
        tmp_path,
        mark,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="5",
        NERF_STUDY_RECORDS_DEADLINE_S="1",
    )
    driver = None
    try:
        wait_for(lambda: healthy(uri, server), timeout=120, what="the MLflow server to answer /health")
        driver = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "study.cli",
                "launch",
                *TINY,
                "--trials",
                "4",
                "--max-concurrent",
                "1",
                "--out",
                str(out),
                "--tracking-uri",
                uri,
            ],
            stderr=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        lines: list[str] = []
        for line in driver.stderr:
            lines.append(line)
            if line.startswith("[1 done"):
                stop(server)  # down from the first trial on, past the end of the study
                break
        _, tail = driver.communicate(timeout=300)
        lines += tail.splitlines(keepends=True)
        assert driver.returncode == 0, "".join(lines)[-4000:]
        text = "".join(lines)
        assert "does not answer" in text and "waiting on disk" in text  # said once, in one line
        assert text.count("does not answer") == 1 and "Traceback" not in text
        assert sum(line.startswith("[") and " done," in line for line in lines) == 4  # trials went on
        assert "study report" in text  # the study says how the waiting records get written
        rows = pq.read_table(out / "results.parquet").to_pylist()
        assert len(rows) == 4 and sum(r["mlflow_run_id"] is not None for r in rows) < 4

        server = start_mlflow_server(tmp_path / "server", port)  # back, same store
        wait_for(lambda: healthy(uri, server), timeout=120, what="the MLflow server to come back")
        report = subprocess.run(
            [sys.executable, "-m", "study.cli", "report", str(out)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=300,
        )
        assert report.returncode == 0, report.stderr[-3000:]
        rows = pq.read_table(out / "results.parquet").to_pylist()
        assert all(r["mlflow_run_id"] for r in rows)
        from mlflow import MlflowClient

        client = MlflowClient(uri)
        summary = json.loads((out / "study.json").read_text())
        children = client.search_runs(
            [summary["mlflow"]["experiment_id"]],
            filter_string=f"tags.mlflow.parentRunId = '{summary['mlflow']['parent_run_id']}'",
        )
        assert sorted(c.info.run_id for c in children) == sorted(r["mlflow_run_id"] for r in rows)
    finally:
        if driver is not None and driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        if server.poll() is None:
            stop(server)
        kill_leftovers(mark)


def test_report_and_ui_refuse_what_is_not_a_readable_study_in_one_line(tmp_path):
    from tests.test_cli import study

    assert_one_line_error(study("report", str(tmp_path)), "not a study folder")
    assert_one_line_error(study("ui", str(tmp_path / "missing")), "not a study folder")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "study.json").write_text("{half a json")
    assert_one_line_error(study("report", str(broken)), "unreadable")
    (broken / "study.json").write_text(json.dumps({"format": "nerf-prune-study/1", "name": "broken"}))
    assert_one_line_error(study("report", str(broken)), "MLflow store", "missing")
    (broken / "mlflow.db").write_bytes(b"this is not a sqlite database" * 100)
    assert_one_line_error(study("report", str(broken)), "MLflow store", "unreadable")
    assert_one_line_error(study("ui", str(broken)), "MLflow store", "unreadable")
