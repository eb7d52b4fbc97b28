"""Keeps MLflow in step with the trial log from a background thread (`RecordSync`): a record the server
cannot take now waits on disk and is retried; `mlflow_runs.jsonl` says which records are complete."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from study.durable import append_line, read_lines
from study.record.store import StudyFolder, TrialLog
from study.record.tracking import Tracker, transient


def synced_runs(folder: StudyFolder) -> dict[str, str]:
    """trial id -> MLflow run id of every trial whose record is complete."""
    return {r["trial_id"]: r["run_id"] for r in read_lines(folder / StudyFolder.MLFLOW_RUNS)}


class RecordSync:
    """Keeps MLflow in step with the trial log, from a background thread, in the log's order.

    While the tracking server does not answer, records wait (on disk: they are the log's lines that
    `mlflow_runs.jsonl` lacks) and are retried with a growing pause; the study says so once, and once
    more when they are written. Only this object talks to MLflow while it runs.
    """

    def __init__(
        self,
        folder: StudyFolder,
        tracker: Tracker,
        *,
        echo: Callable[[str], None] = print,
        retry_s: tuple[float, float] = (1.0, 30.0),
    ) -> None:
        self.folder, self.tracker, self.echo = folder, tracker, echo
        self.retry_s = retry_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one sync pass at a time (the thread, or the final drain)
        self.waiting_since: float | None = None
        self.last_error: str | None = None

    def pending(self) -> list[dict]:
        done = synced_runs(self.folder)
        return [row for row in TrialLog(self.folder).rows() if row["trial_id"] not in done]

    def sync_once(self) -> int:
        """Write every waiting record, in order; returns how many still wait (0: all written)."""
        with self._lock:
            waiting = self.pending()
            for i, row in enumerate(waiting):
                files = self.folder.trial_files(row["trial_id"])
                try:
                    run_id = self.tracker.log_trial(row, files if files.is_dir() else None)
                except Exception as exc:  # the server is down or failing: keep the record for later
                    self._failed(len(waiting) - i, exc)
                    return len(waiting) - i
                append_line(
                    self.folder / StudyFolder.MLFLOW_RUNS, {"trial_id": row["trial_id"], "run_id": run_id}
                )
            if self.waiting_since is not None:
                self.echo(f"MLflow is answering again: the waiting records are written ({self.tracker.uri})")
                self.waiting_since = None
            return 0

    def _failed(self, waiting: int, exc: Exception) -> None:
        error = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        if self.waiting_since is None or error != self.last_error:
            self.waiting_since = self.waiting_since or time.monotonic()
            if transient(exc):
                self.echo(
                    f"MLflow at {self.tracker.uri} does not answer ({error}): {waiting} record(s) waiting "
                    f"on disk; trials go on, and the records are written when it answers"
                )
            else:
                self.echo(
                    f"MLflow at {self.tracker.uri} refused a record ({error}): {waiting} record(s) waiting "
                    f"on disk; trials go on, and it is retried"
                )
        self.last_error = error

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mlflow-records", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        pause = self.retry_s[0]
        while not self._stop.is_set():
            self._wake.clear()
            if self.sync_once() == 0:
                pause = self.retry_s[0]
                self._wake.wait()
            else:
                self._wake.wait(pause)
                pause = min(2 * pause, self.retry_s[1])

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def drain(self, *, deadline_s: float) -> int:
        """Retry the waiting records until none waits or the deadline passes; returns how many wait."""
        end = time.monotonic() + deadline_s
        pause = self.retry_s[0]
        while (waiting := self.sync_once()) and time.monotonic() + pause < end:
            time.sleep(pause)  # the server's outage is what we wait on: nothing to be notified by
            pause = min(2 * pause, self.retry_s[1])
        return waiting
