"""Benchmark: what a study spends outside the trials' own compute (Ray start, actor start-up, scheduling,
checkpoints, the driver's MLflow/Parquet records).

    python bench/study_overhead.py [--space quick] [--out /tmp/study-overhead] [--max-concurrent 2]

Runs one study (the dense model from a cold cache, timed separately) and prints JSON: wall time, Ray
start, the Tune phase, the sum of trial compute (prune + evaluations + retraining, timed inside each
trial), the per-trial overhead (idle time between consecutive trials on a reused actor, over a trial's
compute), the one-off start-up, and slot_overhead_fraction = (Tune phase x concurrency - compute) /
compute, which charges start-up and shutdown to the few trials of one study. Same as
`study bench --overhead --json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: F401  (before Ray: a lazy torch import inside Tune's loggers once failed to load)

from study.measure.overhead import measure_study_overhead


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="quick")
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--out", type=Path, default=Path("/tmp/study-overhead"))
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--trials", type=int, default=None)
    args = parser.parse_args()
    print(
        json.dumps(
            measure_study_overhead(
                args.out,
                space=args.space,
                data=args.data,
                max_concurrent=args.max_concurrent,
                trials=args.trials,
            ),
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
