"""The tabular benchmark's table (after Syne Tune's and HPOBench's tabulated benchmarks): its format,
reading and writing it, a synthetic one for tests, the row a proposal runs, and the table's own search
space. Every configuration of a grid was run once for real, at the full budget, with its objectives
recorded at each rung; `study.search.replay` replays whole studies against it.

Table (one row per configuration; pyarrow, saved as Parquet):

- config columns `strategy`, `width` (null for edge), `beta`, `phi`, `scaling` (null unless coreset),
  `threshold`; `key` = `study.search.space.config_key(config)`;
- `psnr` (dB, validation PSNR at the full budget: the study's objective; tables measured before the
  study scored on validation views hold the test PSNR here), `train_time` (s per 1k iterations at the
  full budget),
  `size_mb`, `seconds` (wall seconds of the whole trial at the full budget), `retrain_iters`;
- per rung: `rung_iterations` (list<int64>), `rung_psnr`, `rung_train_time` (list<float64>): the objectives
  the trial reported at those iterations (size is known before training and does not change);
- schema metadata, JSON under b"bench": `dense` (psnr, train_time, size_mb of the dense model, which fixes
  the reference point), `eta` (the rungs' layout), `command` and `machine` (how the table was measured).

A proposal whose canonical key is no row (a conditional combination the grid lacks, e.g. a hybrid
threshold not measured at that width) runs the nearest row of the same strategy (distance: |log2 width
ratio| + |threshold gap| / 0.05 + 1 per differing phi or scaling + |log beta ratio|; ties: table order).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from study.search.hypervolume import ReferencePoint
from study.search.moasha import rung_milestones
from study.search.space import STRATEGIES, canonical_config, config_key, trial_config

if TYPE_CHECKING:
    import optuna

BENCH_KEY = b"bench"
CONFIG_COLUMNS = ("strategy", "width", "beta", "phi", "scaling", "threshold")
SCHEMA = pa.schema(
    [
        ("strategy", pa.string()),
        ("width", pa.int64()),
        ("beta", pa.float64()),
        ("phi", pa.string()),
        ("scaling", pa.string()),
        ("threshold", pa.float64()),
        ("key", pa.string()),
        ("psnr", pa.float64()),
        ("train_time", pa.float64()),
        ("size_mb", pa.float64()),
        ("seconds", pa.float64()),
        ("retrain_iters", pa.int64()),
        ("rung_iterations", pa.list_(pa.int64())),
        ("rung_psnr", pa.list_(pa.float64())),
        ("rung_train_time", pa.list_(pa.float64())),
    ]
)
THRESHOLD_STEP = 0.05
"""Threshold gap counted as one unit of distance when snapping a proposal to a row."""


# --- the table ----------------------------------------------------------------------------------------


def bench_metadata(table: pa.Table) -> dict[str, Any]:
    """The JSON under b"bench" in the table's schema metadata."""
    raw = (table.schema.metadata or {}).get(BENCH_KEY)
    if raw is None:
        raise ValueError(
            "the table has no b'bench' schema metadata (dense objectives, eta, command, machine)"
        )
    return json.loads(raw)


def reference_point(table: pa.Table) -> ReferencePoint:
    """The table's box: the dense model's PSNR and size, and its time as the rows were timed (their
    concurrency, their threads). A table whose metadata holds the dense time taken alone (before
    bench/build_table.py timed it beside its neighbours) takes it from its rows of the dense network
    itself (edge pruning at threshold 0), which were timed under those conditions."""
    dense = bench_metadata(table)["dense"]
    unpruned = [
        r["train_time"] for r in table.to_pylist() if r["strategy"] == "edge" and r["threshold"] == 0.0
    ]
    train_time = max([dense["train_time"], *unpruned])
    return ReferencePoint.from_dense(psnr=dense["psnr"], train_time=train_time, size_mb=dense["size_mb"])


def with_metadata(
    table: pa.Table, *, dense: Mapping[str, float], eta: float, command: str, machine: Mapping[str, Any]
) -> pa.Table:
    """The table with its bench metadata set (what `load_table` and `simulate` need)."""
    meta = {
        "dense": {k: float(dense[k]) for k in ("psnr", "train_time", "size_mb")},
        "eta": eta,
        "command": command,
        "machine": dict(machine),
    }
    return table.replace_schema_metadata({**(table.schema.metadata or {}), BENCH_KEY: json.dumps(meta)})


