"""The paper's numbers (Tables 1-4, lego) and ours in the same cells: a cell is the mean and spread of
the trials of one configuration, scored on the test views as the paper reports."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass

PAPER = {  # the paper's numbers (Tables 1-4), lego
    "baseline_psnr": 21.5,
    "edge": {
        0.0: {"kept": 1.00, "psnr": 21.5},
        0.05: {"kept": 0.40, "psnr": 21.3},
        0.1: {"kept": 0.20, "psnr": 20.8},
    },
    "uniform64": {"psnr": 16.5, "size_mb": 0.7},
    "baseline_size_mb": 2.38,
    "importance": {"importance-in": 19.5, "importance-out": 20.0, "importance-prod": 20.0},
    "coreset": {
        256: {"params": 595_000, "size_mb": 2.38, "psnr": 21.5, "min_per_100k": 78.75},
        128: {"params": 288_000, "size_mb": 1.14, "psnr": 21.3, "min_per_100k": 51.25},
        64: {"params": 177_000, "size_mb": 0.7, "psnr": 20.1, "min_per_100k": 46.25},
    },
}


PSNR_TOLERANCE_DB = 1.0
"""A PSNR drop counts as reproduced within max(this, 2 x the spread of ours)."""


@dataclass
class Cell:
    """One configuration over its replicates: mean, sample standard deviation, count."""

    mean: float
    std: float
    n: int
    values: list[float]

    @classmethod
    def of(cls, values: list[float]) -> Cell:
        if not values:
            return cls(math.nan, math.nan, 0, [])
        return cls(
            statistics.fmean(values),
            statistics.stdev(values) if len(values) > 1 else 0.0,
            len(values),
            list(values),
        )

    def fmt(self, digits: int = 2) -> str:
        if self.n == 0:
            return "missing"
        if self.n == 1:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} (n={self.n})"


def select(
    rows: list[dict], strategy: str, *, width: int | None = None, threshold: float | None = None
) -> list[dict]:
    return [
        r
        for r in rows
        if r["status"] == "COMPLETE"
        and r["strategy"] == strategy
        and (width is None or r["width"] == width)
        and (threshold is None or abs((r["threshold"] or 0.0) - threshold) < 1e-9)
    ]


ROW_COLUMN = {"psnr": "test_psnr"}
"""A table's `psnr` is the results table's `test_psnr` (the held-out test views, as the paper reports);
a row without one (recorded before the study scored test views apart) counts as missing."""


def cell(rows: list[dict], key: str, strategy: str, **where) -> Cell:
    column = ROW_COLUMN.get(key, key)
    return Cell.of([float(r[column]) for r in select(rows, strategy, **where) if r.get(column) is not None])


def paper_tables(rows: list[dict], dense_metrics: dict) -> dict:
    """Every number of the report, computed from the results table alone (so a test can recompute it).
    Every `psnr` here is the test PSNR (`ROW_COLUMN`)."""
    baseline = {k: cell(rows, k, "edge", threshold=0.0) for k in ("psnr", "size_mb", "params", "train_time")}
    edge = {
        t: {
            "kept": cell(rows, "kept_fraction", "edge", threshold=t),
            "psnr": cell(rows, "psnr", "edge", threshold=t),
        }
        for t in (0.0, 0.05, 0.1)
    }
    uniform = {k: cell(rows, k, "uniform", width=64) for k in ("psnr", "size_mb", "params")}
    importance = {
        s: cell(rows, "psnr", s, width=64) for s in ("importance-in", "importance-out", "importance-prod")
    }
    coreset = {256: {k: baseline[k] for k in ("params", "size_mb", "psnr", "train_time")}}
    for width in (128, 64):
        coreset[width] = {
            k: cell(rows, k, "coreset", width=width) for k in ("params", "size_mb", "psnr", "train_time")
        }
    for width in coreset:  # train_time is seconds per 1k iterations; the paper gives minutes per 100k
        t = coreset[width]["train_time"]
        coreset[width]["min_per_100k"] = Cell.of([v * 100 / 60 for v in t.values])
    return {
        "dense": dense_metrics,
        "baseline": baseline,
        "edge": edge,
        "uniform64": uniform,
        "importance": importance,
        "coreset": coreset,
    }


def ratio(a: Cell, b: Cell) -> float:
    return a.mean / b.mean if b.n and a.n and b.mean else math.nan


def dense_test_psnr(dense_metrics: dict) -> float:
    """The dense model's test PSNR; metrics cached before the split into validation and test scores
    have only `psnr`, which was the test PSNR then."""
    return float(dense_metrics.get("test_psnr", dense_metrics.get("psnr", math.nan)))


def cell_json(obj):
    if isinstance(obj, Cell):
        return asdict(obj)
    raise TypeError(type(obj))
