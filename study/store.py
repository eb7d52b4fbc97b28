"""The study folder: its file names, `study.json`, the trial log, the lock that keeps one driver per
folder, and the writes that a kill at any moment leaves consistent.

Every file is either replaced atomically (written under a temporary name, then renamed) or appended
whole lines at a time; whatever a kill leaves, `TrialLog` reads (a half-written last line is dropped
with one message, never a traceback).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import InputError

STUDY_FORMAT = "nerf-prune-study/1"


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Replace `path` with `data` so that a reader (or a later run after a kill) sees the old file or the
    new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def append_line(path: Path, record: dict) -> None:
    """One whole JSON line in one write(2) on an O_APPEND descriptor: a kill lands before or after it."""
    data = (json.dumps(record, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(path: Path, *, repair: bool = False, echo: Callable[[str], None] | None = None) -> list[dict]:
    """The complete JSON lines of an append-only log; an incomplete last line is left out. With `repair`
    (the log's one writer, before it appends: a driver at its start) a last line cut by a kill is cut off
    the file, so that the next append starts a fresh line, and reported in one message. A reader beside
    a live writer must not repair: it may be looking at a line half-way through its write."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    records: list[dict] = []
    good = 0
    for raw in data.splitlines(keepends=True):
        try:
            if not raw.endswith(b"\n"):
                raise ValueError("no line end")
            if raw.strip():
                records.append(json.loads(raw))
        except ValueError:
            break
        good += len(raw)
    if good < len(data) and repair:
        with open(path, "r+b") as f:
            f.truncate(good)
        if echo is not None:
            echo(f"repaired {path.name}: dropped {len(data) - good} bytes of a record cut off by a kill")
    return records


@dataclass(frozen=True)
class StudyFolder:
    """One study, one folder. The names of its files live here and nowhere else."""

    path: Path

    SUMMARY = "study.json"
    TRIAL_LOG = "trials.jsonl"
    """One line per ended trial, in the order they ended: the study's own record, from which the
    table, the report and the MLflow records are (re)built."""
    RUNGS = "rungs.jsonl"
    """The early-stopping scheduler's decisions, one line per trial and rung."""
    MLFLOW_RUNS = "mlflow_runs.jsonl"
    """trial id -> MLflow run id, one line per trial once its MLflow record is complete."""
    TRIAL_FILES = "trials"
    """trials/<trial_id>/: each ended trial's model.pt, render.png, metrics.json and curve.json."""
    OPTUNA_DB = "optuna.db"
    MLFLOW_DB = "mlflow.db"
    ARTIFACTS = "artifacts"
    RESULTS = "results.parquet"
    REPORT = "report.md"
    PARETO_PLOT = "pareto.png"
    HYPERVOLUME_PLOT = "hypervolume.png"
    LOCK = ".lock"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path).expanduser().resolve())

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def name(self) -> str:
        return self.path.name

    def exists(self) -> bool:
        return (self / self.SUMMARY).is_file()

    def trial_files(self, trial_id: str) -> Path:
        return self / self.TRIAL_FILES / trial_id

    def repair_logs(self, echo: Callable[[str], None] | None = None) -> None:
        """Cut off any record a kill left half-written at the end of an append-only log, before this
        driver appends to them (under the folder's lock, before any thread reads them)."""
        for name in (self.TRIAL_LOG, self.RUNGS, self.MLFLOW_RUNS):
            read_lines(self / name, repair=True, echo=echo)

    def optuna_url(self) -> str:
        return f"sqlite:///{self / self.OPTUNA_DB}"

    def default_tracking_uri(self) -> str:
        return f"sqlite:///{self / self.MLFLOW_DB}"

    def summary(self) -> dict[str, Any]:
        """study.json; a missing, unreadable or foreign one is one line naming the folder."""
        path = self / self.SUMMARY
        if not path.is_file():
            raise InputError(f"{str(self.path)!r} is not a study folder (no {self.SUMMARY})")
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{str(path)!r} is unreadable ({exc.__class__.__name__}: {exc})") from None
        if not isinstance(summary, dict) or summary.get("format") != STUDY_FORMAT:
            raise InputError(f"{str(path)!r} is not a study of this tool (format {STUDY_FORMAT})")
        return summary

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_atomic(self / self.SUMMARY, json.dumps(summary, indent=2, default=str) + "\n")

    def tracking_uri(self, summary: dict[str, Any] | None = None) -> str:
        """The MLflow URI the study records to: a server it was launched with, else its own sqlite."""
        summary = summary if summary is not None else self.summary()
        return (summary.get("mlflow") or {}).get("uri") or self.default_tracking_uri()

    def study_name(self, summary: dict[str, Any] | None = None) -> str:
        summary = summary if summary is not None else self.summary()
        return summary.get("name") or self.name

    def optuna_study_name(self, summary: dict[str, Any] | None = None) -> str:
        """Studies made before the Optuna study took the study's name called it 'study'."""
        summary = summary if summary is not None else self.summary()
        return summary.get("optuna_study") or "study"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder for the life of this driver: a second `study launch` on it is refused. The
        kernel drops the lock when the process ends however it ends, so a killed driver leaves no
        stale lock; the file only says who held it last."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self / self.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
                raise InputError(
                    f"{str(self.path)!r} is in use by {holder}; one study runs per folder "
                    f"(wait for it, or choose another --out)"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock


class TrialLog:
    """trials.jsonl: the ended trials, each once, in the order they ended."""

    def __init__(self, folder: StudyFolder) -> None:
        self.path = folder / StudyFolder.TRIAL_LOG
        self._rows: dict[str, dict] = {}
        for row in read_lines(self.path):  # a half-written last line is left out (StudyFolder.repair_logs)
            self._rows.setdefault(row["trial_id"], row)  # a trial is recorded once; the first line wins

    def rows(self) -> list[dict]:
        return list(self._rows.values())

    def __contains__(self, trial_id: str) -> bool:
        return trial_id in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def append(self, row: dict) -> bool:
        """Record an ended trial; False (and nothing written) when it is already recorded."""
        if row["trial_id"] in self._rows:
            return False
        append_line(self.path, row)
        self._rows[row["trial_id"]] = row
        return True


def read_trials(folder: StudyFolder) -> list[dict]:
    return TrialLog(folder).rows()
