"""Bring a study's stores back in line after its driver died, whatever the moment.

What a kill can leave, and what `reconcile` does with it (each fix is one line on the console):
- a trial that finished but was not recorded: its final checkpoint in Tune's storage passes its
  manifest, so it is recorded now, as if the driver had lived;
- a trial the scheduler stopped but that was not recorded: its decision is in `rungs.jsonl`, so it is
  recorded STOPPED (never revived);
- a trial cut mid-retraining: its configuration is queued again ahead of those already waiting, then its
  Optuna trial is marked FAIL, and its last mid-run checkpoint becomes a resume point: the rerun comes
  next and continues from there, once;
- an Optuna trial left RUNNING whose trial is recorded: it is told the recorded outcome;
- a half-written line at the end of a log: cut off (`durable.read_lines`); a final checkpoint cut short
  while it was written or copied: ignored (its trial reruns); Tune's own experiment state is not read.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pyarrow.fs
import torch

from pruning.checkpoint import RetrainCheckpoint
from study.durable import read_lines
from study.record.store import StudyFolder, TrialLog
from study.run.recorder import TrialRecorder
from study.run.trial import STATE_FILE, verified_trial_files
from study.search.searcher import outcome_of
from study.search.space import config_key


@dataclass
class ResumePlan:
    resume_points: dict[str, str] = field(default_factory=dict)
    """config key -> the last mid-run checkpoint (path or URI) of a trial of it that was cut off."""
    recorded: int = 0
    """Trials recorded now from what the dead driver left."""
    rerun: int = 0
    """Cut-off trials enqueued to run again."""


def storage_of(root: str) -> tuple[pyarrow.fs.FileSystem, str]:
    return pyarrow.fs.FileSystem.from_uri(root if "://" in root else Path(root).resolve().as_uri())


def list_dirs(fs: pyarrow.fs.FileSystem, path: str) -> list[pyarrow.fs.FileInfo]:
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    except OSError:
        return []
    return sorted((i for i in infos if i.type == pyarrow.fs.FileType.Directory), key=lambda i: i.path)


def tune_experiments(root: str) -> list[str]:
    """The tune-N experiment folders under a local path or a storage URI, in order."""
    fs, path = storage_of(root)
    names = [
        i.base_name
        for i in list_dirs(fs, path)
        if i.base_name.startswith("tune-") and i.base_name[5:].isdigit()
    ]
    return [f"{root.rstrip('/')}/{n}" for n in sorted(names, key=lambda n: int(n[5:]))]


def checkpoints(experiment: str) -> list[tuple[str, pyarrow.fs.FileSystem, str]]:
    """(trial folder name, filesystem, checkpoint path) of every checkpoint of an experiment, in order."""
    fs, path = storage_of(experiment)
    found = []
    for trial in list_dirs(fs, path):
        for ckpt in list_dirs(fs, trial.path):
            if ckpt.base_name.startswith("checkpoint_"):
                found.append((trial.base_name, fs, ckpt.path))
    return found


def uri_of(root: str, path: str) -> str:
    """A storage path as Tune's Checkpoint takes it: the path itself locally, scheme://path remotely."""
    return f"{root.split('://')[0]}://{path}" if "://" in root else path


def fetch(fs: pyarrow.fs.FileSystem, path: str, local: Path) -> Path:
    local.mkdir(parents=True, exist_ok=True)
    pyarrow.fs.copy_files(
        path, str(local), source_filesystem=fs, destination_filesystem=pyarrow.fs.LocalFileSystem()
    )
    return local


