"""Benchmark: on one node, is it better to run one trial with every core, or one trial per core?

    python bench/threads_vs_trials.py [--data PATH --downscale 4] [--rays 256] [--samples 32]

For each width, times training steps (the same step as `study bench`) two ways on the same machine:
one process using all N cores, and N processes at once using one core each. Prints steps per second of
the whole node for both, so `--cpus-per-trial` and `--max-concurrent` can be chosen from numbers.
Not a test: run it by hand and quote the table.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(args: tuple) -> float:
    data, downscale, width, threads, config_kwargs = args
    import torch

    torch.set_num_threads(threads)
    from nerf.experiment import DataConfig
    from study.measure.step_time import StepBenchConfig, step_seconds

    scene = DataConfig(data, downscale=downscale).load()
    return step_seconds(scene, width, "fp32", StepBenchConfig(**config_kwargs))[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--downscale", type=int, default=1)
    parser.add_argument("--rays", type=int, default=256)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--widths", default="256,128,64")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    config = {"rays": args.rays, "samples": args.samples, "repeats": args.repeats, "device": "cpu"}
    ctx = mp.get_context("spawn")  # fresh processes: no thread pool inherited from this one
    print(f"{args.rays} rays x {args.samples} samples per step, fp32, {cores} cores")
    print(
        f"| width | 1 process x {cores} threads: steps/s | {cores} processes x 1 thread: steps/s (node) | ratio |"
    )
    print("|---|---|---|---|")
    for width in (int(w) for w in args.widths.split(",")):
        with ctx.Pool(1) as pool:
            one = pool.map(timed, [(args.data, args.downscale, width, cores, config)])[0]
        with ctx.Pool(cores) as pool:
            many = pool.map(timed, [(args.data, args.downscale, width, 1, config)] * cores)
        node_one, node_many = 1 / one, sum(1 / s for s in many)
        print(f"| {width} | {node_one:.2f} | {node_many:.2f} | {node_many / node_one:.2f} |")


if __name__ == "__main__":
    main()
