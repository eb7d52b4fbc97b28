"""The driver's record of ended trials, in the order that keeps a kill at any moment harmless:

1. the trial's final files are copied into `trials/<trial_id>/` (a temporary folder, then a rename);
2. its row is appended to `trials.jsonl` (one whole line): from here on the trial is recorded;
3. the searcher tells Optuna (COMPLETE, PRUNED or FAIL);
4. the MLflow record is written by `RecordSync`, from the log, in the background.

A kill before 2 leaves the trial's verified final checkpoint in Tune's storage, which a resumed study
records (`study.run.resume`); a kill after 2 leaves an Optuna trial RUNNING, which a resumed study tells
from the log; a kill in 4 is redone by trial id.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from ray import tune

from study import chaos
from study.record.results import fmt, front, hypervolume_after
from study.record.schema import STATUSES, Status, build_row
from study.record.store import StudyFolder, TrialLog
from study.record.sync import RecordSync
from study.record.tracking import trial_run_name
from study.run.trial import TRIAL_FILES
from study.search.hypervolume import ReferencePoint
from study.search.searcher import StudySearcher


class TrialRecorder:
    """Records each ended trial once (see the module doc) and prints one progress line for it."""

    def __init__(
        self,
        folder: StudyFolder,
        log: TrialLog,
        *,
        seed: int,
        searcher: StudySearcher | None,
        sync: RecordSync | None,
        reference: ReferencePoint | None,
        echo: Callable[[str], None],
    ) -> None:
        self.folder, self.log, self.seed = folder, log, seed
        self.searcher, self.sync, self.reference, self.echo = searcher, sync, reference, echo

    def record(
        self,
        *,
        trial_id: str,
        status: Status,
        config: dict,
        result: dict,
        files: Path | None,
        error: str | None = None,
        running: int = 0,
    ) -> bool:
        """False when the trial was already recorded (nothing is done twice)."""
        if trial_id in self.log:
            return False
        if files is not None:
            keep_files(files, self.folder.trial_files(trial_id))
        row = build_row(trial_id=trial_id, status=status, config=config, result=result, seed=self.seed)
        row["error"] = error
        self.log.append(row)
        chaos.maybe_die("trial_recorded")
        if self.searcher is not None:
            self.searcher.tell(trial_id, row)
        if self.sync is not None:
            self.sync.notify()
        self.progress(row, running)
        return True

    def progress(self, row: dict, running: int) -> None:
        rows = self.log.rows()
        counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
        summary = ", ".join(
            f"{trial_run_name(r)} {r['psnr']:.2f}dB/{r['train_time']:.0f}s/{r['size_mb']:.2f}MB"
            for r in front(rows)[:4]
        )
        if row["status"] == "COMPLETE":  # the validation PSNR chooses; the test PSNR is only shown
            what = f"val {row['psnr']:.2f} dB (test {fmt(row.get('test_psnr'), '.2f')} dB)"
        elif row["status"] == "STOPPED":
            what = f"STOPPED at rung {row.get('rung_iteration')} ({(row.get('rung_psnr') or 0):.2f} dB there)"
        else:
            what = f"FAILED: {(row.get('error') or '')[:120]}"
        hv = ""
        if self.reference is not None:
            hv = f" | hypervolume {hypervolume_after(rows, self.reference)[-1]:.3f}"
        extra = f", {counts['STOPPED']} stopped" if counts["STOPPED"] else ""
        self.echo(
            f"[{counts['COMPLETE']} done, {running} running, {counts['FAILED']} failed{extra}] trial "
            f"{row['trial_id']} {trial_run_name(row)}: {what}{hv} | front: {summary}"
        )


def keep_files(source: Path, target: Path) -> None:
    """Copy a trial's final files into the study folder in one rename (a kill leaves all or none)."""
    if target.is_dir():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in (*TRIAL_FILES, "manifest.json"):
        if (source / name).is_file():
            shutil.copy2(source / name, tmp / name)
    os.replace(tmp, target)


def running_trials(trials, ended) -> int:
    return sum(t.status == "RUNNING" and t is not ended for t in trials)


class TuneRecorder(tune.Callback):
    """The Tune callback on the driver that hands every ended trial to the recorder."""

    def __init__(self, recorder: TrialRecorder) -> None:
        self.recorder: TrialRecorder | None = recorder

    def __getstate__(self) -> dict:
        # Tune pickles its run config for its own restore, which studies do not use (`study.run.resume`):
        # the pickled copy is inert rather than a copy of the driver's threads and stores
        return {"recorder": None}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("partial") == 1 and trial.checkpoint is not None:
            chaos.maybe_die("trial_checkpoint")

    def on_trial_complete(self, iteration, trials, trial, **info):
        if self.recorder is None:
            return
        result = trial.last_result or {}
        final = result.get("partial") == 0
        status: Status = "COMPLETE" if final else "STOPPED"
        chaos.maybe_die("trial_ended")
        if trial.checkpoint is not None and final:
            with trial.checkpoint.as_directory() as folder:  # downloads from remote storage
                self.recorder.record(
                    trial_id=trial.trial_id,
                    status=status,
                    config=trial.config,
                    result=result,
                    files=Path(folder),
                    running=running_trials(trials, trial),
                )
        else:
            self.recorder.record(
                trial_id=trial.trial_id,
                status=status,
                config=trial.config,
                result=result,
                files=None,
                running=running_trials(trials, trial),
            )

    def on_trial_error(self, iteration, trials, trial, **info):
        if self.recorder is None:
            return
        error = None
        path = getattr(trial, "error_file", None)
        if path and os.path.isfile(path):
            lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
            error = lines[-1] if lines else None
        self.recorder.record(
            trial_id=trial.trial_id,
            status="FAILED",
            config=trial.config,
            result=trial.last_result or {},
            files=None,
            error=error or "trial raised an exception",
            running=running_trials(trials, trial),
        )
