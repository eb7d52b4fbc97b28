"""MLflow records: one parent run per study, one child run per trial, all written from the driver.

One writer means no sqlite races between trials, and cluster workers never need to reach the store.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from common.errors import InputError


def default_tracking_uri(study_dir: Path) -> str:
    return f"sqlite:///{(study_dir / 'mlflow.db').resolve()}"


def check_reachable(uri: str, *, timeout_s: float = 5.0) -> None:
    """Fail before any trial starts when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
            if response.status != 200:
                raise OSError(f"status {response.status}")
    except OSError as exc:
        raise InputError(f"MLflow tracking server {uri!r} is unreachable ({exc}); start it or fix "
                             f"--tracking-uri") from None


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


class Tracker:
    """Owns the study's MLflow experiment and parent run; resumable through the parent run id."""

    def __init__(self, uri: str, experiment: str, *, parent_run_id: str | None = None,
                 study_params: dict | None = None, artifact_location: str | None = None) -> None:
        """artifact_location: where a new experiment keeps artifacts (None: the store's default, which
        for a local sqlite store is ./mlruns of the current directory, so pass the study folder)."""
        import mlflow
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(uri)
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(
            experiment, artifact_location=artifact_location)
        if parent_run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=experiment,
                                         tags={"study": experiment, "kind": "study"})
            parent_run_id = run.info.run_id
            if study_params:
                self.log_params(parent_run_id, study_params)
        else:
            self.client.update_run(parent_run_id, status="RUNNING")
        self.parent_run_id = parent_run_id

    def log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        flat = [Param(k, json.dumps(v) if isinstance(v, (dict, list)) else str(v))
                for k, v in params.items()]
        for i in range(0, len(flat), 100):
            self.client.log_batch(run_id, params=flat[i:i + 100])

    def log_trial(self, *, trial_id: str, config: dict, metrics: dict, status: str,
                  artifacts: Path | None, error: str | None = None) -> str:
        """A child run under the study's parent run; returns its run id."""
        from mlflow.entities import Metric

        run = self.client.create_run(self.experiment_id, run_name=trial_run_name(config),
                                     tags={"mlflow.parentRunId": self.parent_run_id, "trial_id": trial_id,
                                           "strategy": config["strategy"], "kind": "trial"})
        run_id = run.info.run_id
        self.log_params(run_id, {k: v for k, v in config.items() if v is not None} | {"trial_id": trial_id})
        now = int(time.time() * 1000)
        values = [Metric(k, float(v), now, 0) for k, v in metrics.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if artifacts is not None and (artifacts / "curve.json").is_file():
            for point in json.loads((artifacts / "curve.json").read_text()):
                values.append(Metric("retrain_loss", point["loss"], now, point["iteration"]))
                values.append(Metric("retrain_psnr", point["psnr"], now, point["iteration"]))
        for i in range(0, len(values), 500):
            self.client.log_batch(run_id, metrics=values[i:i + 500])
        if error:
            self.client.set_tag(run_id, "error", error[:4000])
        if artifacts is not None:
            for name in ("model.pt", "render.png", "metrics.json"):
                if (artifacts / name).is_file():
                    self.client.log_artifact(run_id, str(artifacts / name))
        self.client.set_terminated(run_id, status=status)
        return run_id

    def log_study_artifacts(self, paths: list[Path], metrics: dict | None = None) -> None:
        for path in paths:
            if path.is_file():
                self.client.log_artifact(self.parent_run_id, str(path))
        if metrics:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self.client.log_batch(self.parent_run_id, metrics=[Metric(k, float(v), now, 0)
                                                              for k, v in metrics.items()])

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_run_id, status=status)
