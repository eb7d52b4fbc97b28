"""MLflow records: one experiment and parent run per study, one child run per trial.

The trial log (`trials.jsonl`) is the study's own record; MLflow is a view of it that the driver keeps
in step from a background thread (`record.sync.RecordSync`), so that a slow or absent tracking server never holds up
the trials: a record it cannot write stays waiting on disk (a trial in the log without a line in
`mlflow_runs.jsonl`) and is written when the server answers, at the latest by `study report`.
Recording is idempotent by trial id, so a record cut off by a kill is redone, never duplicated.

`open_tracker` is the one way a study's Tracker is opened: by `study launch` (which creates the
experiment and parent run, or reopens them on resume) and by `study report`, `ui` and `paper` (which
only read the store the study recorded).
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import requests
import torch

from common.errors import InputError
from study.record.mlflow_model import INPUT_COLUMNS, OUTPUT_COLUMNS
from study.record.schema import mlflow_metrics
from study.record.store import StudyFolder
from study.record.study_record import StudyRecord

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""MLflow 3's UI opens an experiment with this tag on its training runs, not on the GenAI overview."""
RECORD_TAG = "record"
"""Set to 'complete' as the last step of a trial's record: a run without it was cut off and is redone."""
CONFIG_PARAMS = ("strategy", "width", "beta", "phi", "scaling", "threshold", "replicate", "seed")
MODEL_TAG = "model_uri"
"""The trial run's tag holding the URI of its logged model (what the registry's versions point at)."""
MLFLOW_STATUS = {"COMPLETE": "FINISHED", "STOPPED": "KILLED", "FAILED": "FAILED"}


