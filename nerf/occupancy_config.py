"""How an occupancy grid (`nerf.occupancy`) is shaped, thresholded and kept up to date during training,
and the density threshold its opacity threshold stands for."""

from __future__ import annotations

import math
from dataclasses import dataclass

from common.errors import InputError


@dataclass(frozen=True)
class OccupancyConfig:
    """How an occupancy grid is shaped, thresholded and kept up to date during training."""

    resolution: int = 128
    """Cells along the longest side of the box at the finest level; the other sides get cells of the same
    size (cubic cells). Lego at 100 px: the box is 7.2 x 7.2 x 5.1 scene units, so 128 gives 0.056-unit
    cells (one sample step is 0.0625 units at 64 samples) and 128 x 128 x 92 = 1.5M cells; 1.1% of them
    are occupied after 250 steps, 0.7% after 1000."""
    coarse_resolution: int = 32
    """Cells along the longest side when the grid is built; resolution must be this times a power of 2.
    The grid doubles its resolution at a refresh that leaves at most 1/8 of its cells occupied, so the
    cells a refresh measures never outnumber the previous level's."""
    opacity_threshold: float = 0.01
    """A cell is occupied while its density would give more than this opacity over one sample step,
    alpha = 1 - exp(-sigma * step) (nerfacc's 0.01). The step is (far - near) / n_samples times the
    longest training ray direction, the widest step a ray takes, so the density threshold is the lowest
    any ray needs (conservative)."""
    warmup_iters: int = 32
    """Vanilla training steps before the grid is first built. Ignored when training starts from a given
    grid. Measured on lego: a grid built from the untrained model (0) masks out cells at random and
    training stalls (training-batch PSNR 16 dB after 450 steps against 20); after 32 steps the model has
    density nearly everywhere (99% of coarse cells), which the refreshes then carve away."""
    refresh_every: int = 32
    """Training steps between grid refreshes (nerfacc: 16). Measured on lego: 16 carves the early grid a
    little faster (9.5 against 17 points per ray at steps 150-200) but doubles the refresh cost once
    the grid has settled, a wash by step 1000 and a loss after; pruned models start from a settled
    grid."""
    coarse_refresh_every: int = 8
    """Training steps between refreshes while the grid is coarser than `resolution`, if fewer than
    `refresh_every` (it starts at `coarse_resolution` and doubles as the model carves the empty space
    out). A coarse refresh measures
    at most 1/8 of the finest grid's cells, so refreshing often costs little there, and it is what lets
    the grid follow the model's carving early in training: a cell the model emptied only turns empty
    after several refreshes (`decay`), and until then every training ray still samples it."""
    decay: float = 0.5
    """Factor (per refresh) on a re-evaluated cell's stored density before the new maximum is taken: a
    cell that turned empty fades out over several refreshes instead of flipping off at one unlucky
    jitter (from 10x the threshold: off at the 4th refresh without density). In (0, 1]; 1 never
    forgets. nerfacc's 0.95 per 16 steps suits 20k-step GPU runs; on the built-in scene 0.8 still left
    51% of the box occupied after 150 steps (20 points per ray of 32), 0.5 left 9% (8 points). The
    record of which cells training sees (`OccupancyGrid.seen`) fades by the same factor."""
    points_per_cell: int = 1
    """Jittered points evaluated in each visited cell per refresh; the cell keeps their maximum."""
    refresh_fraction: float = 1 / 256
    """Share of all cells visited per refresh, drawn at random, besides every occupied cell and the
    neighbours of the visible ones (always re-evaluated): how content away from any surface is found
    again. The first build visits every cell. nerfacc visits a quarter; on a CPU that would cost more
    than training (lego: 370k density evaluations per refresh against about 1,300 training points per
    step once settled); 1/256 is about as many cells as are occupied."""
    carve: bool = True
    """Carve out of the grid, from the first step on, the space that training views whose images have
    alpha see through (`nerf.silhouettes`); no effect on scenes without alpha or forward-facing ones."""
    chunk_points: int = 8_192
    """Points per density forward pass while refreshing (bounds memory, not results). Small enough that a
    layer's activations stay in the CPU's cache: on a 2-core Xeon 78k points took 0.67-0.74 s in chunks of
    8k against 0.90-1.2 s in chunks of 64k (the ReLU and bias passes over 64 MB activations dominated)."""

    def __post_init__(self) -> None:
        checks = [
            (
                "resolution",
                self.resolution,
                isinstance(self.resolution, int) and self.resolution >= 1,
                "an integer >= 1 (cells along the longest side)",
            ),
            (
                "coarse_resolution",
                self.coarse_resolution,
                isinstance(self.coarse_resolution, int)
                and 1 <= self.coarse_resolution <= self.resolution
                and self.resolution % self.coarse_resolution == 0
                and (self.resolution // self.coarse_resolution).bit_count() == 1,
                f"an integer that divides resolution {self.resolution} by a power of 2",
            ),
            ("opacity_threshold", self.opacity_threshold, 0.0 <= self.opacity_threshold < 1.0, "in [0, 1)"),
            (
                "warmup_iters",
                self.warmup_iters,
                isinstance(self.warmup_iters, int) and self.warmup_iters >= 0,
                "an integer >= 0",
            ),
            (
                "refresh_every",
                self.refresh_every,
                isinstance(self.refresh_every, int) and self.refresh_every >= 1,
                "an integer >= 1",
            ),
            (
                "coarse_refresh_every",
                self.coarse_refresh_every,
                isinstance(self.coarse_refresh_every, int) and self.coarse_refresh_every >= 1,
                "an integer >= 1",
            ),
            ("decay", self.decay, 0.0 < self.decay <= 1.0, "in (0, 1]"),
            (
                "points_per_cell",
                self.points_per_cell,
                isinstance(self.points_per_cell, int) and self.points_per_cell >= 1,
                "an integer >= 1",
            ),
            ("refresh_fraction", self.refresh_fraction, 0.0 <= self.refresh_fraction <= 1.0, "in [0, 1]"),
            ("carve", self.carve, isinstance(self.carve, bool), "true or false"),
            (
                "chunk_points",
                self.chunk_points,
                isinstance(self.chunk_points, int) and self.chunk_points >= 1,
                "an integer >= 1",
            ),
        ]
        for name, value, ok, allowed in checks:
            if not ok:
                raise InputError(f"occupancy {name} {value!r} is invalid; it must be {allowed}")

    def carves(self, sampling: str) -> bool:
        """Whether training with this grid config and render `sampling` carves the grid with the training
        views' silhouettes (`nerf.silhouettes`): only a run that keeps a grid, with carving on."""
        return sampling == "occupancy" and self.carve


def density_threshold(opacity: float, step: float) -> float:
    """The density whose opacity over one step of `step` length is `opacity`: -ln(1 - alpha) / step."""
    return -math.log1p(-opacity) / step
