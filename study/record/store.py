"""The study folder: its file names, the trial log and the lock that keeps one driver per folder.

Every file is written through `study.durable` (replaced atomically, or appended whole lines at a time);
whatever a kill leaves, `TrialLog` reads (a half-written last line is dropped with one message, never a
traceback). `study.json` is `record.study_record.StudyRecord`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from common.errors import InputError
from study.durable import append_line, read_lines


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
        return (self / self.SUMMARY).is_file()  # study.json is read and written by record.study_record

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