def check_reachable(uri: str, *, timeout_s: float = 5.0) -> None:
    """Fail before any trial starts when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
            if response.status != 200:
                raise OSError(f"status {response.status}")
    except OSError as exc:
        raise InputError(
            f"MLflow tracking server {uri!r} is unreachable ({exc}); start it or fix --tracking-uri"
        ) from None


def trial_run_name(config: dict) -> str:
    """e.g. coreset-w128-b3, edge-t0.05, importance-prod-w64-t0.02 (hybrid)."""
    parts = [config["strategy"]]
    if config.get("width"):
        parts.append(f"w{config['width']}")
    if config.get("beta") is not None:
        parts.append(f"b{config['beta']:.3g}")
    if config.get("phi") not in (None, "relu"):
        parts.append(config["phi"])
    if config.get("scaling") == "none":
        parts.append("noscale")
    if config.get("threshold"):
        parts.append(f"t{config['threshold']:.3g}")
    if config.get("replicate"):
        parts.append(f"r{config['replicate']}")
    return "-".join(parts)


def transient(exc: BaseException) -> bool:
    """An error that waiting can cure: the server unreachable or overloaded, a locked sqlite store."""

    if isinstance(exc, requests.exceptions.RequestException | ConnectionError | TimeoutError):
        return True
    text = str(exc)
    return any(
        s in text
        for s in (
            "Max retries exceeded",
            "Connection refused",
            "database is locked",
            "TEMPORARILY_UNAVAILABLE",
            "503",
            "502",
            "504",
        )
    )


class Tracker:
    """The study's experiment and parent run; resumable through the parent run id."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        *,
        parent_run_id: str | None = None,
        study_params: dict | None = None,
        artifact_location: str | None = None,
        reopen: bool = True,
    ) -> None:
        """artifact_location: where a new experiment keeps artifacts (None: the store's default, which
        for a local sqlite store is ./mlruns of the current directory, so pass the study folder)."""
        import mlflow
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(uri)
        self.uri = uri
        self.experiment_name = experiment
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = (
            found.experiment_id
            if found
            else self.client.create_experiment(experiment, artifact_location=artifact_location)
        )
        if reopen:  # a launch marks its experiment; `study report` and `study ui` only read
            self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        if parent_run_id is None:
            run = self.client.create_run(
                self.experiment_id, run_name=experiment, tags={"study": experiment, "kind": "study"}
            )
            parent_run_id = run.info.run_id
            if study_params:
                self.log_params(parent_run_id, study_params)
        elif reopen:  # a resumed study runs again; `study report` only writes
            self.client.update_run(parent_run_id, status="RUNNING")
        self.parent_run_id = parent_run_id

    def log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        flat = [
            Param(k, json.dumps(v) if isinstance(v, dict | list) else str(v))
            for k, v in params.items()
            if v is not None
        ]
        for i in range(0, len(flat), 100):
            self.client.log_batch(run_id, params=flat[i : i + 100])

    def trial_runs(self, trial_id: str) -> list:
        return list(
            self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.trial_id = '{trial_id}' and tags.mlflow.parentRunId = "
                f"'{self.parent_run_id}'",
            )
        )

    def log_trial(self, row: dict, files: Path | None) -> str:
        """The trial's child run (params, metrics, retraining curve, model, render); returns its id.
        A complete record from before a kill is kept; a partial one is deleted and written again."""
        from mlflow.entities import Metric

        for run in self.trial_runs(row["trial_id"]):
            if run.data.tags.get(RECORD_TAG) == "complete":
                return run.info.run_id
            self.client.delete_run(run.info.run_id)
        run = self.client.create_run(
            self.experiment_id,
            run_name=trial_run_name(row),
            tags={
                "mlflow.parentRunId": self.parent_run_id,
                "trial_id": row["trial_id"],
                "strategy": row["strategy"],
                "kind": "trial",
                "trial_status": row["status"],
            },
        )
        run_id = run.info.run_id
        self.log_params(run_id, {k: row.get(k) for k in CONFIG_PARAMS} | {"trial_id": row["trial_id"]})
        now = int(time.time() * 1000)
        values = [Metric(k, v, now, 0) for k, v in mlflow_metrics(row).items()]
        if row.get("rung_iteration") is not None and row["status"] == "STOPPED":
            values += [
                Metric(f"rung_{k}", float(row[f"rung_{k}"]), now, int(row["rung_iteration"]))
                for k in ("psnr", "train_time")
                if row.get(f"rung_{k}") is not None
            ]
        if files is not None and (files / "curve.json").is_file():
            for point in json.loads((files / "curve.json").read_text()):
                values.append(Metric("retrain_loss", point["loss"], now, point["iteration"]))
                values.append(Metric("retrain_psnr", point["psnr"], now, point["iteration"]))
        for i in range(0, len(values), 500):
            self.client.log_batch(run_id, metrics=values[i : i + 500])
        if row.get("error"):
            self.client.set_tag(run_id, "error", row["error"][:4000])
        if files is not None:
            for name in ("model.pt", "render.png", "metrics.json"):
                if (files / name).is_file():
                    self.client.log_artifact(run_id, str(files / name))
            if row["status"] == "COMPLETE" and (files / "model.pt").is_file():
                try:
                    self.client.set_tag(run_id, MODEL_TAG, self.log_model(run_id, row, files))
                except Exception as exc:
                    if transient(exc):
                        raise
                    # a model MLflow refuses must not hold back the trial's record: say so on the run
                    self.client.set_tag(run_id, "model_error", f"{exc.__class__.__name__}: {exc}"[:4000])
        self.client.set_tag(run_id, RECORD_TAG, "complete")
        self.client.set_terminated(run_id, status=MLFLOW_STATUS[row["status"]])
        return run_id

    def log_model(self, run_id: str, row: dict, files: Path) -> str:
        """The pruned network as a loadable MLflow model (`study.record.mlflow_model`); returns its URI."""
        import mlflow
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema

        render = json.loads((files / "render_config.json").read_text())
        example = pd.DataFrame(
            json.loads((files / "example_rays.json").read_text()), columns=list(INPUT_COLUMNS)
        )
        signature = ModelSignature(
            inputs=Schema([ColSpec("double", c) for c in INPUT_COLUMNS]),
            outputs=Schema([ColSpec("float", c) for c in OUTPUT_COLUMNS]),
        )
        package_root = Path(__file__).resolve().parents[2]
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(Path(__file__).with_name("mlflow_model.py")),
                artifacts={"checkpoint": str(files / "model.pt")},
                model_config=render,
                signature=signature,
                input_example=example,
                code_paths=[str(package_root / "nerf"), str(package_root / "common")],
                # pinned: inferring them imports and scans the environment for seconds per model
                pip_requirements=[
                    f"torch=={torch.__version__.split('+')[0]}",
                    f"numpy=={np.__version__}",
                    f"pandas=={pd.__version__}",
                    f"mlflow=={mlflow.__version__}",
                ],
                tags={"trial_id": row["trial_id"], "strategy": row["strategy"]},
            )
        return info.model_uri

    def register_front(self, name: str, front_rows: list[dict], runs: dict[str, str]) -> dict[str, str]:
        """The front's models as versions of one registered model with aliases best-psnr (validation
        PSNR; the test PSNR is a tag, never a pick), smallest and fastest; a version per trial, never two
        (a resumed study moves the aliases). Returns alias -> version."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(
                name,
                tags={"study": name},
                description="Pruned NeRFs on the Pareto front (PSNR up, training time down, size down) of "
                f"the study {name}",
            )
        versions = {v.run_id: v for v in self.client.search_model_versions(f"name = '{name}'")}
        by_trial = {}
        for row in front_rows:
            run_id = runs.get(row["trial_id"])
            if run_id is None:
                continue
            if run_id not in versions:
                source = self.client.get_run(run_id).data.tags.get(MODEL_TAG)
                if source is None:
                    continue
                versions[run_id] = self.client.create_model_version(
                    name,
                    source=source,
                    run_id=run_id,
                    tags={
                        "trial_id": row["trial_id"],
                        "strategy": row["strategy"],
                        "width": str(row.get("width")),
                        "psnr": f"{row['psnr']:.4f}",  # validation: what the aliases pick by
                        "test_psnr": "None" if row.get("test_psnr") is None else f"{row['test_psnr']:.4f}",
                        "train_time": f"{row['train_time']:.4f}",
                        "size_mb": f"{row['size_mb']:.6f}",
                    },
                )
            by_trial[row["trial_id"]] = versions[run_id].version
        on_front = {runs.get(r["trial_id"]) for r in front_rows}
        for run_id, version in versions.items():
            self.client.set_model_version_tag(
                name, version.version, "on_front", str(run_id in on_front).lower()
            )
        aliases = {}
        ranked = [r for r in front_rows if r["trial_id"] in by_trial]
        for alias, pick in (
            ("best-psnr", lambda r: -r["psnr"]),
            ("smallest", lambda r: r["size_mb"]),
            ("fastest", lambda r: r["train_time"]),
        ):
            if ranked:
                aliases[alias] = str(by_trial[min(ranked, key=pick)["trial_id"]])
                self.client.set_registered_model_alias(name, alias, aliases[alias])
        return aliases

    def log_study_outputs(self, paths: list[Path], metrics: dict[str, float], steps: list[float]) -> None:
        """The parent run's table, plots and report; counts; the hypervolume after each trial."""
        from mlflow.entities import Metric

        for path in paths:
            if path.is_file():
                self.client.log_artifact(self.parent_run_id, str(path))
        now = int(time.time() * 1000)
        values = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        values += [Metric("hypervolume", float(v), now, i + 1) for i, v in enumerate(steps)]
        for i in range(0, len(values), 500):
            self.client.log_batch(self.parent_run_id, metrics=values[i : i + 500])

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_run_id, status=status)


