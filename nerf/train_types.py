"""The training loop's records: its config, the stats of a logged step, the state that resumes a run,
and the result of one."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import torch

from common.errors import InputError
from nerf.device import COMPILE_MODES
from nerf.occupancy import OccupancyGrid


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
    step_windows: list[dict] = field(default_factory=list)
    """The run's step times so far (TrainResult.step_windows)."""

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
            "step_windows": self.step_windows,
        }

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        return cls(**d)


def median_step_seconds(windows: list[dict]) -> float | None:
    """Median over the step windows (TrainResult.step_windows) of the mean seconds per step, the cold
    first window of each process left out (unless nothing else is there), grid upkeep and checkpoint
    pauses excluded: what a step of this network costs here, not how the run's upkeep, warm-up and
    neighbours happened to fall. None for a run without step times (a state written before them)."""
    timed = [c for c in windows if c.get("step_seconds") is not None]
    warm = [c["step_seconds"] for c in timed if not c.get("cold")]
    values = warm or [c["step_seconds"] for c in timed]
    return statistics.median(values) if values else None


def network_step_seconds(windows: list[dict], train_seconds: float, steps: int) -> float:
    """The network's seconds per step: `median_step_seconds` of the windows, or the loop's mean where
    there are none (a run, or a saved state, from before step times were recorded)."""
    median = median_step_seconds(windows)
    return train_seconds / steps if median is None else median


@dataclass
class TrainResult:
    iterations: int
    train_seconds: float
    """Wall seconds of the optimisation loop only (data upload and evaluation excluded)."""
    precision: str
    device: str
    curve: list[dict] = field(default_factory=list)
    """[{iteration, loss, psnr, points_per_ray}] every log_every steps (training-batch PSNR; MLP points
    per ray over the steps since the previous point): what was learnt, the same for a seed every time."""
    step_windows: list[dict] = field(default_factory=list)
    """[{iteration, step_seconds, cold}] at the same steps: the mean seconds of one step since the
    previous point, grid upkeep and checkpoint pauses left out; `cold`: the first window of a process,
    which pays the allocations and kernel choices. How long it took, which no two runs share."""
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
        """Wall seconds of the whole loop per 1k steps (warm-up and grid upkeep included)."""
        return 1000.0 * self.train_seconds / self.iterations

    @property
    def step_seconds(self) -> float:
        """The network's time: the median over the run's logged windows of one step's seconds (see
        `median_step_seconds`); the whole loop's mean where the curve has no step times."""
        return network_step_seconds(self.step_windows, self.train_seconds, self.iterations)

    @property
    def points_per_ray(self) -> float:
        """Mean MLP points per rendered ray over the run (vanilla: samples per ray)."""
        return self.mlp_points / max(self.rays, 1)

    @property
    def points_per_s(self) -> float:
        """MLP points per second of training (forward and backward)."""
        return self.mlp_points / max(self.train_seconds, 1e-9)
