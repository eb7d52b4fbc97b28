"""`study bench`: step time and time-to-quality of the training loop, against the machine's matmul peak.

A step is exactly what `nerf.train.train` does per iteration: draw rays, render them (stratified samples,
encoding, MLP, compositing), backward, Adam. Widths are timed in one process, one after another, so the
ratios between them share the machine's state.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from nerf.data.scene import Scene
from nerf.device import resolve_device, synchronize
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
