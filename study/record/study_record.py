"""`study.json`: what a study is (its name, space, searcher, budget, options) and what it found out at
its start (the scene, the dense model, the reference point, the machine, its MLflow records), as one
typed record. Its keys are read here and nowhere else; the rest of the code reads attributes.

A study written by an older version lacks some keys: they take the defaults below (a study made before
the Optuna study took the study's name called it 'study'). Keys this version does not know are kept,
and written back unchanged.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from common.errors import InputError
from study.durable import write_atomic
from study.record.store import StudyFolder
from study.search.hypervolume import ReferencePoint

STUDY_FORMAT = "nerf-prune-study/1"


@dataclass
class DenseRecord:
    """The dense model every trial prunes, as measured when the study trained (or found) it."""

    psnr: float | None = None
    """Validation-view PSNR in dB."""
    ssim: float | None = None
    test_psnr: float | None = None
    """Test-view PSNR in dB (reported, never chosen by)."""
    test_ssim: float | None = None
    constant_psnr: float | None = None
    """PSNR in dB of the best constant-colour image on the validation views (the floor of learning)."""
    seconds_per_1k_iters: float | None = None
    size_mb: float | None = None
    params: int | None = None
    iterations: int | None = None
    precision: str | None = None
    sampling: str | None = None
    points_per_ray: float | None = None

    @classmethod
    def of(cls, metrics: dict[str, Any]) -> DenseRecord:
        return cls(**{f.name: metrics.get(f.name) for f in fields(cls)})


@dataclass
class MlflowRecord:
    """Where the study records to: a server's URI (None: the folder's own sqlite store)."""

    uri: str | None = None
    experiment: str | None = None
    experiment_id: str | None = None
    parent_run_id: str | None = None


@dataclass
class SearchRecord:
    repeats_avoided: int = 0
    """Repeated proposals answered from the trial log instead of retrained, over all launches."""
    exhausted: bool = False
    """Every configuration the space holds has been measured."""


@dataclass
class StudyRecord:
    name: str
    """The study's name (the folder's, unless --name): MLflow experiment and registered model."""
    space: str | None = None
    """The search space preset."""
    sampler: str | None = None
    scheduler: str = "fifo"
    sampling: str = "vanilla"
    """How rays are sampled: vanilla | occupancy."""
    seed: int | None = None
    optuna_study: str = "study"
    """The Optuna study's name in optuna.db."""
    budget: dict[str, Any] = field(default_factory=dict)
    """The resolved Budget, as a dict."""
    options: dict[str, Any] = field(default_factory=dict)
    """The options the study was launched with (`run.options.saved_options`): no machine paths."""
    status: str = "starting"
    """starting | running | finished | interrupted."""
    created_at: float = field(default_factory=time.time)
    scene: str | None = None
    data: str | None = None
    """The scene's source (a path relative to the project, or 'synthetic')."""
    dense_key: str | None = None
    dense: DenseRecord | None = None
    precision_choice: dict[str, Any] | None = None
    reference_point: ReferencePoint | None = None
    """The hypervolume's reference point, fixed at the start from the dense model."""
    machine: dict[str, Any] = field(default_factory=dict)
    mlflow: MlflowRecord = field(default_factory=MlflowRecord)
    search: SearchRecord = field(default_factory=SearchRecord)
    unknown: dict[str, Any] = field(default_factory=dict)
    """Keys written by another version of this tool: kept and written back as they were."""

    @property
    def cpus_per_trial(self) -> float:
        return self.options.get("cpus_per_trial", 1)

    def tracking_uri(self, folder: StudyFolder) -> str:
        """The MLflow URI the study records to: a server it was launched with, else its own sqlite."""
        return self.mlflow.uri or folder.default_tracking_uri()

    def experiment_name(self) -> str:
        return self.mlflow.experiment or self.name

    # -- the file ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {"format": STUDY_FORMAT, **self.unknown}
        for f in fields(self):
            if f.name == "unknown":
                continue
            value = getattr(self, f.name)
            d[f.name] = value.to_dict() if isinstance(value, ReferencePoint) else value
        return json.loads(json.dumps(d, default=lambda v: asdict(v)))  # nested records to plain JSON

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudyRecord:
        known = {f.name for f in fields(cls)} - {"unknown"}
        values = {k: v for k, v in d.items() if k in known and v is not None}
        if isinstance(values.get("dense"), dict):
            values["dense"] = DenseRecord.of(values["dense"]) if values["dense"] else None
        if isinstance(values.get("reference_point"), dict):
            values["reference_point"] = ReferencePoint.from_dict(values["reference_point"])
        values["mlflow"] = MlflowRecord(**_known(MlflowRecord, values.get("mlflow")))
        values["search"] = SearchRecord(**_known(SearchRecord, values.get("search")))
        values.setdefault("name", "")
        unknown = {k: v for k, v in d.items() if k not in known and k != "format"}
        return cls(**values, unknown=unknown)

    @classmethod
    def load(cls, folder: StudyFolder) -> StudyRecord:
        """The folder's study.json; a missing, unreadable or foreign one is one line naming the folder."""
        path = folder / StudyFolder.SUMMARY
        if not path.is_file():
            raise InputError(f"{str(folder.path)!r} is not a study folder (no {StudyFolder.SUMMARY})")
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{str(path)!r} is unreadable ({exc.__class__.__name__}: {exc})") from None
        if not isinstance(d, dict) or d.get("format") != STUDY_FORMAT:
            raise InputError(f"{str(path)!r} is not a study of this tool (format {STUDY_FORMAT})")
        record = cls.from_dict(d)
        record.name = record.name or folder.name
        return record

    def save(self, folder: StudyFolder) -> None:
        write_atomic(folder / StudyFolder.SUMMARY, json.dumps(self.to_dict(), indent=2) + "\n")


def _known(cls: type, d: dict[str, Any] | None) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in (d or {}).items() if k in names}
