"""Multi-objective asynchronous successive halving (MOASHA), after Syne Tune's `MOASHA`.

Ray Tune's ASHA ranks trials by one metric; the study has three objectives (psnr up, train_time down,
size_mb down; a rung's psnr is scored on the study's fixed validation rays, never on the test views).
MOASHA keeps ASHA's asynchronous promotion rule and replaces the one-metric ranking by the NSGA-II one:
at each rung, trials are ordered by non-dominated front, then by crowding distance (larger first, so
the front's ends and sparse regions survive), then by arrival (deterministic ties).

Rungs sit at fixed fractions of the retraining budget, `max_iters / eta^k` for k = K..1; the full budget
is no rung (a trial that passes the last rung runs to the end). A trial reaching a rung is recorded there
and continues at once iff it ranks among the best `max(1, floor(n / eta))` of the `n` trials the rung holds
now, itself included: no trial ever waits for others, so workers never idle (the price: the first trials
at a rung are promoted on little evidence, as in ASHA).

Stopped trials must never be told to the sampler as COMPLETE with their rung values (they would sit on
the front); the adapter only returns STOP, and the driver's searcher reports those trials as PRUNED.

`MOASHA` is the pure-Python core (also driven by `study.search.replay` in simulated time); `MOASHAScheduler` is
the Ray Tune adapter.

The NSGA-II order itself (non-dominated sort, crowding distance, first front) lives with every other
dominance question of the study in `study.search.objectives`. The pure rule (`MOASHA`, tested without Ray and
replayed by `replay`) and its Ray Tune shell with the durable decision log (`rungs.jsonl`) change
together, hence one module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from study import chaos
from study.durable import append_line, read_lines
from study.search.objectives import MODES, OBJECTIVES, on_first_front, rank, signs

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial


def rung_milestones(max_iters: int, eta: float, *, min_iters: int | None = None) -> tuple[int, ...]:
    """Rung iterations `floor(max_iters / eta^k)`, ascending, for k = K..1 with K the largest k whose rung
    is >= `min_iters` (default `max_iters // eta^3`: at most three rungs, so the first rung still sees a
    few percent of retraining rather than the pruning damage alone). 1000 iters, eta 3 -> (37, 111, 333)."""
    if eta <= 1:
        raise ValueError(f"eta must exceed 1, got {eta}")
    floor_iters = max(1, int(max_iters // eta**3) if min_iters is None else min_iters)
    rungs: list[int] = []
    k = 1
    while (rung := int(max_iters // eta**k)) >= floor_iters:
        if rung not in rungs:
            rungs.append(rung)
        k += 1
    return tuple(sorted(rungs))


@dataclass(frozen=True)
class RungEntry:
    """One trial's record at one rung."""

    trial_id: str
    """Tune's (or the replay's) trial id."""
    values: tuple[float, ...]
    """The objectives at the rung as reported (maximised ones not negated), in the core's order."""
    decision: bool | None
    """True: continued, False: stopped, None: recorded without a decision (history after a resume)."""


