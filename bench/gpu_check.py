"""The GPU check: one command that proves the CUDA path and measures it, for the GPU machine lent now and
then (no Ray there: every step calls the project's plain functions, as a Ray trial would).

    python bench/gpu_check.py                    # on the GPU machine: $OUT/gpu_check.json and .md
    python bench/gpu_check.py --device cpu --quick --out /tmp/gpu-check    # the same code, tiny, here

Sections (each within the time left of --budget-s; one that does not fit says so instead of running):
1. `pytest -m gpu` (tests/test_gpu.py, tests/test_precision_quality.py): CUDA training against the CPU
   run, fp32, bf16 and fp16 each within 0.5 dB of fp32 with and without the occupancy grid, pruning on
   CUDA against CPU, checkpoints from CUDA loading on the CPU with weights_only, fp16 with a GradScaler.
2. The matmul peak of each precision, measured in the same run.
3. The training step at widths 256/128/64 (1024 rays x 64 samples, bf16 on CUDA), against the bf16 peak.
4. Four processes sharing the GPU, each stepping a width-64 network, against one process alone.
5. Time to 21.5 and to 25 dB test PSNR on lego at 100 px (dense model, study dense's sampling), wall
   and steps, the model's first steps (compilation, if any) stated apart.
6. One trial per strategy at widths 64 and 128 (edge at threshold 0.05) on that dense model, retrained
   2,000 steps each through `study.run.trial.execute_trial`: PSNR, seconds per 1k steps, size.

Data: `../shared` does not travel to the GPU machine; `python bench/pack_lego.py` writes lego at 100 px
into gpu_data/lego_100 (ignored by git, a few MB) for `run(carry=["gpu_data"])`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

DEFAULT_DATA = ROOT / "gpu_data" / "lego_100"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true", help="tiny sizes (the CPU run in CI)")
    p.add_argument(
        "--data", default=None, help="scene (default: gpu_data/lego_100, or the built-in scene with --quick)"
    )
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    p.add_argument("--budget-s", type=float, default=450.0, help="wall seconds for everything")
    p.add_argument("--processes", type=int, default=4, help="processes sharing the device in section 4")
    return p.parse_args(argv)


class Clock:
    def __init__(self, budget_s: float) -> None:
        self.start, self.budget = time.perf_counter(), budget_s

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)


def section(report: dict, name: str, clock: Clock, need_s: float, run) -> None:
    """Run one section if the time left allows; a failure is recorded, not raised (the rest still runs)."""
    if clock.left() < need_s:
        report[name] = {"skipped": f"needs ~{need_s:.0f} s, {clock.left():.0f} s left"}
        return
    started = time.perf_counter()
    try:
        report[name] = run()
    except Exception as exc:
        report[name] = {"error": f"{exc.__class__.__name__}: {exc}"}
    report[name]["seconds"] = time.perf_counter() - started
    print(f"[gpu_check] {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)


def gpu_tests(quick: bool) -> dict:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "-m",
            "gpu",
            "tests/test_gpu.py",
            "tests/test_precision_quality.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    tail = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-500:]
    return {
        "returncode": result.returncode,
        "summary": tail,
        "failures": [line for line in result.stdout.splitlines() if line.startswith("FAILED")],
    }


def peaks(device: torch.device, quick: bool) -> dict:
    from study.measure.step_time import matmul_peak_gflops

    names = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    n = 512 if quick else (8192 if device.type == "cuda" else 2048)
    return {
        "gflops": {p: matmul_peak_gflops(p, device, n=n, repeats=3 if quick else 10) for p in names},
        "matrix": n,
    }


def steps(scene, device: torch.device, quick: bool, peak: dict) -> dict:
    from study.measure.step_time import StepBenchConfig, run_step_bench

    precision = "bf16" if device.type == "cuda" else "fp32"
    config = StepBenchConfig(
        rays=64 if quick else 1024,
        samples=16 if quick else 64,
        widths=(64, 32, 16) if quick else (256, 128, 64),
        precisions=(precision,),
        repeats=2 if quick else 20,
        device=str(device),
    )
    bench = run_step_bench(scene, config)
    rows = [asdict(r) for r in bench.rows]
    bf16_peak = (peak.get("gflops") or {}).get(precision)
    for row in rows:
        row["percent_of_peak"] = (
            100 * row["gflop_per_step"] / row["seconds_per_step"] / bf16_peak if bf16_peak else None
        )
    return {"precision": precision, "rays": config.rays, "samples": config.samples, "rows": rows}


def _share_worker(args: tuple) -> float:
    data, device, quick, iterations, barrier = args
    from nerf.data.loader import load_scene
    from nerf.model import ModelConfig, NeRFMLP
    from nerf.rays import build_rays_table
    from nerf.render import RenderConfig
    from nerf.train import TrainConfig, train

    torch.set_num_threads(1)
    scene = load_scene(data, downscale=4 if data == "synthetic" else 1)
    model = NeRFMLP(ModelConfig().with_widths(trunk=(64,) * 8, feature=64))
    rays = build_rays_table(scene, "train")
    config = TrainConfig(
        iterations=iterations,
        rays_per_step=64 if quick else 1024,
        device=device,
        precision="bf16" if device == "cuda" else "fp32",
        log_every=iterations,
    )
    render = RenderConfig(n_samples=16 if quick else 64)
    train(
        model,
        rays,
        near=scene.near,
        far=scene.far,
        background=scene.background,
        render=render,
        config=TrainConfig(**{**asdict(config), "iterations": 3}),
    )  # warm-up, apart from the timing
    barrier.wait()
    result = train(
        model, rays, near=scene.near, far=scene.far, background=scene.background, render=render, config=config
    )
    return iterations / result.train_seconds


def sharing(data: str, device: str, quick: bool, processes: int) -> dict:
    iterations = 10 if quick else 300
    context = mp.get_context("spawn")
    with context.Manager() as manager:
        alone = context.Pool(1).apply(_share_worker, ((data, device, quick, iterations, manager.Barrier(1)),))
        barrier = manager.Barrier(processes)
        with context.Pool(processes) as pool:
            each = pool.map(_share_worker, [(data, device, quick, iterations, barrier)] * processes)
    return {
        "width": 64,
        "processes": processes,
        "steps_per_s_alone": alone,
        "steps_per_s_each": each,
        "steps_per_s_total": sum(each),
        "speedup_total_over_alone": sum(each) / alone,
    }


def time_to_quality(scene, device: str, quick: bool, out: Path) -> tuple[dict, object, dict | None]:
    """Dense training to 25 dB (or the step cap), evaluated every few hundred steps; returns the model and
    its occupancy grid (state dict) for the trials."""
    from nerf.checkpoint import save_checkpoint
    from nerf.evaluate import EvalConfig, evaluate
    from nerf.model import ModelConfig, NeRFMLP
    from nerf.rays import build_rays_table
    from nerf.render import RenderConfig
    from nerf.train import TrainConfig, TrainState, train

    targets = (12.0, 14.0) if quick else (21.5, 25.0)
    every, cap = (10, 40) if quick else (250, 20_000)
    torch.manual_seed(0)
    model = NeRFMLP(ModelConfig())
    render = RenderConfig(n_samples=16 if quick else 64, sampling="occupancy")
    precision = "bf16" if device == "cuda" else "fp32"
    reached: dict[str, dict] = {}
    curve: list[dict] = []
    grid: dict = {}
    wall_start = time.perf_counter()
    eval_seconds = 0.0

    class Done(Exception):
        pass

    def on_checkpoint(state: TrainState) -> None:
        nonlocal eval_seconds
        start = time.perf_counter()
        quality = evaluate(
            model, scene, render=render, config=EvalConfig(max_views=8), device=device, precision=precision
        ).psnr
        eval_seconds += time.perf_counter() - start
        curve.append({"iteration": state.iteration, "train_seconds": state.train_seconds, "psnr": quality})
        grid["state"] = state.occupancy
        for target in targets:
            if quality >= target and str(target) not in reached:
                reached[str(target)] = {
                    "iteration": state.iteration,
                    "train_seconds": state.train_seconds,
                    "wall_seconds": time.perf_counter() - wall_start - eval_seconds,
                }
        if len(reached) == len(targets):
            raise Done

    config = TrainConfig(
        iterations=cap,
        rays_per_step=64 if quick else 1024,
        precision=precision,
        device=device,
        log_every=every,
    )
    with contextlib.suppress(Done):  # the target reached: training stops early
        train(
            model,
            build_rays_table(scene, "train"),
            near=scene.near,
            far=scene.far,
            background=scene.background,
            render=render,
            config=config,
            checkpoint_every=every,
            on_checkpoint=on_checkpoint,
        )
    first = curve[0] if curve else {}
    save_checkpoint(out / "dense.pt", model)
    return (
        {
            "targets": list(targets),
            "reached": reached,
            "curve": curve,
            "rays_per_step": config.rays_per_step,
            "sampling": render.sampling,
            "precision": precision,
            "first_interval_s_per_step": first.get("train_seconds", 0) / max(first.get("iteration", 1), 1),
        },
        model,
        grid.get("state"),
    )


def trials(scene, dense, grid: dict | None, device: str, quick: bool) -> dict:
    from nerf.rays import build_rays_table
    from pruning import STRUCTURED
    from study.run.dense_cache import DenseModel
    from study.run.trial import TrialSettings, execute_trial
    from study.search.space import Budget, trial_config

    as_numpy = {k: v.detach().cpu().numpy() for k, v in dense.state_dict().items()}
    model = DenseModel(
        key="gpu-check",
        path=Path("."),
        model_config=dense.config.to_dict(),
        state=as_numpy,
        fine_model_config=None,
        fine_state=None,
        metrics={},
        cached=False,
        occupancy=None
        if grid is None
        else {k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v for k, v in grid.items()},
    )
    budget = Budget(
        description="gpu check",
        downscale=1,
        rays_per_step=64 if quick else 1024,
        samples=16 if quick else 64,
        dense_iters=0,
        retrain_iters=5 if quick else 2000,
        eval_views=1 if quick else 8,
        trials=0,
    )
    settings = TrialSettings(
        budget=budget,
        seed=0,
        precision="bf16" if device == "cuda" else "fp32",
        sampling="vanilla" if grid is None else "occupancy",
        threads=1,
        use_gpu=device == "cuda",
        checkpoint_every=0,
    )
    configs = [trial_config("edge", threshold=0.05)] + [
        trial_config(s, w)
        for s in (STRUCTURED[:2] if quick else STRUCTURED)
        for w in ((32,) if quick else (64, 128))
    ]
    rays = build_rays_table(scene, "train")
    rows = []
    for config in configs:
        run = execute_trial(config, scene=scene, rays=rays, dense=model, settings=settings, device=device)
        m = run.metrics
        rows.append(
            {
                **config,
                "psnr": m["psnr"],
                "s_per_1k": m["seconds_per_1k_iters"],
                "size_mb": m["size_mb"],
                "params": m["params"],
                "pre_retrain_psnr": m["pre_retrain_psnr"],
            }
        )
    return {"retrain_iters": budget.retrain_iters, "rows": rows}


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        f"# GPU check: {env['device_name']}",
        "",
        f"torch {env['torch']}, CUDA {env['cuda']}, {env['platform']}; wall {report['wall_seconds']:.0f} s.",
        "",
    ]
    tests = report.get("gpu_tests", {})
    lines += [f"- `pytest -m gpu`: {tests.get('summary', tests)}"]
    peak = report.get("peaks", {})
    if "gflops" in peak:
        lines += ["- matmul peak (GFLOP/s): " + ", ".join(f"{k} {v:,.0f}" for k, v in peak["gflops"].items())]
    step = report.get("steps", {})
    if "rows" in step:
        lines += [
            "",
            f"Training step, {step['rays']} rays x {step['samples']} samples, {step['precision']}:",
            "",
            "| width | s / step | GFLOP / step | % of peak | / widest step |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['width']} | {r['seconds_per_step'] * 1e3:.2f} ms | {r['gflop_per_step']:.1f} | "
            f"{(r['percent_of_peak'] or 0):.0f}% | {r['ratio']:.2f} |"
            for r in step["rows"]
        ]
    share = report.get("sharing", {})
    if "speedup_total_over_alone" in share:
        lines += [
            "",
            f"{share['processes']} processes sharing the device (width 64): "
            f"{share['steps_per_s_total']:.1f} steps/s in all against {share['steps_per_s_alone']:.1f} "
            f"alone ({share['speedup_total_over_alone']:.2f}x).",
        ]
    ttq = report.get("time_to_quality", {})
    if "reached" in ttq:
        lines += [
            "",
            f"Time to quality (dense, {ttq['rays_per_step']} rays/step, {ttq['sampling']} sampling, "
            f"{ttq['precision']}):",
        ]
        for target in ttq["targets"]:
            hit = ttq["reached"].get(str(target))
            lines.append(
                f"- {target} dB: "
                + (
                    f"{hit['train_seconds']:.1f} s of training ({hit['iteration']} steps), "
                    f"{hit['wall_seconds']:.1f} s wall"
                    if hit
                    else "not reached"
                )
            )
    tr = report.get("trials", {})
    if "rows" in tr:
        lines += [
            "",
            f"Trials ({tr['retrain_iters']} retraining steps each):",
            "",
            "| strategy | width | threshold | PSNR dB | s / 1k steps | size MB |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['strategy']} | {r.get('width') or '-'} | {r['threshold']:g} | {r['psnr']:.2f} | "
            f"{r['s_per_1k']:.2f} | {r['size_mb']:.3f} |"
            for r in tr["rows"]
        ]
    for name, value in report.items():
        if isinstance(value, dict) and ("error" in value or "skipped" in value):
            lines.append(f"- {name}: {value.get('error') or value.get('skipped')}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from nerf.data.loader import load_scene

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA device is visible; use --device cpu")
    device = torch.device(args.device)
    data = args.data or ("synthetic" if args.quick else str(DEFAULT_DATA))
    scene = load_scene(data, downscale=4 if data == "synthetic" else 1)
    args.out.mkdir(parents=True, exist_ok=True)
    clock = Clock(args.budget_s)
    report: dict = {
        "environment": {
            "device_name": torch.cuda.get_device_name(0)
            if device.type == "cuda"
            else platform.processor() or "cpu",
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "platform": platform.platform(),
            "bf16_supported": torch.cuda.is_bf16_supported() if device.type == "cuda" else None,
            "scene": f"{scene.name} {scene.height}px",
            "quick": args.quick,
        }
    }
    section(report, "gpu_tests", clock, 30, lambda: gpu_tests(args.quick))
    section(report, "peaks", clock, 5, lambda: peaks(device, args.quick))
    section(report, "steps", clock, 20, lambda: steps(scene, device, args.quick, report.get("peaks", {})))
    processes = 2 if args.quick else args.processes
    section(report, "sharing", clock, 40, lambda: sharing(data, args.device, args.quick, processes))
    dense = {}

    def quality() -> dict:
        result, dense["model"], dense["grid"] = time_to_quality(scene, args.device, args.quick, args.out)
        return result

    section(report, "time_to_quality", clock, 60, quality)
    if "model" in dense:
        section(
            report,
            "trials",
            clock,
            90,
            lambda: trials(scene, dense["model"], dense["grid"], args.device, args.quick),
        )
    report["wall_seconds"] = time.perf_counter() - clock.start
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    (args.out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
