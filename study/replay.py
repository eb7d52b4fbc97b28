"""Replays a study against a tabular benchmark in simulated time (after Syne Tune's and HPOBench's
tabulated benchmarks): every configuration of a grid was run once for real, at the full budget, with its
objectives recorded at each rung; a replay lets a searcher (and optionally MOASHA) pick configurations
from that table, charges each trial the measured seconds, and traces the hypervolume of the front of
full-budget trials against the compute spent. Many seeds of many search set-ups cost seconds, not days.

Table (one row per configuration; pyarrow, saved as Parquet):

- config columns `strategy`, `width` (null for edge), `beta`, `phi`, `scaling` (null unless coreset),
  `threshold`; `key` = `study.spaces.config_key(config)`;
- `psnr` (dB, validation PSNR at the full budget: the study's objective; tables measured before the
  study scored on validation views hold the test PSNR here), `train_time` (s per 1k iterations at the
  full budget),
  `size_mb`, `seconds` (wall seconds of the whole trial at the full budget), `retrain_iters`;
- per rung: `rung_iterations` (list<int64>), `rung_psnr`, `rung_train_time` (list<float64>): the objectives
  the trial reported at those iterations (size is known before training and does not change);
- schema metadata, JSON under b"bench": `dense` (psnr, train_time, size_mb of the dense model, which fixes
  the reference point), `eta` (the rungs' layout), `command` and `machine` (how the table was measured).

Simulated time: `workers` run trials side by side; a trial costs `seconds * r / retrain_iters` to reach
iteration r (overheads spread evenly: the table has no finer timing). A free worker asks the searcher for
a configuration; at every rung, the MOASHA core (if any) continues or stops the trial. The searcher hears
`on_trial_complete` with the full-budget values (`partial: 0`) or, for stopped trials, the rung values
with `partial: 1`; a `tell` hook, if given, then gets the trial as the study's recorder writes it
(status COMPLETE or STOPPED: `study.search.StudySearcher.tell`, which ignores Tune's notice and tells
stopped trials to Optuna as PRUNED). Compute is trial-seconds summed
over workers; idle workers cost nothing.

Proposals the table lacks and repeats are resolved without running anything:

- a proposal whose canonical key is no row (a conditional combination the grid lacks, e.g. a hybrid
  threshold not measured at that width) runs the nearest row of the same strategy (distance: |log2 width
  ratio| + |threshold gap| / 0.05 + 1 per differing phi or scaling + |log beta ratio|; ties: table order);
- a proposal of a row this replay already started is a duplicate: the real study would not measure it
  twice, so it costs nothing and the searcher is told `on_trial_complete(trial_id, None)` (PRUNED in
  Optuna: it adds no point; the original trial carries the information).

Why one module of ~590 lines: the simulator is one event loop (workers in simulated time, the
searcher, the scheduler, table lookups) whose parts must agree on the clock; the table's schema and
the report of a replay live beside it.
"""

from __future__ import annotations

import bisect
import heapq
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ray.tune.search import Searcher

from study.hypervolume import Point, ReferencePoint, hypervolume
from study.moasha import MOASHA, rung_milestones
from study.objectives import dominates
from study.spaces import STRATEGIES, canonical_config, config_key, trial_config

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
    dense = bench_metadata(table)["dense"]
    return ReferencePoint.from_dense(
        psnr=dense["psnr"], train_time=dense["train_time"], size_mb=dense["size_mb"]
    )


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
class _Bench:
    """The table as plain Python, indexed for the replay's lookups."""

    rows: list[dict[str, Any]]
    by_key: dict[str, int]
    by_strategy: dict[str, list[int]]

    @classmethod
    def of(cls, table: pa.Table) -> _Bench:
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


def row_for(table: pa.Table, config: Mapping[str, Any]) -> dict[str, Any]:
    """The table row a proposal runs in a replay (its own, else the nearest of its strategy)."""
    bench = _Bench.of(table)
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
    bench = _Bench.of(table)
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


# --- the replay ---------------------------------------------------------------------------------------

TrialStatus = Literal["complete", "stopped", "running"]


@dataclass(frozen=True)
class ReplayTrial:
    """One trial of a replay."""

    trial_id: str
    key: str
    """The table row it ran (`config_key`)."""
    status: TrialStatus
    """complete: ran the full budget; stopped: by MOASHA at `iterations`; running: cut off by the budget."""
    start_compute: float
    """Compute spent by the whole replay when it started (trial-seconds)."""
    end_compute: float | None
    """Compute spent by the whole replay when it ended; None while running."""
    iterations: int
    """Retraining iterations it reached."""


