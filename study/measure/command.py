"""`study bench`: every measurement it asks for, in one process (so that the numbers share the machine's
state), as one JSON-ready dict, and its table."""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from common.errors import InputError
from nerf.checkpoint import load_occupancy, resolve_checkpoint_path
from nerf.device import resolve_device
from nerf.experiment import DataConfig, machine_info
from nerf.occupancy import OccupancyGrid
from nerf.precision import precision_report
from nerf.render import RenderConfig
from nerf.train import TrainConfig
from study.measure.options import BenchOptions
from study.measure.overhead import measure_study_overhead
from study.measure.step_time import StepBench, StepBenchConfig, measure_time_to_psnr, run_step_bench


def run_bench(options: BenchOptions) -> dict:
    """Everything `study bench` measures, as one JSON-ready dict.

    Step rows are timed in exactly the precisions asked for, `auto` standing for its verdict: `auto`
    is measured again here (`nerf.precision`, forced) and reported as `precision_auto`, but its
    precision is timed only when asked for (as `auto` or by name), so `--precision fp32` times fp32
    alone. The headline numbers (`precision`, `dense_s_per_iter`, `ratio_w*`) are auto's rows when
    they were timed, else the first precision asked for."""
    options.validate()
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    dev = resolve_device(options.device)
    grid = occupancy_grid(options.dense_run) if options.sampling == "occupancy" else None
    verdict = precision_report(dev, force=True)
    auto = verdict["auto"]
    # only what was asked for: timing auto's pick beside an explicit precision added rows (issue 21)
    timed = tuple(dict.fromkeys(auto if p == "auto" else p for p in options.precisions))
    scene = DataConfig(options.data, downscale=options.downscale).load()
    widths = options.width_list
    config = StepBenchConfig(
        rays=options.rays,
        samples=options.samples,
        widths=tuple(widths),
        precisions=timed,
        repeats=options.repeats,
        device=options.device,
        sampling=options.sampling,
    )
    steps = run_step_bench(scene, config, occupancy=grid)
    headline = auto if auto in timed else timed[0]
    out = {
        "scene": scene.name,
        "image_px": scene.height,
        "rays": options.rays,
        "samples": options.samples,
        "sampling": options.sampling,
        **step_summary(steps, widths, headline, auto, verdict, options.precisions),
        "machine": machine_info(),
    }
    if options.time_to_psnr is not None:
        ttp = measure_time_to_psnr(
            scene,
            target_psnr=options.time_to_psnr,
            render=RenderConfig(n_samples=options.samples, sampling=options.sampling),
            train_config=TrainConfig(
                iterations=options.ttp_iters,
                rays_per_step=options.ttp_rays,
                device=options.device,
                log_every=50,
            ),
        )
        out["time_to_psnr"] = asdict(ttp)
    if options.overhead:
        with tempfile.TemporaryDirectory() as tmp:
            out["study_overhead"] = measure_study_overhead(Path(tmp) / "overhead")
    return out


def occupancy_grid(dense_run: Path | None) -> OccupancyGrid:
    """The grid of a `study dense` run trained with occupancy sampling (what the steps are timed through)."""
    assert dense_run is not None  # BenchOptions.validate
    grid = load_occupancy(resolve_checkpoint_path(dense_run))
    if grid is None:
        raise InputError(f"{str(dense_run)!r} holds no occupancy grid; train it with --sampling occupancy")
    return grid


def step_summary(
    steps: StepBench, widths: list[int], headline: str, auto: str, verdict: dict, requested: tuple[str, ...]
) -> dict:
    dense = steps.row(widths[0], headline)
    return {
        "device": steps.device,
        "threads": steps.threads,
        "precision": headline,
        "precision_auto": auto,
        "precisions_requested": list(requested),
        "precision_choice": verdict,
        "dense_s_per_iter": dense.seconds_per_step,
        "fp32_peak_fraction": steps.row(widths[0], "fp32").peak_fraction
        if any(r.precision == "fp32" for r in steps.rows)
        else None,
        **{f"ratio_w{w}": steps.row(w, headline).ratio for w in widths[1:]},
        "points_per_ray": dense.points_per_ray,
        "points_per_s": dense.points_per_s,
        "peaks_gflops": steps.peaks_gflops,
        "rows": [asdict(r) for r in steps.rows],
    }


def bench_table(out: dict) -> str:
    lines = [
        f"{out['scene']} {out['image_px']}px, {out['rays']} rays x {out['samples']} samples per step "
        f"({out['sampling']} sampling), {out['device']}, {out['threads']} threads; matmul peak "
        + ", ".join(f"{p} {g:.0f} GFLOP/s" for p, g in out["peaks_gflops"].items()),
        f"auto precision: {out['precision_auto']} (measured: "
        + ", ".join(f"{p} {s * 1e3:.1f} ms" for p, s in out["precision_choice"]["seconds"].items())
        + " per step of "
        "the MLP's shapes)",
        "| width | precision | params | s / step | points / ray | points / s | GFLOP / step | "
        "% of matmul peak | step / dense step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    auto_asked = "auto" in out.get("precisions_requested", ())
    for r in out["rows"]:
        precision = r["precision"] + (
            " (auto)" if auto_asked and r["precision"] == out["precision_auto"] else ""
        )
        lines.append(
            f"| {r['width']} | {precision} | {r['params']:,} | {r['seconds_per_step']:.3f} | "
            f"{r['points_per_ray']:.1f} | {r['points_per_s']:,.0f} | {r['gflop_per_step']:.0f} | "
            f"{100 * r['peak_fraction']:.0f}% | {r['ratio']:.2f} |"
        )
    if "time_to_psnr" in out:
        t = out["time_to_psnr"]
        lines.append(
            f"time to {t['target_psnr']:.1f} dB test PSNR: "
            + (
                f"{t['train_seconds']:.0f} s ({t['iterations']} iters)"
                if t["reached"]
                else f"not reached in {t['iterations']} iters ({t['psnr']:.2f} dB after {t['train_seconds']:.0f} s)"
            )
        )
    if "study_overhead" in out:
        o = out["study_overhead"]
        lines.append(
            f"study overhead ({o['space']}, {o['trials']} trials, {o['max_concurrent']} concurrent): "
            f"{100 * o['per_trial_overhead_fraction']:.1f}% per trial ({o['mean_gap_s']:.2f} s between "
            f"trials on an actor, {o['mean_trial_compute_s']:.1f} s compute); one-off: Ray start "
            f"{o['ray_init_s']:.1f} s, actor start-up {o['startup_s']:.1f} s"
        )
    return "\n".join(lines)