def load_table(path: Path | str) -> pa.Table:
    """Reads a bench table and checks its columns and metadata."""
    table = pq.read_table(path)
    missing = [name for name in SCHEMA.names if name not in table.column_names]
    if missing:
        raise ValueError(f"{path}: bench table lacks columns {missing}")
    bench_metadata(table)
    return table


def make_synthetic_table(n: int, *, seed: int, retrain_iters: int = 1000, eta: float = 3) -> pa.Table:
    """`n` distinct configurations of a plausible grid (up to 171) with made-up but NeRF-shaped results:
    PSNR rises with retraining iterations and with width, time and size grow with width, edge pruning
    saves size but no time; rung values are noisy so rung rankings only roughly predict final ones."""
    grid = _synthetic_grid()
    if not 1 <= n <= len(grid):
        raise ValueError(f"n must be in 1..{len(grid)}, got {n}")
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(grid), size=n, replace=False).tolist())
    rungs = list(rung_milestones(retrain_iters, eta))
    rows = [_synthetic_row(grid[i], rng, retrain_iters=retrain_iters, rungs=rungs) for i in chosen]
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    return with_metadata(
        table,
        dense=_DENSE,
        eta=eta,
        command=f"make_synthetic_table({n}, seed={seed})",
        machine={"synthetic": True},
    )


_DENSE = {"psnr": 25.0, "train_time": 20.0, "size_mb": 2.4}
_DENSE_WIDTH = 256
_QUALITY = {
    "uniform": -0.6,
    "importance-in": -0.3,
    "importance-out": -0.35,
    "importance-prod": -0.1,
    "coreset": 0.0,
}


def _synthetic_grid() -> list[dict[str, Any]]:
    widths = [16, 32, 48, 64, 96, 128, 160, 192, 224]
    grid = [trial_config("edge", threshold=t) for t in np.round(np.linspace(0.0, 0.2, 9), 3).tolist()]
    for strategy in ("uniform", "importance-in", "importance-out", "importance-prod"):
        grid += [trial_config(strategy, w, threshold=t) for w in widths for t in (0.0, 0.03, 0.06)]
    coreset = [("relu", 3.0), ("tanh", 0.5), ("tanh", 3.0)]
    grid += [
        trial_config("coreset", w, beta=b, phi=p, scaling=s)
        for w in widths
        for p, b in coreset
        for s in ("unbiased", "none")
    ]
    return grid


def _synthetic_row(
    config: dict[str, Any], rng: np.random.Generator, *, retrain_iters: int, rungs: list[int]
) -> dict[str, Any]:
    strategy, threshold = config["strategy"], config["threshold"]
    kept = 1.0 if strategy == "edge" else config["width"] / _DENSE_WIDTH
    size = _DENSE["size_mb"] * (0.05 + 0.95 * kept**2) * (1 - 2 * threshold)
    speed = 1.0 if strategy == "edge" else 0.15 + 0.85 * kept**2  # masks save no time; narrower layers do
    train_time = _DENSE["train_time"] * speed * (1 + 0.03 * rng.normal())
    quality = (
        _QUALITY.get(strategy, 0.0)
        - (0.2 if config.get("scaling") == "none" else 0.0)
        - (0.1 * abs(math.log(config["beta"] / 3.0)) if config.get("phi") == "tanh" else 0.0)
    )
    psnr = _DENSE["psnr"] - 6 * (1 - kept) ** 2 - 40 * threshold**2 + quality + 0.15 * rng.normal()
    damage = 3 + 10 * (1 - kept) + 20 * threshold  # dB lost right after pruning, recovered by retraining
    tau = retrain_iters * (0.15 + 0.05 * rng.random())
    return {
        **config,
        "key": config_key(config),
        "psnr": psnr,
        "train_time": train_time,
        "size_mb": size,
        "seconds": 12.0 + train_time * retrain_iters / 1000,
        "retrain_iters": retrain_iters,
        "rung_iterations": rungs,
        "rung_psnr": [psnr - damage * math.exp(-r / tau) + 0.1 * rng.normal() for r in rungs],
        "rung_train_time": [train_time * (1 + 0.5 * math.exp(-r / 50)) for r in rungs],
    }