@dataclass(frozen=True)
class ReplayResult:
    """What a replay spent and found."""

    compute: tuple[float, ...]
    """Compute spent (trial-seconds summed over workers) after each event, non-decreasing."""
    hypervolume: tuple[float, ...]
    """Hypervolume of the front of full-budget trials after each event (same length as `compute`)."""
    trials: tuple[ReplayTrial, ...]
    """Every trial run, in start order (duplicates, which ran nothing, excluded)."""
    complete: int
    """Trials that ran the full budget."""
    stopped: int
    """Trials stopped at a rung."""
    duplicates: int
    """Proposals of rows already started (told `on_trial_complete(id, None)`, cost nothing)."""
    front: tuple[str, ...]
    """Keys of the full-budget trials on the final Pareto front."""
    grid_compute: float
    """Compute of running the whole table (sum of `seconds`)."""
    grid_hypervolume: float
    """Hypervolume of the whole table's front."""
    wall_seconds: float
    """Simulated wall time at the end."""
    reference: ReferencePoint = field(repr=False)


def hv_at(result: ReplayResult, compute: float) -> float:
    """Hypervolume reached with `compute` trial-seconds: the value after the last event at or before it
    (the hypervolume only changes at events, so this step function is exact)."""
    index = bisect.bisect_right(result.compute, compute) - 1
    return result.hypervolume[index] if index >= 0 else 0.0


def trials_started_by(result: ReplayResult, compute: float) -> int:
    """Trials started with at most `compute` trial-seconds spent."""
    return sum(t.start_compute <= compute for t in result.trials)


@dataclass
class _Running:
    index: int
    row: int
    checkpoints: list[int]
    """Iterations still ahead where the trial stops to report: remaining rungs, then the full budget."""
    iteration: int = 0
    speed: float = 1.0
    """Multiplies the table's durations (duration jitter)."""


@dataclass
class _Replay:
    """Mutable state of one replay (simulate's loop, split into short steps)."""

    bench: _Bench
    searcher: Searcher
    core: MOASHA | None
    reference: ReferencePoint
    rng: np.random.Generator
    jitter: float
    tell: Callable[[str, dict[str, Any]], None] | None = None
    now: float = 0.0
    compute: float = 0.0
    busy: int = 0
    finished: bool = False
    duplicates: int = 0
    events: list[tuple[float, int, int]] = field(default_factory=list)
    running: dict[int, _Running] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    started: set[str] = field(default_factory=set)
    points: list[Point] = field(default_factory=list)
    hv: float = 0.0
    curve: list[tuple[float, float]] = field(default_factory=lambda: [(0.0, 0.0)])
    sequence: int = 0

    def ask(self, *, patience: int) -> bool:
        """Asks the searcher for a new row and starts it; False when it gives none now (or ever)."""
        for _ in range(patience):
            trial_id = f"replay_{len(self.records) + self.duplicates:05d}"
            config = self.searcher.suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                self.finished = config == Searcher.FINISHED
                return False
            row = self.bench.match(config)
            if self.bench.rows[row]["key"] not in self.started:
                self.start(trial_id, row)
                return True
            self.duplicates += 1
            self.searcher.on_trial_complete(trial_id, None)
        self.finished = True  # the searcher only repeats itself: nothing left to learn
        return False

    def start(self, trial_id: str, row: int) -> None:
        values = self.bench.rows[row]
        rungs = [m for m in (self.core.milestones if self.core else ()) if m < values["retrain_iters"]]
        missing = [m for m in rungs if m not in values["rung_iterations"]]
        if missing:
            raise ValueError(f"row {values['key']} has no values at rungs {missing}")
        speed = math.exp(self.jitter * self.rng.normal()) if self.jitter else 1.0
        self.started.add(values["key"])
        self.records.append(
            {
                "trial_id": trial_id,
                "key": values["key"],
                "status": "running",
                "start_compute": self.compute,
                "end_compute": None,
                "iterations": 0,
            }
        )
        trial = _Running(len(self.records) - 1, row, [*rungs, values["retrain_iters"]], speed=speed)
        self.running[trial.index] = trial
        self.busy += 1
        self.schedule(trial)

    def schedule(self, trial: _Running) -> None:
        row = self.bench.rows[trial.row]
        cost = row["seconds"] * (trial.checkpoints[0] - trial.iteration) / row["retrain_iters"] * trial.speed
        self.sequence += 1  # ties in time resolve in scheduling order: deterministic
        heapq.heappush(self.events, (self.now + cost, self.sequence, trial.index))

    def advance(self, until: float) -> None:
        self.compute += self.busy * (until - self.now)
        self.now = until

    def on_event(self, index: int) -> None:
        trial = self.running[index]
        row = self.bench.rows[trial.row]
        trial.iteration = trial.checkpoints.pop(0)
        self.records[index]["iterations"] = trial.iteration
        if not trial.checkpoints:
            self.end(
                trial,
                "complete",
                {
                    "psnr": row["psnr"],
                    "train_time": row["train_time"],
                    "size_mb": row["size_mb"],
                    "partial": 0,
                },
            )
            return
        at = row["rung_iterations"].index(trial.iteration)
        result = {
            "psnr": row["rung_psnr"][at],
            "train_time": row["rung_train_time"][at],
            "size_mb": row["size_mb"],
            "partial": 1,
            "retrain_iteration": trial.iteration,
        }
        trial_id = self.records[index]["trial_id"]
        self.searcher.on_trial_result(trial_id, result)
        if self.core is None or self.core.decide(trial_id, trial.iteration, result):
            self.schedule(trial)
        else:
            self.end(trial, "stopped", result)

    def end(self, trial: _Running, status: TrialStatus, result: dict[str, Any]) -> None:
        record = self.records[trial.index]
        record.update(status=status, end_compute=self.compute)
        del self.running[trial.index]
        self.busy -= 1
        self.searcher.on_trial_complete(record["trial_id"], {**result, "retrain_iteration": trial.iteration})
        if self.tell is not None:
            row = self.bench.rows[trial.row]
            self.tell(
                record["trial_id"],
                {
                    **{k: row[k] for k in (*CONFIG_COLUMNS, "key")},
                    "status": status.upper(),
                    "iterations": trial.iteration,
                    **{k: result[k] for k in ("psnr", "train_time", "size_mb")},
                },
            )
        if status == "complete":
            self.points.append((result["psnr"], result["train_time"], result["size_mb"]))
            self.hv = hypervolume(self.points, self.reference)


