"""How much of a trial's `train_time` is the network, and how much is noise.

Runs the same network (one configuration, seeds differing) N times, `--concurrent` at a time as Ray tasks
with a trial's resources, exactly as a study runs its trials (`study.run.trial.execute_trial`), and
prints, for each trial, the study's time axis (`train_time`: the median step time over the retraining's
logged windows, the cold first window and grid upkeep left out) beside the loop's all-in mean (what
`train_time` was before: warm-up, upkeep and the neighbour's bursts included), and the spread (max / min)
of each over the N trials. The reference point's time (`study.run.reference.dense_trial_time`, the dense
model timed as many at once) is printed beside them.

    python bench/time_spread.py --data ../shared/data/nerf_synthetic/lego --downscale 8 --repeats 6
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ray  # noqa: E402

from nerf.data.loader import load_scene  # noqa: E402
from nerf.experiment import machine_info  # noqa: E402
from nerf.rays import build_rays_table  # noqa: E402
from study.record.study_record import StudyRecord  # noqa: E402
from study.run.dense import dense_config  # noqa: E402
from study.run.dense_cache import load_or_train  # noqa: E402
from study.run.options import StudyOptions  # noqa: E402
from study.run.reference import dense_trial_time  # noqa: E402
from study.run.runner import trial_settings  # noqa: E402
from study.run.trial import execute_trial  # noqa: E402
from study.search.space import get_space  # noqa: E402


def timed_trial(config: dict, **kwargs) -> dict:
    metrics = execute_trial(config, **kwargs).metrics
    return {
        "train_time": metrics["train_time"],
        "loop_mean": metrics["seconds_per_1k_iters"],
        "grid_seconds": metrics["grid_seconds"],
        "psnr": metrics["psnr"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--downscale", type=int, default=8)
    parser.add_argument("--space", default="full", help="whose sampling and budget defaults to use")
    parser.add_argument("--strategy", default="uniform")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--dense-iters", type=int, default=1000)
    parser.add_argument("--retrain-iters", type=int, default=300)
    parser.add_argument("--rays-per-step", type=int, default=512)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp())
    options = StudyOptions(
        space=args.space,
        data=args.data,
        out=tmp / "s",
        downscale=args.downscale,
        dense_iters=args.dense_iters,
        retrain_iters=args.retrain_iters,
        rays_per_step=args.rays_per_step,
        samples=args.samples,
        eval_views=2,
        max_concurrent=args.concurrent,
    )
    space = get_space(args.space)
    budget = options.resolved_budget(space)
    sampling = options.resolved_sampling(space)
    scene = load_scene(args.data, downscale=args.downscale, seed=0)
    dense = load_or_train(dense_config(options, budget, sampling=sampling, device="cpu"), scene)
    settings = trial_settings(options, budget, StudyRecord(name="s", sampling=sampling, scheduler="fifo"))
    ray.init(num_cpus=args.concurrent, include_dashboard=False, log_to_driver=False, configure_logging=False)
    reference = dense_trial_time(
        dense, scene, settings, concurrent=args.concurrent, resources={"num_cpus": 1}
    )
    task = ray.remote(timed_trial).options(num_cpus=1)
    rays = build_rays_table(scene, "train")
    configs = [
        {"strategy": args.strategy, "width": args.width, "threshold": 0.0, "replicate": r}
        for r in range(args.repeats)
    ]
    trials = ray.get(
        [task.remote(c, scene=scene, rays=rays, dense=dense, settings=settings) for c in configs]
    )
    spread = {k: max(t[k] for t in trials) / min(t[k] for t in trials) for k in ("train_time", "loop_mean")}
    out = {
        "scene": scene.name,
        "image_px": scene.height,
        "sampling": sampling,
        "network": f"{args.strategy}-w{args.width}",
        "concurrent": args.concurrent,
        "retrain_iters": args.retrain_iters,
        "reference_train_time": reference,
        "trials": trials,
        "spread": spread,
        "machine": machine_info(),
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(
        f"{out['network']} on {scene.name} {scene.height}px ({sampling}), {args.repeats} trials "
        f"{args.concurrent} at a time, {args.retrain_iters} retraining steps each; reference "
        f"(dense, {args.concurrent} at once): {reference:.1f} s/1k"
    )
    print("| trial | train_time (median step, s/1k) | loop mean (s/1k) | grid upkeep (s) | psnr |")
    print("|---|---|---|---|---|")
    for i, t in enumerate(trials):
        print(
            f"| {i} | {t['train_time']:.1f} | {t['loop_mean']:.1f} | {t['grid_seconds']:.2f} | {t['psnr']:.2f} |"
        )
    print(f"| max/min | {spread['train_time']:.3f} | {spread['loop_mean']:.3f} | | |")


if __name__ == "__main__":
    main()
