"""Named points where a test may kill the study for real, to prove that a kill there loses nothing.

`NERF_STUDY_KILL_AT=point[:n]` makes the driver SIGKILL its own process group (itself, Ray's local
processes and the trial workers, as a user's `kill -9` of the job would) the n-th time (default 1st) it
reaches `point`; with `NERF_STUDY_KILL_DRIVER_ONLY=1` it kills itself alone, leaving Ray's processes
and the trials running (a driver lost on its own: an OOM kill, a closed session). Unset, `maybe_die`
costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "dense_training",  # mid-way through training the dense model (before it reaches the cache)
    "first_points",  # the first of the study's first points queued in Optuna, the rest not yet
    "rung_stop",  # MOASHA's stop is in rungs.jsonl; Tune has not stopped the trial, nothing recorded
    "trial_checkpoint",  # a trial reported a mid-retraining checkpoint
    "trial_ended",  # a trial ended; its files and row are not written yet
    "trial_recorded",  # its row is in trials.jsonl; Optuna and MLflow do not know yet
    "report",  # results.parquet written, the plots and report.md not yet
)
_seen: dict[str, int] = {}


def maybe_die(point: str) -> None:
    rule = os.environ.get("NERF_STUDY_KILL_AT")
    if not rule:
        return
    name, _, nth = rule.partition(":")
    if name != point:
        return
    _seen[point] = _seen.get(point, 0) + 1
    if _seen[point] == int(nth or 1):
        if os.environ.get("NERF_STUDY_KILL_DRIVER_ONLY") == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        os.killpg(os.getpgrp(), signal.SIGKILL)
