"""The training loop: random rays from all training images each step, Adam, exponential lr decay."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Collection

import numpy as np
import torch

from common.errors import InputError
from nerf.device import autocast, compiled_for_training, keep_freed_cpu_memory, resolve_device, synchronize
from nerf.model import NeRFMLP
from nerf.occupancy import OccupancyConfig, OccupancyGrid
from nerf.precision import resolve_precision
from nerf.rays import RaysTable
from nerf.render import RenderConfig, render_rays
from nerf.silhouettes import Silhouettes
from nerf.train_types import StepStats, TrainConfig, TrainResult, TrainState

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


class _Trainer:
    """What `train` carries from one step to the next: the models and their optimiser, the training rays
    on the device, the two generators, the occupancy grid, the clock, and the result it fills in."""

    def __init__(
        self,
        model: NeRFMLP,
        fine_model: NeRFMLP | None,
        rays: RaysTable,
        config: TrainConfig,
        render: RenderConfig,
        *,
        bounds: tuple[float, float, tuple[float, float, float]],
        grid: tuple[OccupancyGrid | None, OccupancyConfig, Silhouettes | None],
    ) -> None:
        """bounds: near, far and the background colour; grid: the occupancy grid given (or None), its
        config and the silhouettes that carve a new one."""
        near, far, background = bounds
        occupancy, occupancy_config, silhouettes = grid
        self.device = device = resolve_device(config.device)
        self.precision = resolve_precision(config.precision, device)
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        if device.type == "cpu":
            keep_freed_cpu_memory()
        self.model, self.fine_model = model, fine_model
        models = [m for m in (model, fine_model) if m is not None]
        for m in models:
            m.to(device).train()
        self.optimizer = make_optimizer([p for m in models for p in m.parameters()], config.lr)
        # what the steps call: the models themselves or compiled views sharing their weights (grid upkeep,
        # checkpoints and evaluation use the eager modules)
        self.step_model = compiled_for_training(model, device, mode=config.compile, sampling=render.sampling)
        self.step_fine = (
            compiled_for_training(fine_model, device, mode=config.compile, sampling=render.sampling)
            if fine_model is not None
            else None
        )
        self.compiled = self.step_model is not model
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")

        self.rays, self.near, self.far, self.render, self.config = rays, near, far, render, config
        self.origins, self.dirs = to_tensor(rays.origins, device), to_tensor(rays.directions, device)
        self.viewdirs, self.colors = to_tensor(rays.viewdirs, device), to_tensor(rays.colors, device)
        self.center_idx = torch.nonzero(to_tensor(rays.center_mask, device)).squeeze(-1)
        self.bg = torch.tensor(background, dtype=torch.float32, device=device)
        self.gen = torch.Generator(device=device).manual_seed(config.seed)
        # The grid's refreshes draw from their own stream, so rays and sample jitter are the very ones a
        # vanilla run of the same seed draws: the two sampling modes compare step for step.
        self.grid_gen = torch.Generator(device=device).manual_seed(config.seed + OCCUPANCY_SEED_OFFSET)

        self.result = TrainResult(
            iterations=config.iterations,
            train_seconds=0.0,
            precision=self.precision,
            device=str(device),
            sampling=render.sampling,
        )
        self.use_grid = render.sampling == "occupancy"
        self.given_grid = occupancy is not None
        self.grid = occupancy.clone().to(device) if occupancy is not None else None
        self.grid_config = self.grid.config if self.grid is not None else occupancy_config
        self.silhouettes = silhouettes
        self.first, self.spent_before = 1, 0.0

    def restore(self, resume: TrainState) -> None:
        """Continue after step resume.iteration of an earlier run (whose weights are already loaded)."""
        self.optimizer.load_state_dict(resume.optimizer)
        if resume.scaler:
            self.scaler.load_state_dict(resume.scaler)
        self.gen.set_state(resume.generator.cpu())  # generator states are CPU byte tensors, CUDA ones too
        self.result.curve = list(resume.curve)
        self.result.step_windows = list(resume.step_windows)
        self.first, self.spent_before = resume.iteration + 1, resume.train_seconds
        self.result.mlp_points = resume.mlp_points
        if resume.occupancy is not None:
            self.grid = OccupancyGrid.from_state_dict(resume.occupancy, device=self.device)
            self.grid.silhouettes = self.silhouettes if not self.given_grid else None
        if resume.occupancy_generator is not None:
            self.grid_gen.set_state(resume.occupancy_generator.cpu())

    def start_clock(self) -> None:
        """Start timing at the run's first step (after a restore: the step after the saved one)."""
        self.result.rays = (self.first - 1) * self.config.rays_per_step
        # the curve's points per ray covers the steps since its previous point, resumed runs included
        logged = self.result.curve[-1] if self.result.curve else {"iteration": 0, "mlp_points": 0}
        self.logged_points = logged.get("mlp_points", 0)
        self.logged_rays = logged["iteration"] * self.config.rays_per_step
        synchronize(self.device)
        self.started = self.last_log = time.perf_counter()
        self.paused = 0.0  # seconds spent in on_checkpoint, not training
        # the step-time window since the last log: its first step, and the seconds in it that are not
        # steps (grid upkeep, checkpoint pauses)
        self.window_first, self.window_excluded = self.first, 0.0

    def seconds(self, now: float) -> float:
        """Training seconds up to `now`, resumed ones included, checkpoint pauses excluded."""
        return self.spent_before + now - self.started - self.paused

    def keep_grid(self, it: int) -> None:
        """Build or refresh the occupancy grid where its schedule says so, on the training clock."""
        if not self.use_grid:
            return
        # Upkeep at the start of a step, from the model after the previous one, so that a state saved
        # after step k holds every update up to k and a resumed run repeats the schedule exactly.
        # the model's density means something: a given grid's model is trained, a fresh one warmed up
        warm = self.given_grid or it > self.grid_config.warmup_iters
        build = self.grid is None and (warm or self.silhouettes is not None)
        measure = warm and (
            (not self.given_grid and it == self.grid_config.warmup_iters + 1)  # the first measurement
            or (self.grid is not None and it > 1 and (it - 1) % self.grid.refresh_every == 0)
        )
        if not (build or measure):
            return
        synchronize(self.device)  # only every refresh_every steps: times the upkeep, not the step before
        upkeep = time.perf_counter()
        if self.grid is None:
            self.grid = OccupancyGrid.covering(
                self.rays,
                near=self.near,
                far=self.far,
                n_samples=self.render.n_samples,
                config=self.grid_config,
                device=self.device,
                silhouettes=self.silhouettes,
            )
        if measure:  # in float32 whatever the precision: the grid decides what trains next
            self.grid.refresh(self.model, generator=self.grid_gen, fine_model=self.fine_model)
        synchronize(self.device)
        spent = time.perf_counter() - upkeep
        self.result.occupancy_seconds += spent
        self.window_excluded += spent

    def draw_batch(self, it: int) -> torch.Tensor:
        """The step's rays, as indices into the table: from the image centres while precropping."""
        n = self.config.rays_per_step
        if it <= self.config.precrop_iters and len(self.center_idx) > 0:
            pick = torch.randint(len(self.center_idx), (n,), generator=self.gen, device=self.device)
            return self.center_idx[pick]
        return torch.randint(len(self.origins), (n,), generator=self.gen, device=self.device)

    def step(self, it: int, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on the rays `idx`; returns the loss and the (fine) rendering's MSE."""
        lr = self.config.lr * 0.1 ** ((it - 1) / self.config.lr_decay_iters)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        out = self._compiling_forward(idx) if self.compiled and it == self.first else self._forward(idx)
        if self.grid is not None and out.sample_cells is not None:
            self.grid.observe(out.sample_cells, out.sample_weights)  # type: ignore[arg-type]
        self.result.mlp_points += out.mlp_points
        self.result.rays += self.config.rays_per_step
        target = self.colors[idx]
        mse = torch.mean((out.rgb - target) ** 2)
        loss = mse if out.rgb_coarse is None else mse + torch.mean((out.rgb_coarse - target) ** 2)

        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss, mse

    def _forward(self, idx: torch.Tensor):
        with autocast(self.device, self.precision):
            return render_rays(
                self.step_model,
                self.origins[idx],
                self.dirs[idx],
                self.viewdirs[idx],
                near=self.near,
                far=self.far,
                config=self.render,
                background=self.bg,
                perturb=True,
                generator=self.gen,
                fine_model=self.step_fine,
                occupancy=self.grid,
            )

    def _compiling_forward(self, idx: torch.Tensor):
        # compilation happens at the first call; where it fails (no compiler, an unsupported op),
        # training goes on eagerly from the same generator state, as if never compiled
        before = self.gen.get_state()
        try:
            return self._forward(idx)
        except Exception as error:  # any compiler failure means eager
            warnings.warn(  # stacklevel: attributed to train's caller
                f"torch.compile failed ({type(error).__name__}: {error}); training eagerly", stacklevel=4
            )
            self.step_model, self.step_fine, self.compiled = self.model, self.fine_model, False
            self.gen.set_state(before)
            return self._forward(idx)

    def log(self, it: int, loss: torch.Tensor, mse: torch.Tensor) -> StepStats:
        """The step's stats, also appended to the curve."""
        mse_value = float(mse.detach())  # a device sync: only on logging steps
        if not math.isfinite(mse_value):
            raise FloatingPointError(f"training diverged at iteration {it}: loss is {mse_value}")
        now = time.perf_counter()
        span = it % self.config.log_every or self.config.log_every
        stats = StepStats(
            iteration=it,
            loss=float(loss.detach()),
            psnr=mse_to_psnr(mse_value),
            iters_per_s=span / max(now - self.last_log, 1e-9),
        )
        steps = it - self.window_first + 1
        step_seconds = (now - self.last_log - self.window_excluded) / max(steps, 1)
        cold = self.window_first == self.first
        self.last_log, self.window_first, self.window_excluded = now, it + 1, 0.0
        r = self.result
        r.curve.append(
            {
                "iteration": it,
                "loss": stats.loss,
                "psnr": stats.psnr,
                "points_per_ray": (r.mlp_points - self.logged_points) / max(r.rays - self.logged_rays, 1),
                "mlp_points": r.mlp_points,
            }
        )
        r.step_windows.append({"iteration": it, "step_seconds": step_seconds, "cold": cold})
        self.logged_points, self.logged_rays = r.mlp_points, r.rays
        return stats

    def checkpoint(self, it: int, on_checkpoint: Callable[[TrainState], None]) -> None:
        """Hand the state after step `it` to `on_checkpoint`, off the training clock."""
        synchronize(self.device)
        pause = time.perf_counter()
        on_checkpoint(
            TrainState(
                iteration=it,
                optimizer=self.optimizer.state_dict(),
                scaler=self.scaler.state_dict(),
                generator=self.gen.get_state(),
                curve=list(self.result.curve),
                train_seconds=self.seconds(pause),
                occupancy=self.grid.state_dict() if self.grid is not None else None,
                occupancy_generator=self.grid_gen.get_state() if self.use_grid else None,
                mlp_points=self.result.mlp_points,
                step_windows=list(self.result.step_windows),
            )
        )
        spent = time.perf_counter() - pause
        self.paused += spent
        self.window_excluded += spent

    def finish(self) -> TrainResult:
        """The result after the last step, with the final grid."""
        synchronize(self.device)
        self.result.train_seconds = self.seconds(time.perf_counter())
        self.result.occupancy = self.grid
        self.result.compiled = self.compiled
        return self.result


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
    trainer = _Trainer(
        model,
        fine_model,
        rays,
        config,
        render,
        bounds=(near, far, background),
        grid=(occupancy, occupancy_config, silhouettes),
    )
    if resume is not None:
        trainer.restore(resume)
    trainer.start_clock()
    for it in range(trainer.first, config.iterations + 1):
        trainer.keep_grid(it)
        idx = trainer.draw_batch(it)
        loss, mse = trainer.step(it, idx)
        if it % config.log_every == 0 or it == config.iterations:
            stats = trainer.log(it, loss, mse)
            if on_step is not None:
                on_step(stats)
        if (
            on_checkpoint is not None
            and ((checkpoint_every and it % checkpoint_every == 0) or it in checkpoint_at)
            and it < config.iterations
        ):
            trainer.checkpoint(it, on_checkpoint)
    return trainer.finish()
