"""`study bench`: step time and time-to-quality of the training loop, against the machine's matmul peak.

A step is exactly what `nerf.train.train` does per iteration: draw rays, render them (stratified samples,
encoding, MLP, compositing), backward, Adam. Widths are timed in one process, one after another, so the
ratios between them share the machine's state.

Why one module of ~400 lines: `study bench` is one measurement (step times, matmul peak, the
precision verdict, time to a PSNR, its table), and its numbers are only comparable when taken in one
process by one piece of code; each function is short.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nerf.data.scene import Scene
from nerf.device import PRECISIONS, resolve_device, synchronize
from nerf.evaluate import EvalConfig, evaluate
from nerf.model import ModelConfig, NeRFMLP, flops_per_point
from nerf.occupancy import OccupancyConfig, OccupancyGrid
from nerf.precision import resolve_precision
from nerf.rays import RaysTable, build_rays_table
from nerf.render import RenderConfig
from nerf.silhouettes import Silhouettes
from nerf.train import StepStats, TrainConfig, train


@dataclass(frozen=True)
class StepBenchConfig:
    rays: int = 1024
    """Rays per step."""
    samples: int = 64
    """Coarse samples per ray."""
    widths: tuple[int, ...] = (256, 128, 64)
    """Trunk and feature widths timed; the first is the reference of the ratios."""
    precisions: tuple[str, ...] = ("fp32", "bf16")
    """Each is timed at every width; 'auto' resolves as in training (the faster, measured: nerf.precision)."""
    repeats: int = 5
    """Timed steps per row (the median is reported), after two warm-up steps."""
    device: str = "auto"
    seed: int = 0
    sampling: str = "vanilla"
    """vanilla, or occupancy through a given grid (every width inherits it, as trials do)."""


@dataclass
class StepRow:
    width: int
    precision: str
    seconds_per_step: float
    params: int
    gflop_per_step: float
    """3 x forward FLOPs x points (forward + backward); encoding, sampling, compositing, Adam excluded."""
    peak_fraction: float
    """Achieved model GFLOP/s over the matrix-product peak of the same precision, same run."""
    ratio: float = float("nan")
    """Seconds per step over the first width's, same precision."""
    points_per_ray: float = float("nan")
    """Sample points per ray that reached the MLP (vanilla: the samples per ray)."""
    points_per_s: float = float("nan")
    """MLP points per second of training (forward and backward)."""


@dataclass
class StepBench:
    config: StepBenchConfig
    device: str
    threads: int
    peaks_gflops: dict[str, float]
    rows: list[StepRow] = field(default_factory=list)

    def row(self, width: int, precision: str) -> StepRow:
        return next(r for r in self.rows if r.width == width and r.precision == precision)


