"""The study's three objectives and dominance between trials, defined once: the names Optuna, MLflow,
the table, the early-stopping scheduler and the hypervolume give them, which way each is better, and
the NSGA-II order (non-dominated fronts, then crowding distance) the front and MOASHA's rungs use."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

OBJECTIVES = ("psnr", "train_time", "size_mb")
"""Validation PSNR (dB), retraining seconds per 1k iterations, saved size (MB)."""
MODES = ("max", "min", "min")
"""PSNR is maximised, training time and size minimised."""


def signs(modes: Sequence[str] = MODES) -> np.ndarray:
    """Per objective, -1 where it is maximised: values times signs are all minimised."""
    return np.array([-1.0 if mode == "max" else 1.0 for mode in modes])


SIGNS = tuple(-1.0 if mode == "max" else 1.0 for mode in MODES)


def dominates(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """Trial a is no worse than b in every objective (psnr up, train_time down, size_mb down) and better in
    one."""
    # plain floats, not arrays: the replays call this O(n^2) times per step
    pairs = [(sign * float(a[k]), sign * float(b[k])) for k, sign in zip(OBJECTIVES, SIGNS, strict=True)]
    return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)


def nondominated_sort(objs: np.ndarray) -> list[list[int]]:
    """Fronts of row indices (ascending within a front) of an (n, m) array, all objectives minimised."""
    objs = np.asarray(objs, dtype=float)
    n = objs.shape[0]
    if n == 0:
        return []
    no_worse = np.all(objs[:, None, :] <= objs[None, :, :], axis=2)
    better = np.any(objs[:, None, :] < objs[None, :, :], axis=2)
    dominating = no_worse & better  # [i, j]: i dominates j
    dominators = dominating.sum(axis=0)
    remaining = np.ones(n, dtype=bool)
    fronts: list[list[int]] = []
    while remaining.any():
        front = np.flatnonzero(remaining & (dominators == 0))
        fronts.append(front.tolist())
        remaining[front] = False
        dominators = dominators - dominating[front].sum(axis=0)
    return fronts


def crowding_distance(objs: np.ndarray, front: Sequence[int]) -> np.ndarray:
    """NSGA-II crowding distance of each member of `front` (in its order): the sum over objectives of
    the normalised gap between its neighbours; the extremes of every objective are infinite."""
    values = np.asarray(objs, dtype=float)[list(front)]
    distance = np.zeros(len(front))
    if len(front) <= 2:
        return np.full(len(front), np.inf)
    for column in values.T:
        order = np.argsort(column, kind="stable")  # stable: equal values keep arrival order
        span = column[order[-1]] - column[order[0]]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (column[order[2:]] - column[order[:-2]]) / span
    return distance


def rank(objs: np.ndarray) -> list[int]:
    """Row indices best first: front, then crowding distance (larger first), then row (arrival) order.
    Rows with a non-finite objective (a diverged trial) come last, in arrival order."""
    objs = np.asarray(objs, dtype=float)
    finite = np.flatnonzero(np.all(np.isfinite(objs), axis=1))
    order: list[int] = []
    for front in nondominated_sort(objs[finite]):
        crowding = crowding_distance(objs[finite], front)
        order += [int(finite[front[j]]) for j in sorted(range(len(front)), key=lambda j: (-crowding[j], j))]
    finite_rows = set(finite.tolist())
    return order + [i for i in range(objs.shape[0]) if i not in finite_rows]


def on_first_front(objs: np.ndarray, index: int) -> bool:
    """No other row (finite) dominates row `index` (all objectives minimised)."""
    row = objs[index]
    if not np.all(np.isfinite(row)):
        return False
    others = objs[np.all(np.isfinite(objs), axis=1)]
    dominated = np.all(others <= row, axis=1) & np.any(others < row, axis=1)
    return not bool(dominated.any())