def open_tracker(
    folder: StudyFolder,
    record: StudyRecord,
    *,
    tracking_uri: str | None = None,
    study_params: dict | None = None,
) -> Tracker:
    """The study's Tracker. With `study_params` (a launch): on `tracking_uri` or the recorded store, its
    experiment and parent run created on the first launch and reopened on a resume. Without (report,
    ui, paper): the store the study recorded to, which must exist and answer (else one line)."""
    if study_params is not None:
        return Tracker(
            tracking_uri or record.tracking_uri(folder),
            record.experiment_name(),
            parent_run_id=record.mlflow.parent_run_id,
            artifact_location=None if tracking_uri else (folder / StudyFolder.ARTIFACTS).as_uri(),
            study_params=study_params,
        )
    uri = record.tracking_uri(folder)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise InputError(f"the study's MLflow store {uri!r} is missing")
    check_reachable(uri)
    try:
        return Tracker(
            uri,
            record.experiment_name(),
            parent_run_id=record.mlflow.parent_run_id,
            artifact_location=None if record.mlflow.uri else (folder / StudyFolder.ARTIFACTS).as_uri(),
            reopen=False,
        )
    except Exception as exc:  # a corrupt sqlite file, a foreign database
        raise InputError(
            f"the study's MLflow store {uri!r} is unreadable ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0][:160] if str(exc) else ''})"
        ) from None
