"""Replays a study against the tabular benchmark (`study.search.table`) in simulated time: a searcher
(and optionally MOASHA) picks configurations from the table, each trial is charged the measured seconds,
and the hypervolume of the front of full-budget trials is traced against the compute spent. Many seeds
of many search set-ups cost seconds, not days.

Simulated time: `workers` run trials side by side; a trial costs `seconds * r / retrain_iters` to reach
iteration r (overheads spread evenly: the table has no finer timing). A free worker asks the searcher for
a configuration; at every rung, the MOASHA core (if any) continues or stops the trial. The searcher hears
`on_trial_complete` with the full-budget values (`partial: 0`) or, for stopped trials, the rung values
with `partial: 1`; a `tell` hook, if given, then gets the trial as the study's recorder writes it
(status COMPLETE or STOPPED: `study.search.searcher.StudySearcher.tell`, which ignores Tune's notice and tells
stopped trials to Optuna as PRUNED). Compute is trial-seconds summed
over workers; idle workers cost nothing.

Proposals the table lacks and repeats are resolved without running anything:

- a proposal whose canonical key is no row runs the nearest row of the same strategy
  (`study.search.table.Bench.match`);
- a proposal of a row this replay already started is a duplicate: the real study would not measure it
  twice, so it costs nothing and the searcher is told `on_trial_complete(trial_id, None)` (PRUNED in
  Optuna: it adds no point; the original trial carries the information).
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from ray.tune.search import Searcher

from study.search.hypervolume import Point, ReferencePoint, hypervolume
from study.search.moasha import MOASHA
from study.search.objectives import dominates
from study.search.table import CONFIG_COLUMNS, Bench, reference_point

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

    bench: Bench
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
    it, propose rows (`study.search.table.snapped` around a study's space, or `table_space`), so the
    searcher's own repeat guard and the replay's agree on what a repeat is."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    bench = Bench.of(table)
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
