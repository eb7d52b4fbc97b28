"""A study folder written before `study/` became packages (commit 0b37848, the flat layout) still reports
and resumes.

The fixture is that version's own output: `study launch --space quick --sampling vanilla --trials 3
--max-concurrent 1` at the tiny budget, killed for real (NERF_STUDY_KILL_AT=trial_checkpoint:3) while its
third trial was mid-retraining. Two trials are recorded; the third left a mid-run checkpoint in tune-0.
It is trimmed to what report and resume read: the recorded trials' weights, MLflow's artifact copies and
Tune's pickles are left out. MLflow keeps absolute artifact paths, so the test moves the folder's
sqlite store to where the folder now lies, as if it had been written there.
"""

from __future__ import annotations

import sqlite3
import tarfile
import uuid
from pathlib import Path

import optuna
import pyarrow.parquet as pq
from mlflow import MlflowClient

from study.durable import read_lines
from study.record.store import StudyFolder
from study.record.study_record import DenseRecord, StudyRecord
from study.search.hypervolume import ReferencePoint
from tests.test_resilience import driver_env, run_study

FIXTURE = Path(__file__).parent / "fixtures" / "study_before_packages.tar.gz"
WRITTEN_AT = "/tmp/oldkill/study"
MLFLOW_PATHS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
    ("model_versions", "source"),
)


def unpack(tmp_path: Path) -> Path:
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    folder = tmp_path / "study"
    with sqlite3.connect(folder / "mlflow.db") as db:
        for table, column in MLFLOW_PATHS:
            db.execute(f"UPDATE {table} SET {column} = replace({column}, ?, ?)", (WRITTEN_AT, str(folder)))
    return folder


def test_the_old_study_json_reads_as_a_typed_record(tmp_path):
    folder = StudyFolder(unpack(tmp_path))
    record = StudyRecord.load(folder)
    assert (record.name, record.space, record.sampling, record.scheduler) == (
        "study",
        "quick",
        "vanilla",
        "fifo",
    )
    assert isinstance(record.dense, DenseRecord) and record.dense.psnr is not None
    assert isinstance(record.reference_point, ReferencePoint)
    assert record.mlflow.parent_run_id and record.options["trials"] == 3
    saved = StudyRecord.load(folder).to_dict()
    record.save(folder)
    assert StudyRecord.load(folder).to_dict() == saved  # a round trip changes nothing


def test_an_old_folder_reports_and_resumes(tmp_path):
    folder = unpack(tmp_path)
    before = read_lines(folder / "trials.jsonl")
    assert len(before) == 2
    env = driver_env(tmp_path, uuid.uuid4().hex)

    report = run_study(["report", str(folder)], env)
    assert report.returncode == 0, report.stderr[-3000:]
    rows = pq.read_table(folder / "results.parquet").to_pylist()
    assert sorted(r["trial_id"] for r in rows) == sorted(r["trial_id"] for r in before)

    resume = run_study(["launch", "--space", "quick", "--resume", "--out", str(folder)], env)
    assert resume.returncode == 0, resume.stderr[-3000:]
    assert "Traceback" not in resume.stderr
    after = read_lines(folder / "trials.jsonl")
    assert after[:2] == before and len(after) == 3  # the finished trials kept, the cut one finished
    assert after[2]["status"] == "COMPLETE" and after[2]["strategy"] == "importance-prod"
    assert after[2]["resumed_from_iteration"] == 16  # from the dead driver's checkpoint, not from scratch
    record = StudyRecord.load(StudyFolder(folder))
    assert record.status == "finished"
    study = optuna.load_study(study_name=record.optuna_study, storage=StudyFolder(folder).optuna_url())
    assert sorted(
        t.user_attrs.get("tune_trial_id") for t in study.trials if t.state.name == "COMPLETE"
    ) == sorted(r["trial_id"] for r in after)
    children = MlflowClient(record.tracking_uri(StudyFolder(folder))).search_runs(
        [record.mlflow.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{record.mlflow.parent_run_id}'",
    )
    assert sorted(c.data.tags["trial_id"] for c in children) == sorted(r["trial_id"] for r in after)