@dataclass(frozen=True)
class Bench:
    """The table as plain Python, indexed for lookups by key and by strategy."""

    rows: list[dict[str, Any]]
    by_key: dict[str, int]
    by_strategy: dict[str, list[int]]

    @classmethod
    def of(cls, table: pa.Table) -> Bench:
        rows = table.select(list(SCHEMA.names)).to_pylist()
        by_key: dict[str, int] = {}
        by_strategy: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            if config_key(row) != row["key"]:
                raise ValueError(f"row {i}: key {row['key']!r} is not config_key of its config")
            if row["key"] in by_key:
                raise ValueError(f"row {i}: configuration {row['key']} appears twice")
            by_key[row["key"]] = i
            by_strategy.setdefault(row["strategy"], []).append(i)
        return cls(rows=rows, by_key=by_key, by_strategy=by_strategy)

    def match(self, config: Mapping[str, Any]) -> int:
        """The row a proposal runs: its own, else the nearest of its strategy (module docstring)."""
        exact = self.by_key.get(config_key(dict(config)))
        if exact is not None:
            return exact
        candidates = self.by_strategy.get(config["strategy"])
        if not candidates:
            raise ValueError(f"strategy {config['strategy']!r} has no row in the table")
        wanted = canonical_config(dict(config))
        return min(candidates, key=lambda i: (_distance(wanted, canonical_config(self.rows[i])), i))


def snapped(
    table: pa.Table, define: Callable[[optuna.Trial], dict[str, Any]]
) -> Callable[[optuna.Trial], dict[str, Any]]:
    """A study's own define-by-run function (`SearchSpace.define_for`), its proposals mapped to the rows
    they run in a replay: the sampler searches the space the real study gives it, and the repeat guard
    sees the table's keys."""
    bench = Bench.of(table)

    def define_snapped(trial: optuna.Trial) -> dict[str, Any]:
        row = bench.rows[bench.match(define(trial))]
        return {k: row[k] for k in CONFIG_COLUMNS if row.get(k) is not None}

    return define_snapped


def row_for(table: pa.Table, config: Mapping[str, Any]) -> dict[str, Any]:
    """The table row a proposal runs in a replay (its own, else the nearest of its strategy)."""
    bench = Bench.of(table)
    return bench.rows[bench.match(config)]


def _distance(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    distance = abs(a["threshold"] - b["threshold"]) / THRESHOLD_STEP
    if "width" in a and "width" in b:
        distance += abs(math.log2(a["width"] / b["width"]))
    distance += sum(a.get(k) != b.get(k) for k in ("phi", "scaling"))
    if "beta" in a and "beta" in b:
        distance += abs(math.log(a["beta"] / b["beta"]))
    return distance


# --- the search space ---------------------------------------------------------------------------------


def table_space(table: pa.Table) -> Callable[[optuna.Trial], dict[str, Any]]:
    """Define-by-run function over the table's own discrete space: strategy, then each parameter among
    the values the table holds for that strategy (beta only where phi is not relu: it cancels there).

    Parameters are named `strategy.name` (e.g. `coreset.width`): Optuna requires a categorical
    parameter to keep its choices across trials, and strategies hold different values. Parameters with
    a single value are fixed, not suggested. The function returns the config of the row the proposal
    maps to: a combination the grid lacks is snapped to the nearest row of its strategy (module
    docstring), so every proposal's key is a row's key and a searcher's repeat guard sees repeats exactly
    (Optuna keeps the parameters it sampled)."""
    bench = Bench.of(table)
    strategies = [s for s in STRATEGIES if s in bench.by_strategy]
    strategies += sorted(set(bench.by_strategy) - set(strategies))
    choices = {s: _strategy_choices([bench.rows[i] for i in bench.by_strategy[s]]) for s in strategies}

    def define(trial: optuna.Trial) -> dict[str, Any]:
        strategy = trial.suggest_categorical("strategy", strategies)
        values = choices[strategy]

        def pick(name: str) -> Any:
            options = values.get(name, [])
            if len(options) <= 1:
                return options[0] if options else None
            return trial.suggest_categorical(f"{strategy}.{name}", options)

        phi = pick("phi")
        beta = pick("beta") if phi not in (None, "relu") else None
        proposal = trial_config(
            strategy,
            pick("width"),
            beta=3.0 if beta is None else beta,
            phi=phi or "relu",
            threshold=pick("threshold") or 0.0,
            scaling=pick("scaling") or "unbiased",
        )
        row = bench.rows[bench.match(proposal)]
        return {k: row[k] for k in CONFIG_COLUMNS}

    return define


def _strategy_choices(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    def present(name: str, where: Callable[[dict[str, Any]], bool] = lambda _: True) -> list[Any]:
        return sorted({r[name] for r in rows if r[name] is not None and where(r)})

    return {
        "width": present("width"),
        "threshold": present("threshold"),
        "phi": present("phi"),
        "scaling": present("scaling"),
        "beta": present("beta", lambda r: r["phi"] != "relu"),
    }
