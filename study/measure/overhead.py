"""What a study spends outside its trials' compute, measured on a real study (`study bench --overhead`)."""

from __future__ import annotations

import itertools
import shutil
import time
from pathlib import Path

from study.run.options import StudyOptions
from study.run.runner import launch


def actor_gaps(rows: list[dict], *, tune_started_at: float) -> dict:
    """Per-trial overhead: idle time between consecutive trials on one reused actor (reporting, checkpoint
    persistence, the driver's records, the next suggestion). Start-up: Tune phase start to the first
    trial's first line (actor processes, imports, the shared scene and dense weights)."""
    by_worker: dict[int, list[dict]] = {}
    for row in rows:
        by_worker.setdefault(int(row["worker_pid"]), []).append(row)
    gaps: list[float] = []
    for trials in by_worker.values():
        trials.sort(key=lambda r: r["started_at"])
        gaps += [b["started_at"] - a["finished_at"] for a, b in itertools.pairwise(trials)]
    mean_compute = sum(r["trial_compute_seconds"] for r in rows) / len(rows)
    mean_gap = sum(gaps) / len(gaps) if gaps else float("nan")
    return {
        "actors": len(by_worker),
        "mean_trial_compute_s": mean_compute,
        "between_trial_gaps_s": gaps,
        "mean_gap_s": mean_gap,
        "per_trial_overhead_fraction": mean_gap / mean_compute,
        "startup_s": min(r["started_at"] for r in rows) - tune_started_at,
    }


def measure_study_overhead(
    out: Path,
    *,
    space: str = "quick",
    data: str = "synthetic",
    max_concurrent: int = 2,
    trials: int | None = None,
) -> dict:
    """Run one study from a cold cache in `out` (deleted first) and split its time into trial compute,
    per-trial gaps and one-off costs."""

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = launch(
        StudyOptions(
            space=space,
            data=data,
            out=out / "study",
            cache_dir=out / "cache",
            max_concurrent=max_concurrent,
            trials=trials,
        ),
        echo=lambda line: None,
    )
    wall = time.perf_counter() - start
    rows = [r for r in result.rows if r["status"] == "COMPLETE"]
    if not rows:
        raise RuntimeError(f"no trial completed in the overhead study in {out}")
    compute = sum(r["trial_compute_seconds"] for r in rows)
    tune_s = result.tune_seconds
    return {
        "space": space,
        "trials": len(rows),
        "max_concurrent": max_concurrent,
        "wall_s": wall,
        "dense_train_s": result.dense.metrics["wall_seconds"],
        "ray_init_s": result.ray_init_seconds,
        "tune_phase_s": tune_s,
        "trial_compute_sum_s": compute,
        # everything in the Tune phase that was not trial compute, start-up and shutdown included
        "slot_overhead_fraction": (tune_s * max_concurrent - compute) / compute,
        **actor_gaps(rows, tune_started_at=result.tune_started_at),
    }
