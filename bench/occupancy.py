"""Benchmark: empty-space skipping (render sampling 'occupancy') against vanilla sampling, on one scene.

    python bench/occupancy.py [--data ../shared/data/nerf_synthetic/lego --downscale 4] [--steps 3000]
        [--modes vanilla occupancy] [--widths 256 128 64] [--json out.json]

Per sampling mode, one dense run with `study dense`'s defaults (256 rays x 64 samples per step, coarse
only, lr 5e-4; fp32 unless --precision): seconds per step, sample points per ray that reach the MLP,
test PSNR (--eval-views views) every --eval-every steps, and the wall time to --target dB: start-up
(scene load, rays table, model build) + training seconds until the first evaluation at or above the
target + that evaluation's seconds (the other evaluations are measurement, not part of the run).
Evaluations run inside `on_checkpoint`, whose time training excludes, with the grid as it stood.

Then, on the trained occupancy model: steps of width-256 and coreset-pruned width-128/64 networks that
inherit its grid (refreshed as they train, as a trial does), timed in this process one after another,
and their ratio to the width-256 step: per-step work outside the MLP (sampling, grid lookup, packing,
compositing, refreshes, Adam) is what keeps the ratios above the FLOP ratios. Last, each width's MLP
alone (forward and backward on random points, nothing else) at the steps' point count and at vanilla's
rays x samples: the floor under those ratios, which no saving outside the MLP can go below.

Not a test: run it by hand and quote the table with the machine's state (other processes running?).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nerf.data.loader import load_scene
from nerf.evaluate import EvalConfig, evaluate
from nerf.experiment import machine_info
from nerf.model import ModelConfig, NeRFMLP
from nerf.occupancy import OccupancyConfig, OccupancyGrid
from nerf.rays import build_rays_table
from nerf.render import RenderConfig
from nerf.silhouettes import Silhouettes
from nerf.train import TrainConfig, TrainState, train
from pruning import PruneSpec, prune

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nerf_synthetic" / "lego"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = OccupancyConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--downscale", type=int, default=4)
    p.add_argument("--modes", nargs="*", default=["vanilla", "occupancy"], choices=["vanilla", "occupancy"])
    p.add_argument("--steps", type=int, default=3000, help="training steps per mode")
    p.add_argument(
        "--report-steps",
        type=int,
        nargs="+",
        default=[1000, 3000],
        help="steps whose test PSNR the table shows (each must be a multiple of --eval-every "
        "or the last step)",
    )
    p.add_argument("--eval-every", type=int, default=250, help="steps between test evaluations")
    p.add_argument("--eval-views", type=int, default=8)
    p.add_argument("--target", type=float, default=21.5, help="test PSNR (dB) of the time-to-target")
    p.add_argument("--rays", type=int, default=256)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--widths",
        type=int,
        nargs="*",
        default=[256, 128, 64],
        help="widths whose occupancy step is timed on the trained model (empty: skip)",
    )
    p.add_argument("--width-steps", type=int, default=48, help="steps timed per width (3 refreshes)")
    p.add_argument(
        "--width-threads",
        type=int,
        default=None,
        help="CPU threads for the width steps (default: --threads; a study's trials run on 1 each)",
    )
    p.add_argument(
        "--prune-view",
        action="store_true",
        help="the pruned widths cut the 128-wide view layer too (to width // 2; PruneSpec.prune_view)",
    )
    p.add_argument(
        "--mlp-repeats", type=int, default=5, help="interleaved rounds timing each width's MLP alone"
    )
    p.add_argument("--resolution", type=int, default=d.resolution)
    p.add_argument("--opacity-threshold", type=float, default=d.opacity_threshold)
    p.add_argument("--warmup", type=int, default=d.warmup_iters)
    p.add_argument("--refresh-every", type=int, default=d.refresh_every)
    p.add_argument("--decay", type=float, default=d.decay)
    p.add_argument("--points-per-cell", type=int, default=d.points_per_cell)
    p.add_argument("--refresh-fraction", type=float, default=d.refresh_fraction)
    p.add_argument(
        "--no-carve",
        action="store_true",
        help="occupancy without the silhouettes' carving (the grid starts from the model after the warm-up)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write every number here")
    p.add_argument(
        "--merge",
        type=Path,
        nargs="*",
        default=[],
        help="--json files of earlier runs whose modes join the table (e.g. a vanilla run "
        "measured separately); this run's modes come first",
    )
    return p.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def occupancy_config(args: argparse.Namespace) -> OccupancyConfig:
    return OccupancyConfig(
        resolution=args.resolution,
        opacity_threshold=args.opacity_threshold,
        warmup_iters=args.warmup,
        refresh_every=args.refresh_every,
        decay=args.decay,
        points_per_cell=args.points_per_cell,
        refresh_fraction=args.refresh_fraction,
        carve=not args.no_carve,
    )


def run_mode(args: argparse.Namespace, mode: str) -> tuple[dict, NeRFMLP, OccupancyGrid | None]:
    """One dense run: start-up, training with periodic test evaluations, a final evaluation."""
    wall = time.perf_counter()
    scene = load_scene(args.data, downscale=args.downscale, seed=args.seed)
    rays = build_rays_table(scene, "train")
    torch.manual_seed(args.seed)
    model = NeRFMLP(ModelConfig())
    startup = time.perf_counter() - wall
    render = RenderConfig(n_samples=args.samples, sampling=mode)
    config = TrainConfig(
        iterations=args.steps,
        rays_per_step=args.rays,
        lr=args.lr,
        seed=args.seed,
        precision=args.precision,
        device=args.device,
        threads=args.threads,
        log_every=args.eval_every,
    )
    eval_config = EvalConfig(max_views=args.eval_views)
    evals: list[dict] = []

    def score(iteration: int, train_seconds: float, grid: OccupancyGrid | None) -> None:
        result = evaluate(
            model,
            scene,
            render=render,
            config=eval_config,
            device=args.device,
            precision=args.precision,
            occupancy=grid,
        )
        evals.append(
            {
                "iteration": iteration,
                "train_seconds": train_seconds,
                "psnr": result.psnr,
                "eval_seconds": result.seconds,
                "eval_points_per_ray": result.points_per_ray,
                "occupied_fraction": grid.occupied_fraction if grid is not None else None,
            }
        )
        log(
            f"  {mode} step {iteration}: test {result.psnr:.2f} dB, train {train_seconds:.1f} s, "
            f"eval {result.seconds:.1f} s, {result.points_per_ray:.1f} points/ray"
        )

    def on_checkpoint(state: TrainState) -> None:
        grid = OccupancyGrid.from_state_dict(state.occupancy) if state.occupancy is not None else None
        score(state.iteration, state.train_seconds, grid)

    result = train(
        model,
        rays,
        near=scene.near,
        far=scene.far,
        background=scene.background,
        render=render,
        config=config,
        checkpoint_every=args.eval_every,
        on_checkpoint=on_checkpoint,
        occupancy_config=occupancy_config(args),
        silhouettes=Silhouettes.of(scene) if occupancy_config(args).carves(render.sampling) else None,
    )
    score(args.steps, result.train_seconds, result.occupancy)
    reached = next((e for e in evals if e["psnr"] >= args.target), None)
    row = {
        "mode": mode,
        "startup_seconds": startup,
        "train_seconds": result.train_seconds,
        "seconds_per_step": result.train_seconds / args.steps,
        "train_points_per_ray": result.points_per_ray,
        "train_points_per_ray_last": result.curve[-1]["points_per_ray"],
        "eval_points_per_ray": evals[-1]["eval_points_per_ray"],
        "psnr_at": {e["iteration"]: e["psnr"] for e in evals if e["iteration"] in args.report_steps},
        "target_psnr": args.target,
        "steps_to_target": reached["iteration"] if reached else None,
        "seconds_to_target": startup + reached["train_seconds"] + reached["eval_seconds"]
        if reached
        else None,
        "grid_refreshes": result.occupancy.refreshes if result.occupancy is not None else 0,
        "grid_seconds": result.occupancy_seconds,
        "refresh_points": result.occupancy.refresh_points if result.occupancy is not None else 0,
        "occupied_fraction": evals[-1]["occupied_fraction"],
        "evals": evals,
        "curve": result.curve,
    }
    return row, model, result.occupancy


def width_steps(args: argparse.Namespace, dense: NeRFMLP, grid: OccupancyGrid) -> list[dict]:
    """Seconds per occupancy step at each width, pruned from the trained model, inheriting its grid."""
    scene = load_scene(args.data, downscale=args.downscale, seed=args.seed)
    rays = build_rays_table(scene, "train")
    render = RenderConfig(n_samples=args.samples, sampling="occupancy")
    rows, models = [], {}
    for width in args.widths:
        model = (
            copy.deepcopy(dense)
            if width == 256
            else prune(
                dense, PruneSpec("coreset", width=width, prune_view=args.prune_view), seed=args.seed
            ).model
        )
        models[width] = model
        seconds: list[float] = []
        result = train(
            model,
            rays,
            near=scene.near,
            far=scene.far,
            background=scene.background,
            render=render,
            occupancy=grid,
            config=TrainConfig(
                iterations=args.width_steps + 2,
                rays_per_step=args.rays,
                lr=args.lr,
                seed=args.seed,
                precision=args.precision,
                device=args.device,
                threads=args.width_threads or args.threads,
                log_every=1,
            ),
            on_step=lambda stats, seconds=seconds: seconds.append(1.0 / stats.iters_per_s),
        )
        rows.append(
            {
                "width": width,
                "view_width": model.config.view_width,
                "median_step_seconds": float(np.median(seconds[2:])),
                "mean_step_seconds": float(np.mean(seconds[2:])),
                "points_per_ray": result.points_per_ray,
            }
        )
        log(
            f"  width {width}: {rows[-1]['mean_step_seconds'] * 1000:.1f} ms/step (mean, refreshes "
            f"included), {rows[-1]['median_step_seconds'] * 1000:.1f} ms median, "
            f"{result.points_per_ray:.1f} points/ray"
        )
    reference = rows[0]
    for row in rows:
        row["ratio_mean"] = row["mean_step_seconds"] / reference["mean_step_seconds"]
        row["ratio_median"] = row["median_step_seconds"] / reference["median_step_seconds"]
    step_points = round(reference["points_per_ray"] * args.rays)
    for n_points, key in ((step_points, "mlp_step_points"), (args.rays * args.samples, "mlp_vanilla_points")):
        seconds_at = mlp_alone(
            models,
            n_points,
            threads=args.width_threads or args.threads,
            seed=args.seed,
            repeats=args.mlp_repeats,
        )
        for row in rows:
            row[key] = n_points
            row[f"{key}_seconds"] = seconds_at[row["width"]]
            row[f"{key}_ratio"] = seconds_at[row["width"]] / seconds_at[reference["width"]]
    return rows


def mlp_alone(
    models: dict[int, NeRFMLP], n_points: int, *, threads: int | None, seed: int, repeats: int = 5
) -> dict[int, float]:
    """Median seconds of each model's forward and backward alone (no rays, grid, compositing or Adam)
    on n_points random points: the floor under a width's step, and how the widths' MLPs alone compare.
    The widths are interleaved, `repeats` rounds, so that drifts of the machine hit them alike."""
    if threads is not None:
        torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    points = torch.rand(n_points, 3, generator=gen) * 2 - 1
    viewdirs = torch.nn.functional.normalize(torch.randn(n_points, 3, generator=gen), dim=-1)
    calls = max(3, min(40, round(2e5 / n_points)))  # ~40 at 5k points, 12 at vanilla's 16k
    timings: dict[int, list[float]] = {w: [] for w in models}
    for _ in range(repeats):
        for width, model in models.items():
            for call in range(calls + 1):
                start = time.perf_counter()
                model(points, viewdirs).sum().backward()
                model.zero_grad(set_to_none=True)
                if call:  # the first call of a round warms the caches
                    timings[width].append(time.perf_counter() - start)
    return {w: float(np.median(t)) for w, t in timings.items()}


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()  # training's; the width steps may use --width-threads
    load = os.getloadavg()
    out: dict = {
        "config": {
            **vars(args),
            "json": str(args.json) if args.json else None,
            "occupancy": asdict(occupancy_config(args)),
        },
        "machine": machine_info(),
        "load_before": load,
        "modes": [],
        "widths": [],
    }
    trained: dict[str, tuple[NeRFMLP, OccupancyGrid | None]] = {}
    for mode in args.modes:
        log(f"{mode}: {args.steps} steps of {args.rays} rays x {args.samples} samples")
        row, model, grid = run_mode(args, mode)
        out["modes"].append(row)
        trained[mode] = (model, grid)
    if args.widths and "occupancy" in trained and trained["occupancy"][1] is not None:
        log("occupancy steps per width (coreset-pruned from the trained model, inheriting its grid)")
        out["widths"] = width_steps(args, *trained["occupancy"])  # type: ignore[arg-type]
    out["load_after"] = os.getloadavg()
    for path in args.merge:
        earlier = json.loads(path.read_text())
        for row in earlier["modes"]:
            row["merged_from"] = str(path)
            row["psnr_at"] = {int(k): v for k, v in row["psnr_at"].items()}
            out["modes"].append(row)

    print(
        f"\n{out['machine']['cpu_model']}, {threads} threads, load average "
        f"{load[0]:.2f} before / {out['load_after'][0]:.2f} after (1 min)\n"
    )
    steps = sorted({s for r in out["modes"] for s in r["psnr_at"]})
    print(
        "| sampling | s / step | points / ray (train mean, last, eval) | "
        + " | ".join(f"PSNR @ {s}" for s in steps)
        + f" | steps to {args.target} dB | wall s to "
        f"{args.target} dB |"
    )
    print("|---" * (5 + len(steps)) + "|")
    for r in out["modes"]:
        print(
            f"| {r['mode']} | {r['seconds_per_step']:.3f} | {r['train_points_per_ray']:.1f}, "
            f"{r['train_points_per_ray_last']:.1f}, {r['eval_points_per_ray']:.1f} | "
            + " | ".join(fmt(r["psnr_at"].get(s), ".2f") for s in steps)
            + f" | {fmt(r['steps_to_target'], 'd')} | {fmt(r['seconds_to_target'], '.1f')} |"
        )
    rows = {r["mode"]: r for r in out["modes"]}
    if {"vanilla", "occupancy"} <= rows.keys():
        v, o = rows["vanilla"], rows["occupancy"]
        if v["seconds_to_target"] and o["seconds_to_target"]:
            speedup = v["seconds_to_target"] / o["seconds_to_target"]
            print(f"\ntime to {args.target} dB: occupancy {speedup:.1f}x faster than vanilla")
        print(
            "PSNR occupancy - vanilla: "
            + ", ".join(
                f"{s}: {o['psnr_at'][s] - v['psnr_at'][s]:+.2f} dB"
                for s in steps
                if s in o["psnr_at"] and s in v["psnr_at"]
            )
        )
    if out["widths"]:
        print(
            f"\n| width (occupancy, inherited grid, {args.width_threads or threads} thread(s)"
            f"{', view layer pruned too' if args.prune_view else ''}) "
            "| ms / step mean (median) | points / ray | / width 256 "
            f"| MLP alone at {out['widths'][0]['mlp_step_points']:,} points: ms, / width 256 "
            f"| MLP alone at {out['widths'][0]['mlp_vanilla_points']:,} points: ms, / width 256 |"
        )
        print("|---|---|---|---|---|---|")
        for w in out["widths"]:
            mean, median = w["mean_step_seconds"] * 1000, w["median_step_seconds"] * 1000
            print(
                f"| {w['width']} | {mean:.1f} ({median:.1f}) | {w['points_per_ray']:.1f} "
                f"| {w['ratio_mean']:.2f} ({w['ratio_median']:.2f}) "
                f"| {w['mlp_step_points_seconds'] * 1000:.1f}, {w['mlp_step_points_ratio']:.3f} "
                f"| {w['mlp_vanilla_points_seconds'] * 1000:.1f}, {w['mlp_vanilla_points_ratio']:.3f} |"
            )
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return out


if __name__ == "__main__":
    main()