def simulate(
    table: pa.Table,
    *,
    searcher: Searcher,
    scheduler_core: MOASHA | None,
    workers: int,
    budget_seconds: float | None,
    max_trials: int | None,
    seed: int,
    duration_jitter: float = 0.0,
    patience: int = 100,
    tell: Callable[[str, dict[str, Any]], None] | None = None,
) -> ReplayResult:
    """Replays a search on the table (module docstring). Ends when the compute budget is spent (the
    curve's last point sits at exactly `budget_seconds`; trials still running are cut off), when
    `max_trials` trials ran, when the searcher is finished (or proposes only duplicates `patience` times
    in a row), or when every row has been started. `duration_jitter` > 0 multiplies each trial's
    durations by exp(jitter * N(0, 1)) drawn from `seed`, to vary the asynchronous order across seeds.
    `tell(trial_id, row)` is called after `on_trial_complete` when a trial ends (module docstring); with
    it, propose from `table_space`, whose proposals are rows, so the searcher's own repeat guard and the
    replay's agree on what a repeat is."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    bench = _Bench.of(table)
    state = _Replay(
        bench=bench,
        searcher=searcher,
        core=scheduler_core,
        reference=reference_point(table),
        rng=np.random.default_rng(seed),
        jitter=duration_jitter,
        tell=tell,
    )
    limit = len(bench.rows) if max_trials is None else min(max_trials, len(bench.rows))
    budget = math.inf if budget_seconds is None else budget_seconds
    while True:
        while (
            state.busy < workers
            and not state.finished
            and len(state.records) < limit
            and state.ask(patience=patience)
        ):
            pass
        if not state.events:
            break
        time, _, index = heapq.heappop(state.events)
        if state.compute + state.busy * (time - state.now) > budget:
            state.advance(state.now + (budget - state.compute) / state.busy)
            state.curve.append((budget, state.hv))
            break
        state.advance(time)
        state.on_event(index)
        state.curve.append((state.compute, state.hv))
    return _result(state)


def _result(state: _Replay) -> ReplayResult:
    rows = state.bench.rows
    trials = tuple(ReplayTrial(**record) for record in state.records)
    complete = [t for t in trials if t.status == "complete"]
    points = [(r["psnr"], r["train_time"], r["size_mb"]) for r in rows]
    by_key = {r["key"]: r for r in rows}
    front = tuple(
        t.key
        for t in complete
        if not any(dominates(o, by_key[t.key]) for o in (by_key[c.key] for c in complete))
    )
    return ReplayResult(
        compute=tuple(c for c, _ in state.curve),
        hypervolume=tuple(h for _, h in state.curve),
        trials=trials,
        complete=len(complete),
        stopped=sum(t.status == "stopped" for t in trials),
        duplicates=state.duplicates,
        front=front,
        grid_compute=float(sum(r["seconds"] for r in rows)),
        grid_hypervolume=hypervolume(points, state.reference),
        wall_seconds=state.now,
        reference=state.reference,
    )
