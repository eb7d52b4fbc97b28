"""The search: Optuna's samplers proposing trials to Ray Tune through `OptunaSearch`, with two changes.

1. No configuration is measured twice. A proposal equal in effect (`spaces.config_key`) to one this
   study measured, or is measuring, is not run: the sampler is answered with the measured outcome and
   asked again, a bounded number of times; a space with nothing new left is exhausted (Tune is told the
   search is finished) instead of rerunning trials.
2. Optuna hears of a trial when the driver has recorded it, not when Tune does: a finished trial is
   told COMPLETE with its objectives (`psnr` is the validation PSNR; the test PSNR is never told), a
   trial the scheduler stopped at a rung PRUNED (multi-objective TPE then counts it among the worse
   configurations, and it never reaches `best_trials`), a failed one FAIL. So the Optuna study's
   COMPLETE trials are exactly the recorded full-budget ones, plus the repeat answers, which carry the
   user attribute `repeat_of`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import optuna
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from study import chaos
from study.search.objectives import MODES, OBJECTIVES
from study.search.space import config_key

Outcome = tuple[str, list[float] | None]
"""(Optuna state name, objective values) of a measured configuration."""
OPTUNA_STATE = {"COMPLETE": "COMPLETE", "STOPPED": "PRUNED", "FAILED": "FAIL"}


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        with warnings.catch_warnings():  # multivariate/group are 'experimental' but the right tool here
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=4)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    return optuna.samplers.RandomSampler(seed=seed)


def outcome_of(row: dict) -> Outcome:
    """What the sampler is told about a recorded trial."""
    state = OPTUNA_STATE[row["status"]]
    return state, [float(row[k]) for k in OBJECTIVES] if state == "COMPLETE" else None


class StudySearcher(OptunaSearch):
    """OptunaSearch with the repeat guard and recorder-driven telling described in the module doc."""

    def __init__(
        self,
        *,
        define: Callable[[optuna.Trial], dict[str, Any]],
        storage: optuna.storages.BaseStorage,
        study_name: str,
        sampler: optuna.samplers.BaseSampler,
        points: list[dict] | None = None,
        measured: dict[str, Outcome] | None = None,
        max_repeats: int = 64,
    ) -> None:
        super().__init__(
            space=define,
            metric=list(OBJECTIVES),
            mode=list(MODES),
            sampler=sampler,
            storage=storage,
            study_name=study_name,
        )
        with warnings.catch_warnings():  # 'experimental' since Optuna 3.2; what optuna-dashboard reads
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._ot_study.set_metric_names(list(OBJECTIVES))
        self.measured: dict[str, Outcome] = dict(measured or {})
        self.running: dict[str, str] = {}
        """config key -> Tune trial id of the trials under way."""
        self.waiting_repeats: dict[str, list[optuna.Trial]] = {}
        """Repeats of a configuration under way, answered when it is recorded."""
        self.max_repeats = max_repeats
        self.repeats_avoided = 0
        self.exhausted = False
        self.queue_first_points(points or [])

    def queue_first_points(self, points: list[dict]) -> None:
        """Queue the study's first points (the grid, or one per strategy), each unless the Optuna study
        already holds it (queued, run or recorded): a launch killed half-way through queueing them, or
        before, leaves the rest to the next one, and none is queued twice."""
        held = set(self.measured)
        for trial in self._ot_study.get_trials(deepcopy=False):
            key = trial.user_attrs.get("config_key")
            params = trial.params or trial.system_attrs.get("fixed_params")
            held |= {key} if key else ({config_key(params)} if params else set())
        for n, point in enumerate(p for p in points if config_key(p) not in held):
            self._ot_study.enqueue_trial(point)
            if n == 0:
                chaos.maybe_die("first_points")

    @property
    def study(self) -> optuna.Study:
        return self._ot_study

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.exhausted:
            return Searcher.FINISHED
        for _ in range(self.max_repeats + 1):
            config = super().suggest(trial_id)
            key = config_key(config)
            ot_trial = self._ot_trials[trial_id]
            if key not in self.measured and key not in self.running:
                ot_trial.set_user_attr("tune_trial_id", trial_id)
                ot_trial.set_user_attr("config_key", key)
                self.running[key] = trial_id
                return config
            # a repeat: answered with what the study measured (a running twin's outcome once it is
            # recorded), and the sampler asked again
            ot_trial.set_user_attr("repeat_of", key)
            self._ot_trials.pop(trial_id)
            if key in self.measured:
                state, values = self.measured[key]
                self._ot_study.tell(ot_trial, values, state=optuna.trial.TrialState[state])
            else:
                self.waiting_repeats.setdefault(key, []).append(ot_trial)
            self.repeats_avoided += 1
        self.exhausted = True
        return Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Tune's notice comes before the trial is recorded; the recorder calls `tell` once it is."""

    def tell(self, trial_id: str, row: dict) -> None:
        """The recorded outcome of a trial this searcher proposed in this run."""
        key = config_key(row)
        self.running.pop(key, None)
        outcome = self.measured[key] = outcome_of(row)
        state, values = outcome
        for ot_trial in [self._ot_trials.pop(trial_id, None), *self.waiting_repeats.pop(key, [])]:
            if ot_trial is not None:
                self._ot_study.tell(ot_trial, values, state=optuna.trial.TrialState[state])