def matmul_peak_gflops(precision: str, device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    """Best-of-`repeats` GFLOP/s of a square n x n product: the practical ceiling for MLP work."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def bench_model_config(width: int) -> ModelConfig:
    """The original MLP with trunk and feature layers at `width`: what structured pruning leaves."""
    return ModelConfig().with_widths(trunk=(width,) * 8, feature=width)


def step_seconds(
    scene: Scene,
    width: int,
    precision: str,
    config: StepBenchConfig,
    rays: RaysTable | None = None,
    occupancy: OccupancyGrid | None = None,
) -> tuple[float, float]:
    """Median seconds of one step of `nerf.train.train` itself at `width` (so the benchmark times exactly
    what training runs), on the scene's training rays, and the MLP points per ray; the first two steps
    are warm-up."""
    torch.manual_seed(config.seed)
    model = NeRFMLP(bench_model_config(width))
    seconds: list[float] = []
    result = train(
        model,
        rays if rays is not None else build_rays_table(scene, "train"),
        near=scene.near,
        far=scene.far,
        background=scene.background,
        render=RenderConfig(n_samples=config.samples, sampling=config.sampling),
        occupancy=occupancy,
        config=TrainConfig(
            iterations=config.repeats + 2,
            rays_per_step=config.rays,
            seed=config.seed,
            precision=precision,
            device=config.device,
            log_every=1,
        ),
        on_step=lambda stats: seconds.append(1.0 / stats.iters_per_s),
    )  # a logging step syncs
    return float(np.median(seconds[2:])), result.points_per_ray


def run_step_bench(
    scene: Scene, config: StepBenchConfig = StepBenchConfig(), *, occupancy: OccupancyGrid | None = None
) -> StepBench:
    device = resolve_device(config.device)
    precisions = list(dict.fromkeys(resolve_precision(p, device) for p in config.precisions))
    result = StepBench(
        config=config,
        device=str(device),
        threads=torch.get_num_threads(),
        peaks_gflops={p: matmul_peak_gflops(p, device) for p in precisions},
    )
    rays = build_rays_table(scene, "train")
    for precision in precisions:
        for width in config.widths:
            model_config = bench_model_config(width)
            seconds, per_ray = step_seconds(scene, width, precision, config, rays, occupancy)
            gflop = 3 * flops_per_point(model_config) * config.rays * per_ray / 1e9
            result.rows.append(
                StepRow(
                    width=width,
                    precision=precision,
                    seconds_per_step=seconds,
                    params=sum(p.numel() for p in NeRFMLP(model_config).parameters()),
                    gflop_per_step=gflop,
                    peak_fraction=gflop / seconds / result.peaks_gflops[precision],
                    points_per_ray=per_ray,
                    points_per_s=config.rays * per_ray / seconds,
                )
            )
        reference = result.row(config.widths[0], precision).seconds_per_step
        for row in result.rows:
            if row.precision == precision:
                row.ratio = row.seconds_per_step / reference
    return result


class _TargetReached(Exception):
    pass


@dataclass
class TimeToQuality:
    target_psnr: float
    reached: bool
    train_seconds: float
    """Training wall seconds until the first evaluation at or above the target (evaluations excluded)."""
    iterations: int
    psnr: float
    """Test PSNR of the last evaluation (dB)."""
    curve: list[dict]
    """[{iteration, train_seconds, psnr}] of every evaluation."""


def measure_time_to_psnr(
    scene: Scene,
    *,
    target_psnr: float,
    train_config: TrainConfig,
    render: RenderConfig,
    eval_every: int = 100,
    eval_views: int = 4,
    seed: int = 0,
) -> TimeToQuality:
    """Train a dense model and evaluate it on `eval_views` test views every `eval_every` steps until the
    test PSNR reaches `target_psnr` or the iterations run out."""
    torch.manual_seed(seed)
    model = NeRFMLP(ModelConfig())
    eval_config = EvalConfig(max_views=eval_views)
    curve: list[dict] = []
    start, eval_seconds = time.perf_counter(), 0.0

    def on_step(stats: StepStats) -> None:
        nonlocal eval_seconds
        if stats.iteration % eval_every and stats.iteration != train_config.iterations:
            return
        trained = time.perf_counter() - start - eval_seconds
        t = time.perf_counter()
        quality = evaluate(
            model,
            scene,
            render=render,
            config=eval_config,
            device=train_config.device,
            precision=train_config.precision,
        ).psnr
        eval_seconds += time.perf_counter() - t
        curve.append({"iteration": stats.iteration, "train_seconds": trained, "psnr": quality})
        if quality >= target_psnr:
            raise _TargetReached

    config = (
        train_config
        if eval_every % train_config.log_every == 0
        else TrainConfig(**{**train_config.__dict__, "log_every": eval_every})
    )
    with contextlib.suppress(_TargetReached):  # the target reached: training stops early
        train(
            model,
            build_rays_table(scene, "train"),
            near=scene.near,
            far=scene.far,
            background=scene.background,
            render=render,
            config=config,
            on_step=on_step,
            silhouettes=Silhouettes.of(scene)
            if OccupancyConfig().carves(render.sampling)
            else None,  # as `study dense`
        )
    last = curve[-1]
    return TimeToQuality(
        target_psnr=target_psnr,
        reached=last["psnr"] >= target_psnr,
        train_seconds=last["train_seconds"],
        iterations=last["iteration"],
        psnr=last["psnr"],
        curve=curve,
    )


def bench_command(
    *,
    data: str,
    downscale: int,
    rays: int,
    samples: int,
    sampling: str,
    widths: list[int],
    precisions: tuple[str, ...],
    repeats: int,
    device: str,
    threads: int | None,
    time_to_psnr: float | None,
    ttp_iters: int,
    ttp_rays: int,
    overhead: bool,
    dense_run: Path | None = None,
) -> dict:
    """Everything `study bench` measures, in one process, as one JSON-ready dict.

    Step rows are timed in exactly the precisions asked for, `auto` standing for its verdict: `auto`
    is measured again here (`nerf.precision`, forced) and reported as `precision_auto`, but its
    precision is timed only when asked for (as `auto` or by name), so `--precision fp32` times fp32
    alone. The headline numbers (`precision`, `dense_s_per_iter`, `ratio_w*`) are auto's rows when
    they were timed, else the first precision asked for."""
    import tempfile
    from dataclasses import asdict

    from common.errors import InputError
    from nerf.experiment import DataConfig, machine_info
    from nerf.precision import precision_report

    for name, value, low in (
        ("rays", rays, 1),
        ("samples", samples, 2),
        ("repeats", repeats, 1),
        ("ttp-iters", ttp_iters, 1),
        ("ttp-rays", ttp_rays, 1),
    ):
        if value < low:
            raise InputError(f"--{name} must be >= {low}, got {value}")
    if threads is not None:
        if threads < 1:
            raise InputError(f"--threads must be a positive integer, got {threads}")
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    for p in precisions:
        if p not in PRECISIONS:
            raise InputError(f"unknown precision {p!r}; allowed: {', '.join(PRECISIONS)}")
    if not precisions:
        raise InputError(f"--precision names no precision; allowed: {', '.join(PRECISIONS)}")
    RenderConfig(n_samples=samples, sampling=sampling)  # refuses a bad sampling or sample count
    grid = None
    if sampling == "occupancy":
        if dense_run is None:
            raise InputError(
                "--sampling occupancy times steps through a trained model's occupancy grid; "
                "give --dense-run DIR (a `study dense` folder trained with occupancy sampling)"
            )
        from nerf.checkpoint import load_occupancy, resolve_checkpoint_path

        grid = load_occupancy(resolve_checkpoint_path(dense_run))
        if grid is None:
            raise InputError(
                f"{str(dense_run)!r} holds no occupancy grid; train it with --sampling occupancy"
            )
    verdict = precision_report(dev, force=True)
    auto = verdict["auto"]
    # only what was asked for: timing auto's pick beside an explicit precision added rows (issue 21)
    timed = tuple(dict.fromkeys(auto if p == "auto" else p for p in precisions))
    scene = DataConfig(data, downscale=downscale).load()
    config = StepBenchConfig(
        rays=rays,
        samples=samples,
        widths=tuple(widths),
        precisions=timed,
        repeats=repeats,
        device=device,
        sampling=sampling,
    )
    steps = run_step_bench(scene, config, occupancy=grid)
    headline = auto if auto in timed else timed[0]
    dense = steps.row(widths[0], headline)
    out: dict = {
        "scene": scene.name,
        "image_px": scene.height,
        "rays": rays,
        "samples": samples,
        "sampling": sampling,
        "device": steps.device,
        "threads": steps.threads,
        "precision": headline,
        "precision_auto": auto,
        "precisions_requested": list(precisions),
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
        "machine": machine_info(),
    }
    if time_to_psnr is not None:
        ttp = measure_time_to_psnr(
            scene,
            target_psnr=time_to_psnr,
            render=RenderConfig(n_samples=samples, sampling=sampling),
            train_config=TrainConfig(
                iterations=ttp_iters, rays_per_step=ttp_rays, device=device, log_every=50
            ),
        )
        out["time_to_psnr"] = asdict(ttp)
    if overhead:
        from study.overhead import measure_study_overhead

        with tempfile.TemporaryDirectory() as tmp:
            out["study_overhead"] = measure_study_overhead(Path(tmp) / "overhead")
    return out


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
