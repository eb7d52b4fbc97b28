"""Hypervolume of a study's Pareto front, normalised to [0, 1] against a reference fixed at the start.

The three objectives are `psnr` (validation PSNR in dB, maximised; the held-out test PSNR never enters
a hypervolume), `train_time` (retraining wall seconds per 1,000 iterations, minimised) and `size_mb`
(model size in MB, minimised). A point is a triple
`(psnr, train_time, size_mb)` in those units.

Reference point (the worst corner that still counts) and ideal point (the best corner) come from the
dense model, which every study trains before its first trial, so they are known up front and never move
while the study runs; a hypervolume that is compared across sampler runs, schedulers and resumes must
not depend on what the trials found:

- PSNR: reference = dense (validation) PSNR - 10 dB, ideal = dense PSNR + 10 dB. Ten dB is a factor of ten in mean
  squared error: a pruned model that much worse than dense is useless, and none is that much better.
- train_time and size_mb: reference = 10 % above the dense model's, ideal = 0. A pruned model that is
  slower or larger than dense (beyond measurement noise) has no reason to exist.

Each objective is mapped linearly to a loss in [0, 1] (0 at the ideal, 1 at the reference), so the
hypervolume is the fraction of the unit cube the front dominates: a model 10 dB better than dense at zero
time and zero size scores 1; a model equal to the dense one at zero cost scores 0.5; the dense model
itself scores 0.5 * (1 - 1/1.1)^2 ~ 0.004. Values beyond the ideal are clipped to it; a point that is not
strictly better than the reference in every objective contributes nothing (it would span a box of zero
or negative volume).

The volume itself is Optuna's maintained implementation (`optuna._hypervolume.compute_hypervolume`, exact,
O(n^2) in 3-D); the module is private but kept by Optuna for its own hypervolume-based samplers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from optuna._hypervolume import compute_hypervolume

Point = tuple[float, float, float]
"""(psnr in dB, train_time in s per 1k iterations, size_mb in MB)."""


@dataclass(frozen=True)
class ReferencePoint:
    """Reference (worst counted) and ideal (best) corners of the normalised objective space."""

    psnr: float
    """Reference PSNR in dB (dense - psnr margin); points must exceed it."""
    train_time: float
    """Reference retraining time in s per 1k iterations (dense * (1 + cost margin)); points must beat it."""
    size_mb: float
    """Reference size in MB (dense * (1 + cost margin)); points must beat it."""
    ideal_psnr: float
    """PSNR in dB that normalises to loss 0 (dense + psnr margin); higher values are clipped."""
    ideal_train_time: float = 0.0
    """Retraining time that normalises to loss 0."""
    ideal_size_mb: float = 0.0
    """Size that normalises to loss 0."""

    def __post_init__(self) -> None:
        if not (
            self.ideal_psnr > self.psnr
            and self.ideal_train_time < self.train_time
            and self.ideal_size_mb < self.size_mb
        ):
            raise ValueError(f"the ideal point must be strictly better than the reference: {self}")

    @classmethod
    def from_dense(
        cls,
        *,
        psnr: float,
        train_time: float,
        size_mb: float,
        psnr_margin_db: float = 10.0,
        cost_margin: float = 0.10,
    ) -> ReferencePoint:
        """The study's reference from the dense model's objectives (see the module docstring)."""
        return cls(
            psnr=psnr - psnr_margin_db,
            train_time=train_time * (1 + cost_margin),
            size_mb=size_mb * (1 + cost_margin),
            ideal_psnr=psnr + psnr_margin_db,
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferencePoint:
        return cls(**{k: float(v) for k, v in data.items()})

    def losses(self, points: Sequence[Point]) -> np.ndarray:
        """(n, 3) losses: 0 at the ideal, 1 at the reference, clipped below at 0 (not above)."""
        values = np.asarray(points, dtype=float).reshape(-1, 3)
        ideal = np.array([self.ideal_psnr, self.ideal_train_time, self.ideal_size_mb])
        reference = np.array([self.psnr, self.train_time, self.size_mb])
        return np.maximum((values - ideal) / (reference - ideal), 0.0)


def as_point(row: Mapping[str, Any]) -> Point:
    """A result row (dict with psnr, train_time, size_mb) as a point."""
    return (float(row["psnr"]), float(row["train_time"]), float(row["size_mb"]))


def _counted(losses: np.ndarray) -> np.ndarray:
    # strictly inside the reference in every objective; NaN compares False and drops out too
    return losses[np.all(losses < 1.0, axis=1)]


def hypervolume(points: Sequence[Point], reference: ReferencePoint) -> float:
    """Fraction of the normalised objective cube dominated by the points (in [0, 1])."""
    losses = _counted(reference.losses(points))
    if losses.shape[0] == 0:
        return 0.0
    return float(compute_hypervolume(losses, np.ones(3)))


def hypervolume_contributions(points: Sequence[Point], reference: ReferencePoint) -> list[float]:
    """Exclusive contribution of each point: the volume lost if it alone were removed (0 for dominated
    points, for duplicates of another point and for points outside the reference)."""
    losses = reference.losses(points)
    inside = np.all(losses < 1.0, axis=1)
    contributions = []
    for i, loss in enumerate(losses):
        if not inside[i]:
            contributions.append(0.0)
            continue
        # WFG's exclusive volume: own box minus the part of it the others dominate (them limited to it)
        others = np.maximum(np.delete(losses, i, axis=0)[np.delete(inside, i)], loss)
        covered = float(compute_hypervolume(others, np.ones(3))) if others.shape[0] else 0.0
        contributions.append(max(0.0, float(np.prod(1.0 - loss)) - covered))
    return contributions
