"""Benchmark: what a study spends outside the trials' own compute (Ray start, scheduling, object
store, checkpoints, the driver's MLflow/Parquet records).

    python bench/study_overhead.py [--space quick] [--out /tmp/overhead] [--max-concurrent 2]

Runs one study (the dense model from a cold cache, timed separately) and prints: wall time, Ray start,
the Tune phase, the sum of trial compute (prune + evaluations + retraining, timed inside each trial),
and overhead = (Tune phase x concurrency - trial compute) / trial compute.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402,F401  (before Ray: see FACTS.md)

from study.runner import StudyOptions, launch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="quick")
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--out", type=Path, default=Path("/tmp/study-overhead"))
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--trials", type=int, default=None)
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    start = time.perf_counter()
    result = launch(StudyOptions(space=args.space, data=args.data, out=args.out / "study",
                                 cache_dir=args.out / "cache", max_concurrent=args.max_concurrent,
                                 trials=args.trials), echo=lambda line: None)
    wall = time.perf_counter() - start
    rows = [r for r in result["rows"] if r["status"] == "COMPLETE"]
    compute = sum(r["trial_compute_seconds"] for r in rows)
    tune_s = result["tune_seconds"]
    overhead = (tune_s * args.max_concurrent - compute) / compute
    summary = {"trials": len(rows), "wall_s": wall, "dense_train_s": result["dense"].metrics["wall_seconds"],
               "ray_init_s": result["ray_init_seconds"], "tune_phase_s": tune_s,
               "trial_compute_sum_s": compute, "mean_trial_compute_s": compute / len(rows),
               "mean_trial_tune_s": sum(r["trial_seconds"] for r in rows) / len(rows),
               "max_concurrent": args.max_concurrent, "overhead_fraction": overhead}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
