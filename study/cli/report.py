"""`study report` and `study ui`: a study folder's outputs rebuilt, and its MLflow records browsed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

from common.errors import InputError
from study.cli.common import fail, print_outcome
from study.record.results import front
from study.record.store import StudyFolder
from study.record.study_record import StudyRecord
from study.record.tracking import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    open_tracker,
)
from study.run.finish import report_study


def report(study_dir: Path = typer.Argument(..., help="A study folder written by `study launch`.")) -> None:
    """Rebuild results.parquet, the plots and report.md of a study from its trial log, and write any
    MLflow records still waiting for the tracking server."""
    folder = StudyFolder(study_dir)
    try:
        done = report_study(folder, echo=lambda line: typer.echo(line, err=True))
    except InputError as exc:
        fail(str(exc))
    print_outcome(
        folder,
        done.rows,
        front(done.rows),
        wall_seconds=None,
        hypervolume=done.hypervolume,
        repeats_avoided=done.repeats_avoided,
        waiting=done.waiting,
    )


def experiment_page(tracker) -> str:
    """The study's page in the MLflow UI. MLflow 3.17's UI keeps one workflow (GenAI or model training)
    for all experiments unless the URL names one; a study marked as model development (the experiment
    tag mlflow.experimentKind) opens on its training runs, anything else on the experiment's default."""

    experiment = tracker.client.get_experiment(tracker.experiment_id)
    if experiment.tags.get(EXPERIMENT_KIND_TAG) == EXPERIMENT_KIND:
        return f"#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"
    return f"#/experiments/{experiment.experiment_id}"


def ui(
    study_dir: Path = typer.Argument(..., help="A study folder written by `study launch`."),
    port: int = typer.Option(5000, help="Port of the MLflow UI."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; 127.0.0.1 keeps it local."),
) -> None:
    """Open the MLflow UI on a study: its tracking server if it recorded to one, else a local UI on its
    store (127.0.0.1 unless told otherwise). Prints the URL of the study's runs page."""

    folder = StudyFolder(study_dir)
    try:
        record = StudyRecord.load(folder)
        tracker = open_tracker(folder, record)
    except InputError as exc:
        fail(str(exc))
    uri = record.tracking_uri(folder)
    page = experiment_page(tracker)
    if uri.startswith(("http://", "https://")):
        typer.echo(f"{uri.rstrip('/')}/{page}")  # a server study: its server already serves the UI
        return
    typer.echo(f"http://{host}:{port}/{page}")
    typer.echo(f"MLflow UI for {folder.path} (Ctrl-C to stop)", err=True)
    raise typer.Exit(
        subprocess.call(
            [
                sys.executable,
                "-m",
                "mlflow",
                "ui",
                "--backend-store-uri",
                uri,
                "--host",
                host,
                "--port",
                str(port),
                "--workers",
                "1",
            ]
        )
    )