def reconcile(
    folder: StudyFolder,
    recorder: TrialRecorder,
    *,
    tune_root: str,
    study: optuna.Study,
    echo: Callable[[str], None],
) -> ResumePlan:
    plan = ResumePlan()
    log = recorder.log
    partial: dict[str, tuple[int, str]] = {}  # config key -> (iteration, checkpoint uri)
    for experiment in tune_experiments(tune_root):
        for _trial, fs, path in checkpoints(experiment):
            with tempfile.TemporaryDirectory() as tmp:
                local = fetch(fs, path, Path(tmp) / "ckpt")
                final = verified_trial_files(local)
                if final is not None:
                    trial_id = final["result"].get("trial_id")
                    if trial_id and trial_id not in log:
                        echo(f"resume: recording trial {trial_id}, which finished as the driver died")
                        recorder.record(
                            trial_id=trial_id,
                            status="COMPLETE",
                            config=final["config"],
                            result=final["result"],
                            files=local,
                        )
                        plan.recorded += 1
                elif (local / STATE_FILE).is_file():
                    try:
                        checkpoint = RetrainCheckpoint.from_dict(
                            torch.load(local / STATE_FILE, map_location="cpu", weights_only=True)
                        )
                    except Exception:  # cut short while it was written: an older checkpoint serves
                        continue
                    if checkpoint.trial_config:
                        key, iteration = config_key(checkpoint.trial_config), checkpoint.iteration
                        if iteration > partial.get(key, (0, ""))[0]:
                            partial[key] = (iteration, uri_of(experiment, path))
    plan.recorded += record_decided_stops(folder, recorder, log, echo)
    by_tune_id = {row["trial_id"]: row for row in log.rows()}
    recorded_keys = {config_key(row) for row in log.rows()}
    storage = study._storage
    reruns = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        tune_id = trial.user_attrs.get("tune_trial_id")
        if tune_id in by_tune_id:
            state, values = outcome_of(by_tune_id[tune_id])
            study.tell(trial.number, values, state=optuna.trial.TrialState[state])
            continue
        key = trial.user_attrs.get("config_key")
        if tune_id is None or key is None or key in recorded_keys:
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            continue  # never handed to Tune (or a repeat answer cut short): nothing to rerun
        reruns.append(trial)
        if key in partial:
            echo(
                f"resume: trial {tune_id} was cut at retraining step {partial[key][0]}; it reruns from there"
            )
        else:
            echo(f"resume: trial {tune_id} was cut before its first checkpoint; it reruns from the start")
    requeue_first(study, reruns)
    plan.rerun += len(reruns)
    # Every unrecorded configuration with a mid-run checkpoint continues from its latest one, whichever
    # driver queued its rerun: a rerun queued by an earlier resume that was itself killed before the
    # rerun started is no longer RUNNING in Optuna, but its checkpoint still counts.
    plan.resume_points.update({key: uri for key, (_, uri) in partial.items() if key not in recorded_keys})
    return plan


def requeue_first(study: optuna.Study, cut: list[optuna.trial.FrozenTrial]) -> None:
    """Queue the cut trials' configurations again, ahead of every configuration already waiting (the
    first points of the study's first launch, an earlier resume's reruns): a cut trial reruns next, from
    its checkpoint, even when the study has room for one trial only.

    Each step is safe to be killed after: the reruns are queued before the cut trials are marked FAIL
    (a kill between leaves them RUNNING, so the next resume queues them again: the repeat guard answers
    the duplicate), and a waiting configuration is queued again before its old place is marked FAIL."""
    if not cut:
        return
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    for trial in cut:
        study.enqueue_trial(
            trial.params, user_attrs={"rerun_of": trial.user_attrs["tune_trial_id"]}, skip_if_exists=False
        )
    storage = study._storage
    for trial in waiting:
        study.enqueue_trial(
            trial.system_attrs.get("fixed_params", {}),
            user_attrs=dict(trial.user_attrs),
            skip_if_exists=False,
        )
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    for trial in cut:
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)


def record_decided_stops(
    folder: StudyFolder, recorder: TrialRecorder, log: TrialLog, echo: Callable[[str], None]
) -> int:
    """Record STOPPED every trial whose stop is in rungs.jsonl but not in the log (the scheduler decided,
    the driver died before recording it); returns how many."""
    recorded = 0
    for line in read_lines(folder / StudyFolder.RUNGS):
        if line.get("decision") == "stop" and line["trial_id"] not in log:
            result = {
                "rung_iteration": line["iteration"],
                **{f"rung_{k}": v for k, v in line["values"].items()},
                "size_mb": line["values"].get("size_mb"),
            }
            echo(
                f"resume: recording trial {line['trial_id']} as stopped at rung {line['iteration']}, as decided"
            )
            recorder.record(
                trial_id=line["trial_id"], status="STOPPED", config=line["config"], result=result, files=None
            )
            recorded += 1
    return recorded
