"""The results row: one column list from which the Parquet schema, the MLflow metrics and the rows derive.

A trial reports every scalar metric it measured; the driver keeps the ones listed here. Adding a metric
to the study is one line in `COLUMNS` (and, if the trial does not measure it yet, in the trial): the
row, `results.parquet` and the MLflow child run pick it up with no other edit.

`psnr` and `ssim` are scored on the validation views: the objective. `test_psnr` and `test_ssim` are
scored on the held-out test views and choose nothing; rows recorded before they existed lack them
(missing, not zero).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import pyarrow as pa

Source = Literal["config", "objective", "metric", "run", "derived"]
Status = Literal["COMPLETE", "STOPPED", "FAILED"]
STATUSES: tuple[str, ...] = get_args(Status)
"""COMPLETE: ran its whole retraining budget. STOPPED: the scheduler stopped it at a rung (its final
objectives are unknown; its rung objectives are kept). FAILED: raised or diverged after its retries."""


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    source: Source
    """config: the trial's pruning parameters; objective/metric: measured by the trial (objectives are
    what the study optimises); run: where and when it ran; derived: computed over the whole study."""
    doc: str
    final_only: bool = False
    """Kept only for COMPLETE trials: a stopped or failed trial's value would be a partial one."""

    @property
    def mlflow_metric(self) -> bool:
        numeric = pa.types.is_floating(self.type) or pa.types.is_integer(self.type)
        return self.source in ("objective", "metric") and numeric


COLUMNS: list[Column] = [
    Column("trial_id", pa.string(), "run", "Ray Tune's trial id"),
    Column("status", pa.string(), "run", "COMPLETE | STOPPED | FAILED"),
    Column("strategy", pa.string(), "config", "pruning strategy (pruning.strategies)"),
    Column("width", pa.int32(), "config", "neurons kept per pruned layer (structured strategies)"),
    Column("beta", pa.float64(), "config", "coreset's beta"),
    Column("phi", pa.string(), "config", "coreset's phi"),
    Column("scaling", pa.string(), "config", "coreset's reweighting of kept neurons"),
    Column("threshold", pa.float64(), "config", "edge threshold on |w| (hybrid when structured)"),
    Column("replicate", pa.int64(), "config", "replicate of a grid point (seed offset)"),
    Column("seed", pa.int64(), "config", "seed of pruning and retraining"),
    Column(
        "psnr", pa.float64(), "objective", "validation PSNR after retraining (dB): chosen by", final_only=True
    ),
    Column(
        "train_time",
        pa.float64(),
        "objective",
        "s per 1,000 retraining steps of the network: median step time, warm-up and grid upkeep left out",
        final_only=True,
    ),
    Column("size_mb", pa.float64(), "objective", "bytes of the saved weights / 1e6"),
    Column("ssim", pa.float64(), "metric", "validation SSIM after retraining", final_only=True),
    Column(
        "test_psnr",
        pa.float64(),
        "metric",
        "held-out test PSNR after retraining (dB): chooses nothing",
        final_only=True,
    ),
    Column("test_ssim", pa.float64(), "metric", "held-out test SSIM after retraining", final_only=True),
    Column("sparse_size_mb", pa.float64(), "metric", "smallest sparse encoding of the weights (MB)"),
    Column("params", pa.int64(), "metric", "parameters of the pruned network(s)"),
    Column("nonzero_params", pa.int64(), "metric", "parameters that are not zero"),
    Column("flops_per_point", pa.int64(), "metric", "forward FLOPs per sample point"),
    Column("kept_fraction", pa.float64(), "metric", "surviving weights over the dense network's"),
    Column("pre_retrain_psnr", pa.float64(), "metric", "validation PSNR right after pruning (dB)"),
    Column("iterations", pa.int64(), "metric", "retraining iterations run", final_only=True),
    Column("points_per_ray", pa.float64(), "metric", "sample points per ray that reached the MLP"),
    Column(
        "seconds_per_1k_iters", pa.float64(), "metric", "retraining loop's wall s per 1,000 steps, all in"
    ),
    Column("grid_seconds", pa.float64(), "metric", "wall s of occupancy-grid upkeep during retraining"),
    Column("rung_iteration", pa.int64(), "run", "last rung the trial reached (retraining iterations)"),
    Column("rung_psnr", pa.float64(), "run", "validation-ray PSNR at that rung (dB)"),
    Column("rung_train_time", pa.float64(), "run", "median s per 1k steps up to that rung"),
    Column("sampling", pa.string(), "run", "vanilla | occupancy"),
    Column("precision", pa.string(), "run", "autocast precision of retraining"),
    Column("node_id", pa.string(), "run", "Ray node the trial ran on"),
    Column("device", pa.string(), "run", "cpu | cuda"),
    Column("gpu_ids", pa.string(), "run", "GPUs Ray gave the trial"),
    Column("resumed_from_iteration", pa.int64(), "run", "iteration a restarted trial continued from"),
    Column("trial_seconds", pa.float64(), "run", "Tune's wall seconds of the trial"),
    Column("trial_compute_seconds", pa.float64(), "run", "prune + evaluations + retraining (s)"),
    Column("started_at", pa.float64(), "run", "wall-clock start (unix s)"),
    Column("finished_at", pa.float64(), "run", "wall-clock end (unix s)"),
    Column("worker_pid", pa.int64(), "run", "process that ran it"),
    Column("error", pa.string(), "run", "last line of the error of a failed trial"),
    Column("mlflow_run_id", pa.string(), "derived", "the trial's MLflow child run"),
    Column("pareto", pa.bool_(), "derived", "on the Pareto front of the COMPLETE trials"),
    Column("hypervolume_after", pa.float64(), "derived", "hypervolume of the front once this trial ended"),
]


def column(name: str) -> Column:
    return next(c for c in COLUMNS if c.name == name)


def arrow_schema() -> pa.Schema:
    return pa.schema([(c.name, c.type) for c in COLUMNS])


def cast(value: Any, kind: pa.DataType) -> Any:
    """A JSON value as the column's type: reports carry ints as floats; NaN is missing."""
    if value is None:
        return None
    if pa.types.is_integer(kind):
        return int(value)
    if pa.types.is_floating(kind):
        value = float(value)
        return None if math.isnan(value) else value
    if pa.types.is_boolean(kind):
        return bool(value)
    return str(value)


def build_row(*, trial_id: str, status: Status, config: dict, result: dict, seed: int) -> dict:
    """The row of one ended trial: its config, what it reported (partial values dropped unless COMPLETE)
    and where it ran. Derived columns are filled when the table is built (`results.build_table`)."""
    row: dict[str, Any] = {}
    for c in COLUMNS:
        if c.source == "config":
            value = config.get(c.name)
        elif c.source == "derived":
            continue
        elif c.final_only and status != "COMPLETE":
            value = None
        else:
            value = result.get(c.name)
        row[c.name] = cast(value, c.type)
    row.update(trial_id=trial_id, status=status, replicate=int(config.get("replicate") or 0))
    row["seed"] = seed + row["replicate"]
    if row.get("trial_seconds") is None:
        row["trial_seconds"] = cast(result.get("time_total_s"), pa.float64())
    return row


def mlflow_metrics(row: dict) -> dict[str, float]:
    """The row's measured values that MLflow records as metrics."""
    return {c.name: float(row[c.name]) for c in COLUMNS if c.mlflow_metric and row.get(c.name) is not None}


def table_columns(rows: list[dict]) -> dict[str, list]:
    return {c.name: [cast(r.get(c.name), c.type) for r in rows] for c in COLUMNS}