class MOASHA:
    """The scheduling rule, without Ray: rungs of recorded objectives and the decisions taken there."""

    def __init__(
        self,
        *,
        milestones: Sequence[int],
        eta: float = 3,
        objectives: Sequence[str] = OBJECTIVES,
        modes: Sequence[str] = MODES,
        keep_front: bool = True,
    ) -> None:
        """keep_front: a trial non-dominated among those at its rung always continues, beyond the best
        1/eta (see the module docstring for why); False is plain top-1/eta (Syne Tune's rule)."""
        if len(objectives) != len(modes) or not set(modes) <= {"min", "max"}:
            raise ValueError(f"objectives {objectives} need one mode each, 'min' or 'max': {modes}")
        if list(milestones) != sorted(set(milestones)) or not milestones or milestones[0] < 1:
            raise ValueError(f"milestones must be distinct positive iterations, ascending: {milestones}")
        if eta <= 1:
            raise ValueError(f"eta must exceed 1, got {eta}")
        self.milestones = tuple(int(m) for m in milestones)
        self.eta = eta
        self.keep_front = keep_front
        self.objectives = tuple(objectives)
        self.modes = tuple(modes)
        # maximised objectives are negated once, here: everything below minimises
        self._signs = signs(modes)
        self._rungs: dict[int, list[RungEntry]] = {m: [] for m in self.milestones}
        self._slots: dict[int, dict[str, int]] = {m: {} for m in self.milestones}
        """Per rung: trial id -> its entry's index (arrival order)."""

    def _check_milestone(self, milestone: int) -> None:
        if milestone not in self._rungs:
            raise ValueError(f"{milestone} is no rung; rungs: {self.milestones}")

    def _values(self, values: Mapping[str, float | None]) -> tuple[float, ...]:
        missing = [o for o in self.objectives if o not in values]
        if missing:
            raise KeyError(f"objectives {missing} missing from {dict(values)}")
        # None (a value a diverged trial could not report) ranks last, like NaN
        return tuple(math.nan if values[o] is None else float(values[o]) for o in self.objectives)

    def _find(self, trial_id: str, milestone: int) -> int | None:
        return self._slots[milestone].get(trial_id)

    def _append(self, milestone: int, entry: RungEntry) -> int:
        self._slots[milestone][entry.trial_id] = len(self._rungs[milestone])
        self._rungs[milestone].append(entry)
        return len(self._rungs[milestone]) - 1

    def decision(self, trial_id: str, milestone: int) -> bool | None:
        """The decision taken for the trial at the rung, None if none was (yet)."""
        self._check_milestone(milestone)
        index = self._find(trial_id, milestone)
        return None if index is None else self._rungs[milestone][index].decision

    def record(
        self,
        trial_id: str,
        milestone: int,
        values: Mapping[str, float | None],
        *,
        decision: bool | None = None,
    ) -> None:
        """Adds the trial's objectives at the rung without deciding now (rebuilding history after a resume);
        `decision` restores the one taken before, if known, so a re-reporting trial gets it again (None: it
        is decided afresh when it reports there). A trial already at the rung keeps its entry."""
        self._check_milestone(milestone)
        if self._find(trial_id, milestone) is None:
            self._append(milestone, RungEntry(trial_id, self._values(values), decision))

    def decide(self, trial_id: str, milestone: int, values: Mapping[str, float | None]) -> bool:
        """Records the trial at the rung and says whether it continues (see the module docstring). A trial
        decided there before gets the same answer again (resumed trials re-report)."""
        self._check_milestone(milestone)
        entries = self._rungs[milestone]
        index = self._find(trial_id, milestone)
        if index is not None and entries[index].decision is not None:
            return entries[index].decision
        if index is None:
            index = self._append(milestone, RungEntry(trial_id, self._values(values), None))
        else:  # recorded history: keep its arrival slot, take the values it reports now
            entries[index] = RungEntry(trial_id, self._values(values), None)
        keep = max(1, math.floor(len(entries) / self.eta))
        objs = np.array([e.values for e in entries]) * self._signs
        ranked = rank(objs)
        decision = ranked.index(index) < keep or (self.keep_front and on_first_front(objs, index))
        entries[index] = RungEntry(trial_id, entries[index].values, decision)
        return decision

    def counts(self) -> dict[int, tuple[int, int]]:
        """Per rung: (trials recorded, trials continued)."""
        return {m: (len(es), sum(e.decision is True for e in es)) for m, es in self._rungs.items()}

    def state(self) -> dict[str, Any]:
        """Plain-JSON state (rung entries in arrival order; non-finite values as null)."""
        return {
            "milestones": list(self.milestones),
            "eta": self.eta,
            "keep_front": self.keep_front,
            "objectives": list(self.objectives),
            "modes": list(self.modes),
            "rungs": {
                str(m): [
                    {
                        "trial_id": e.trial_id,
                        "values": [v if math.isfinite(v) else None for v in e.values],
                        "decision": e.decision,
                    }
                    for e in es
                ]
                for m, es in self._rungs.items()
            },
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> MOASHA:
        core = cls(
            milestones=state["milestones"],
            eta=state["eta"],
            objectives=state["objectives"],
            modes=state["modes"],
            keep_front=state.get("keep_front", True),
        )
        for milestone, entries in state["rungs"].items():
            for e in entries:
                values = tuple(math.nan if v is None else float(v) for v in e["values"])
                core._append(int(milestone), RungEntry(str(e["trial_id"]), values, e["decision"]))
        return core


class MOASHAScheduler(FIFOScheduler):
    """Ray Tune adapter: decides at each rung from the trial's report there; otherwise FIFO.

    Trials report their retraining iteration under `time_attr` together with the objectives (the study's
    mid-run reports do). A report past a rung the trial was not yet decided at is decided at the highest
    such rung (as Tune's ASHA does), with the values it carries. Reports without `time_attr` (the final
    one) pass unchanged; the full budget is no rung."""

    def __init__(
        self,
        *,
        max_iters: int,
        eta: float = 3,
        time_attr: str = "retrain_iteration",
        core: MOASHA | None = None,
        min_iters: int | None = None,
        objectives: Sequence[str] = OBJECTIVES,
        modes: Sequence[str] = MODES,
    ) -> None:
        super().__init__()
        self.core = core or MOASHA(
            milestones=rung_milestones(max_iters, eta, min_iters=min_iters),
            eta=eta,
            objectives=objectives,
            modes=modes,
        )
        if self.core.milestones[-1] >= max_iters:
            raise ValueError(f"rungs {self.core.milestones} must lie below the budget {max_iters}")
        self.max_iters = max_iters
        self.time_attr = time_attr
        # Tune's strict metric check wants one reported name; every report carries all objectives
        self._metric = self.core.objectives[0]
        self._stopped = 0

    def set_search_properties(
        self, metric: str | list[str] | None, mode: str | list[str] | None, **spec: Any
    ) -> bool:
        """Accepts Tune's (or the searcher's) metric/mode when they agree with the core's objectives: a
        list must equal them, a single name must be one of them with its mode."""
        del spec
        metrics = [metric] if isinstance(metric, str) else list(metric or [])
        modes = [mode] if isinstance(mode, str) else list(mode or [])
        senses = dict(zip(self.core.objectives, self.core.modes))
        if any(m not in senses for m in metrics):
            return False
        if len(metrics) > 1 and tuple(metrics) != self.core.objectives:
            return False
        return not modes or (
            len(modes) == len(metrics) and all(senses[m] == d for m, d in zip(metrics, modes))
        )

    def on_trial_result(self, tune_controller: TuneController, trial: Trial, result: dict) -> str:
        if self.time_attr not in result:
            return TrialScheduler.CONTINUE
        reached = [m for m in self.core.milestones if m <= result[self.time_attr]]
        if not reached:
            return TrialScheduler.CONTINUE
        decisions = {m: self.core.decision(trial.trial_id, m) for m in self.core.milestones}
        if False in decisions.values():  # a stopped trial back from a checkpoint stays stopped
            return TrialScheduler.STOP
        if any(d is not None and m >= reached[-1] for m, d in decisions.items()):
            return TrialScheduler.CONTINUE  # re-report of a rung already passed
        go_on = self.core.decide(trial.trial_id, reached[-1], result)
        self._stopped += not go_on
        return TrialScheduler.CONTINUE if go_on else TrialScheduler.STOP

    def debug_string(self) -> str:
        rungs = ", ".join(f"{m}: {kept}/{n} continued" for m, (n, kept) in self.core.counts().items())
        return (
            f"Using MOASHA (eta {self.core.eta}, objectives {', '.join(self.core.objectives)}): "
            f"{self._stopped} stopped; rungs {rungs}"
        )

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w") as f:
            json.dump({"core": self.core.state(), "stopped": self._stopped}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            saved = json.load(f)
        self.core = MOASHA.from_state(saved["core"])
        self._stopped = int(saved["stopped"])


class DurableMOASHAScheduler(MOASHAScheduler):
    """The study's scheduler: every rung decision is appended to the study folder's rungs.jsonl before
    Tune acts on it, and a resumed study rebuilds the core from that file, so the scheduler's state
    survives any kill exactly and a stopped trial is never revived. Only rung reports (they carry
    `rung_at`) are judged: mid-run checkpoints and final reports pass."""

    def __init__(self, *, rungs_file: Path, max_iters: int, eta: int) -> None:
        core = MOASHA(milestones=rung_milestones(max_iters, eta), eta=eta)
        for line in read_lines(rungs_file):
            core.record(
                line["trial_id"], line["iteration"], line["values"], decision=line["decision"] == "continue"
            )
        super().__init__(max_iters=max_iters, eta=eta, core=core, time_attr="rung_at")
        self.rungs_file = rungs_file

    def on_trial_result(self, tune_controller: TuneController, trial: Trial, result: dict) -> str:
        before = {m: self.core.decision(trial.trial_id, m) for m in self.core.milestones}
        decision = super().on_trial_result(tune_controller, trial, result)
        for m in self.core.milestones:
            now = self.core.decision(trial.trial_id, m)
            if before[m] is None and now is not None:
                append_line(
                    self.rungs_file,
                    {
                        "trial_id": trial.trial_id,
                        "iteration": m,
                        "decision": "continue" if now else "stop",
                        "config": trial.config,
                        "values": {k: result.get(k) for k in self.core.objectives},
                    },
                )
                if not now:
                    chaos.maybe_die("rung_stop")
        return decision
