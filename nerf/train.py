"""The training loop: random rays from all training images each step, Adam, exponential lr decay."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import numpy as np
import torch

from common.errors import InputError
from nerf.device import (
    COMPILE_MODES,
    autocast,
    compiled_for_training,
    keep_freed_cpu_memory,
    resolve_device,
    synchronize,
)
from nerf.model import NeRFMLP
from nerf.occupancy import OccupancyConfig, OccupancyGrid
from nerf.precision import resolve_precision
from nerf.rays import RaysTable
from nerf.render import RenderConfig, render_rays
from nerf.silhouettes import Silhouettes


@dataclass(frozen=True)
class TrainConfig:
    iterations: int = 2000
    """Optimiser steps."""
    rays_per_step: int = 1024
    """Rays drawn uniformly at random across all training images per step."""
    lr: float = 5e-4
    """Initial Adam learning rate (the original's)."""
    lr_decay_iters: int = 250_000
    """Iterations over which the learning rate falls tenfold (the original: 250k)."""
    precrop_iters: int = 0
    """Early steps that draw rays from the central half of each image only (helps on object scenes)."""
    seed: int = 0
    """Seeds ray sampling and sample jitter; model init is seeded by whoever builds the model."""
    precision: str = "auto"
    """auto | fp32 | bf16 | fp16: autocast dtype of the matrix products (auto: bf16 where native)."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N."""
    threads: int | None = None
    """CPU threads for torch (None: leave torch's default, e.g. what Ray set for a trial)."""
    log_every: int = 25
    """Steps between progress callbacks and loss-curve points."""
    compile: str = "auto"
    """auto | on | off: run the training step's MLP through torch.compile (auto: on CUDA only, where a
    step is launch-bound; on a CPU it was measured slower). A compile that fails falls back to eager."""

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise InputError(f"iterations must be a positive integer, got {self.iterations}")
        if self.rays_per_step < 1:
            raise InputError(f"rays per step must be a positive integer, got {self.rays_per_step}")
        if not self.lr > 0:
            raise InputError(f"learning rate must be > 0, got {self.lr}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"threads must be a positive integer, got {self.threads}")
        if self.compile not in COMPILE_MODES:
            raise InputError(f"unknown compile mode {self.compile!r}; allowed: {', '.join(COMPILE_MODES)}")


@dataclass
class StepStats:
    iteration: int
    loss: float
    psnr: float
    iters_per_s: float


@dataclass
class TrainState:
    """Where a run stands after `iteration` steps: with the model weights, enough to continue it exactly
    (same rays, same jitter, same Adam moments) after the process running it was lost."""

    iteration: int
    optimizer: dict
    scaler: dict
    generator: torch.Tensor
    """State of the generator that draws rays and sample jitter."""
    curve: list[dict]
    train_seconds: float
    """Optimisation wall seconds spent so far (checkpoint writing excluded)."""
    occupancy: dict | None = None
    """The occupancy grid's state_dict (None: vanilla sampling, or still warming up)."""
    occupancy_generator: torch.Tensor | None = None
    """State of the generator that draws the grid refreshes' cells and jitter (occupancy sampling)."""
    mlp_points: int = 0
    """Sample points that went through the MLPs so far."""

    def to_dict(self) -> dict:
        return {
            "iteration": self.iteration,
            "optimizer": self.optimizer,
            "scaler": self.scaler,
            "generator": self.generator,
            "curve": self.curve,
            "train_seconds": self.train_seconds,
            "occupancy": self.occupancy,
            "occupancy_generator": self.occupancy_generator,
            "mlp_points": self.mlp_points,
        }

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        return cls(**d)


@dataclass
class TrainResult:
    iterations: int
    train_seconds: float
    """Wall seconds of the optimisation loop only (data upload and evaluation excluded)."""
    precision: str
    device: str
    curve: list[dict] = field(default_factory=list)
    """[{iteration, loss, psnr, points_per_ray}] every log_every steps (training-batch PSNR; MLP points
    per ray over the steps since the previous point)."""
    sampling: str = "vanilla"
    """The render config's sampling mode the run trained with."""
    mlp_points: int = 0
    """Sample points that went through the MLPs (coarse and fine) over all steps, resumed ones included;
    grid refreshes excluded (they are in occupancy.refresh_points)."""
    rays: int = 0
    """Rays rendered over all steps (iterations x rays_per_step)."""
    occupancy: OccupancyGrid | None = None
    """The occupancy grid as it stood after the last step (None: vanilla, or training ended in warm-up)."""
    occupancy_seconds: float = 0.0
    """Wall seconds of this call's grid builds and refreshes (part of train_seconds)."""
    compiled: bool = False
    """Whether the steps ran through torch.compile (False: eager, asked for or fallen back to)."""

    @property
    def seconds_per_1k(self) -> float:
        return 1000.0 * self.train_seconds / self.iterations

    @property
    def points_per_ray(self) -> float:
        """Mean MLP points per rendered ray over the run (vanilla: samples per ray)."""
        return self.mlp_points / max(self.rays, 1)

    @property
    def points_per_s(self) -> float:
        """MLP points per second of training (forward and backward)."""
        return self.mlp_points / max(self.train_seconds, 1e-9)


OCCUPANCY_SEED_OFFSET = 0x0CC0
"""Added to TrainConfig.seed to seed the grid refreshes' generator (any fixed value: a separate stream)."""


def mse_to_psnr(mse: float) -> float:
    return -10.0 * math.log10(max(mse, 1e-12))


def to_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    # Arrays shared through Ray's object store are read-only; we never write into them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array).to(device)


def make_optimizer(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    # eps=1e-7: TensorFlow's Adam default, which the original was trained with. fused: one kernel for all
    # parameters instead of ~10 per tensor; measured on the 2-core CPU 2.8 -> 0.7 ms per step at width 256
    # and 1.5 -> 0.3 ms at width 64, which mattered once empty-space skipping left ~1k points per step
    # (updates differ from the per-tensor loop by float rounding only, 1e-8 after 5 steps).
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-7, fused=True)


def train(
    model: NeRFMLP,
    rays: RaysTable,
    *,
    near: float,
    far: float,
    background: tuple[float, float, float],
    render: RenderConfig,
    config: TrainConfig,
    fine_model: NeRFMLP | None = None,
    on_step: Callable[[StepStats], None] | None = None,
    resume: TrainState | None = None,
    checkpoint_every: int = 0,
    checkpoint_at: Collection[int] = (),
    on_checkpoint: Callable[[TrainState], None] | None = None,
    occupancy: OccupancyGrid | None = None,
    occupancy_config: OccupancyConfig = OccupancyConfig(),
    silhouettes: Silhouettes | None = None,
) -> TrainResult:
    """Optimise `model` (and `fine_model`) in place on the rays table; returns timings and the curve.

    Every `checkpoint_every` steps, and at the steps in `checkpoint_at` (before the last), `on_checkpoint`
    receives the run's state; the caller saves it with the weights (or scores the model there: the
    early-stopping rungs of a study). `resume` continues from such a state (weights already loaded).

    With render.sampling 'occupancy' only samples in occupied cells of a grid reach the MLP. Without a
    given grid, one is built over the training rays (`OccupancyGrid.covering`) and measured from the
    model after occupancy_config.warmup_iters steps; with the training views' `silhouettes` it is built
    at step 1 with the space they see empty carved out (the warm-up steps sample only the rest), without
    them the warm-up steps are vanilla. A given grid (e.g. the dense model's, for a pruned one) is used
    from step 1 with the config it was built with and is not modified (training refreshes a copy).
    Either way the grid is refreshed from the model every `grid.refresh_every` steps (more often while
    it is coarse); the refreshes count as training time. The result carries the final grid.
    """
    if occupancy is not None and render.sampling != "occupancy":
        raise InputError(
            f"an occupancy grid was given but render sampling is {render.sampling!r}; "
            f"use sampling 'occupancy' to train with it"
        )
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    if device.type == "cpu":
        keep_freed_cpu_memory()
    models = [m for m in (model, fine_model) if m is not None]
    for m in models:
        m.to(device).train()
    params = [p for m in models for p in m.parameters()]
    optimizer = make_optimizer(params, config.lr)
    # what the steps call: the models themselves or compiled views sharing their weights (grid upkeep,
    # checkpoints and evaluation use the eager modules)
    step_model = compiled_for_training(model, device, mode=config.compile, sampling=render.sampling)
    step_fine = (
        compiled_for_training(fine_model, device, mode=config.compile, sampling=render.sampling)
        if fine_model is not None
        else None
    )
    compiled = step_model is not model
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    origins, dirs = to_tensor(rays.origins, device), to_tensor(rays.directions, device)
    viewdirs, colors = to_tensor(rays.viewdirs, device), to_tensor(rays.colors, device)
    center_idx = torch.nonzero(to_tensor(rays.center_mask, device)).squeeze(-1)
    bg = torch.tensor(background, dtype=torch.float32, device=device)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    # The grid's refreshes draw from their own stream, so rays and sample jitter are the very ones a
    # vanilla run of the same seed draws: the two sampling modes compare step for step.
    grid_gen = torch.Generator(device=device).manual_seed(config.seed + OCCUPANCY_SEED_OFFSET)

    result = TrainResult(
        iterations=config.iterations,
        train_seconds=0.0,
        precision=precision,
        device=str(device),
        sampling=render.sampling,
    )
    use_grid = render.sampling == "occupancy"
    grid = occupancy.clone().to(device) if occupancy is not None else None
    grid_config = grid.config if grid is not None else occupancy_config
    first, spent_before = 1, 0.0
    if resume is not None:
        optimizer.load_state_dict(resume.optimizer)
        if resume.scaler:
            scaler.load_state_dict(resume.scaler)
        gen.set_state(resume.generator.cpu())  # generator states are CPU byte tensors, CUDA ones too
        result.curve = list(resume.curve)
        first, spent_before = resume.iteration + 1, resume.train_seconds
        result.mlp_points = resume.mlp_points
        if resume.occupancy is not None:
            grid = OccupancyGrid.from_state_dict(resume.occupancy, device=device)
            grid.silhouettes = silhouettes if occupancy is None else None
        if resume.occupancy_generator is not None:
            grid_gen.set_state(resume.occupancy_generator.cpu())
    result.rays = (first - 1) * config.rays_per_step
    # the curve's points per ray covers the steps since its previous point, resumed runs included
    logged = result.curve[-1] if result.curve else {"iteration": 0, "mlp_points": 0}
    logged_points, logged_rays = logged.get("mlp_points", 0), logged["iteration"] * config.rays_per_step

    def step_forward(
        mlp: torch.nn.Module, fine: torch.nn.Module | None, idx: torch.Tensor, grid: OccupancyGrid | None
    ):
        with autocast(device, precision):
            return render_rays(
                mlp,
                origins[idx],
                dirs[idx],
                viewdirs[idx],
                near=near,
                far=far,
                config=render,
                background=bg,
                perturb=True,
                generator=gen,
                fine_model=fine,
                occupancy=grid,
            )

    synchronize(device)
    start = last_log = time.perf_counter()
    paused = 0.0  # seconds spent in on_checkpoint, not training
    for it in range(first, config.iterations + 1):
        if use_grid:
            # Upkeep at the start of a step, from the model after the previous one, so that a state saved
            # after step k holds every update up to k and a resumed run repeats the schedule exactly.
            # the model's density means something: a given grid's model is trained, a fresh one warmed up
            warm = occupancy is not None or it > grid_config.warmup_iters
            build = grid is None and (warm or silhouettes is not None)
            measure = warm and (
                (occupancy is None and it == grid_config.warmup_iters + 1)  # the first measurement
                or (grid is not None and it > 1 and (it - 1) % grid.refresh_every == 0)
            )
            if build or measure:
                synchronize(device)  # only every refresh_every steps: times the upkeep, not the step before
                upkeep = time.perf_counter()
                if grid is None:
                    grid = OccupancyGrid.covering(
                        rays,
                        near=near,
                        far=far,
                        n_samples=render.n_samples,
                        config=grid_config,
                        device=device,
                        silhouettes=silhouettes,
                    )
                if measure:  # in float32 whatever the precision: the grid decides what trains next
                    grid.refresh(model, generator=grid_gen, fine_model=fine_model)
                synchronize(device)
                result.occupancy_seconds += time.perf_counter() - upkeep
        if it <= config.precrop_iters and len(center_idx) > 0:
            pick = torch.randint(len(center_idx), (config.rays_per_step,), generator=gen, device=device)
            idx = center_idx[pick]
        else:
            idx = torch.randint(len(origins), (config.rays_per_step,), generator=gen, device=device)
        lr = config.lr * 0.1 ** ((it - 1) / config.lr_decay_iters)
        for group in optimizer.param_groups:
            group["lr"] = lr

        if compiled and it == first:
            # compilation happens at the first call; where it fails (no compiler, an unsupported op),
            # training goes on eagerly from the same generator state, as if never compiled
            before = gen.get_state()
            try:
                out = step_forward(step_model, step_fine, idx, grid)
            except Exception as error:  # any compiler failure means eager
                warnings.warn(
                    f"torch.compile failed ({type(error).__name__}: {error}); training eagerly", stacklevel=2
                )
                step_model, step_fine, compiled = model, fine_model, False
                gen.set_state(before)
                out = step_forward(step_model, step_fine, idx, grid)
        else:
            out = step_forward(step_model, step_fine, idx, grid)
        if grid is not None and out.sample_cells is not None:
            grid.observe(out.sample_cells, out.sample_weights)  # type: ignore[arg-type]
        result.mlp_points += out.mlp_points
        result.rays += config.rays_per_step
        target = colors[idx]
        mse = torch.mean((out.rgb - target) ** 2)
        loss = mse if out.rgb_coarse is None else mse + torch.mean((out.rgb_coarse - target) ** 2)

        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

        if it % config.log_every == 0 or it == config.iterations:
            mse_value = float(mse.detach())  # a device sync: only on logging steps
            if not math.isfinite(mse_value):
                raise FloatingPointError(f"training diverged at iteration {it}: loss is {mse_value}")
            now = time.perf_counter()
            span = it % config.log_every or config.log_every
            stats = StepStats(
                iteration=it,
                loss=float(loss.detach()),
                psnr=mse_to_psnr(mse_value),
                iters_per_s=span / max(now - last_log, 1e-9),
            )
            last_log = now
            result.curve.append(
                {
                    "iteration": it,
                    "loss": stats.loss,
                    "psnr": stats.psnr,
                    "points_per_ray": (result.mlp_points - logged_points) / max(result.rays - logged_rays, 1),
                    "mlp_points": result.mlp_points,
                }
            )
            logged_points, logged_rays = result.mlp_points, result.rays
            if on_step is not None:
                on_step(stats)
        if (
            on_checkpoint is not None
            and ((checkpoint_every and it % checkpoint_every == 0) or it in checkpoint_at)
            and it < config.iterations
        ):
            synchronize(device)
            pause = time.perf_counter()
            on_checkpoint(
                TrainState(
                    iteration=it,
                    optimizer=optimizer.state_dict(),
                    scaler=scaler.state_dict(),
                    generator=gen.get_state(),
                    curve=list(result.curve),
                    train_seconds=spent_before + pause - start - paused,
                    occupancy=grid.state_dict() if grid is not None else None,
                    occupancy_generator=grid_gen.get_state() if use_grid else None,
                    mlp_points=result.mlp_points,
                )
            )
            paused += time.perf_counter() - pause
    synchronize(device)
    result.train_seconds = spent_before + time.perf_counter() - start - paused
    result.occupancy = grid
    result.compiled = compiled
    return result
