"""Replays on a synthetic bench table: the table and its space, the simulated clock, MOASHA's effect on
how many trials a budget buys, the hypervolume trace, determinism and speed."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from study.search.hypervolume import hypervolume
from study.search.moasha import MOASHA, rung_milestones
from study.search.replay import ReplayResult, hv_at, simulate, trials_started_by
from study.search.space import config_key, trial_config
from study.search.table import (
    bench_metadata,
    load_table,
    make_synthetic_table,
    reference_point,
    row_for,
    table_space,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
OBJECTIVES = ["psnr", "train_time", "size_mb"]
MODES = ["max", "min", "min"]


@pytest.fixture(scope="module")
def table() -> Any:
    return make_synthetic_table(150, seed=0)


class PruningOptunaSearch(OptunaSearch):
    """What the study's searcher does with stopped trials: PRUNED in Optuna, never COMPLETE."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result is not None and result.get("partial"):
            result = None  # OptunaSearch tells a trial without values as PRUNED
        super().on_trial_complete(trial_id, result, error=error)


def searcher(table: Any, sampler: optuna.samplers.BaseSampler) -> PruningOptunaSearch:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's experimental multivariate TPE
        return PruningOptunaSearch(
            space=table_space(table),
            metric=OBJECTIVES,
            mode=MODES,
            sampler=sampler,
            storage=optuna.storages.InMemoryStorage(),
        )


def random(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def tpe(seed: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=10)


def replay(
    table: Any,
    sampler: Callable[[int], optuna.samplers.BaseSampler],
    *,
    moasha: bool,
    budget: float | None,
    seed: int = 0,
    max_trials: int | None = None,
    duration_jitter: float = 0.0,
) -> ReplayResult:
    # the plain best-1/eta rule: on this synthetic table a third of the grid is on the front, which the
    # default rule (keep every non-dominated trial) would keep almost whole
    core = MOASHA(milestones=rung_milestones(1000, 3), eta=3, keep_front=False) if moasha else None
    return simulate(
        table,
        searcher=searcher(table, sampler(seed)),
        scheduler_core=core,
        workers=4,
        budget_seconds=budget,
        max_trials=max_trials,
        seed=seed,
        duration_jitter=duration_jitter,
    )


def grid_compute(table: Any) -> float:
    return float(sum(table["seconds"].to_pylist()))


# --- the table ----------------------------------------------------------------------------------------


def test_synthetic_table_has_the_schema_and_metadata(table: Any, tmp_path) -> None:
    rows = table.to_pylist()
    assert len(rows) == 150
    assert len({r["key"] for r in rows}) == 150
    assert all(r["key"] == config_key(r) for r in rows)
    assert all(r["rung_iterations"] == [37, 111, 333] for r in rows)
    assert all(r["width"] is None for r in rows if r["strategy"] == "edge")
    assert all(r["scaling"] is None for r in rows if r["strategy"] != "coreset")
    meta = bench_metadata(table)
    assert meta["dense"] == {"psnr": 25.0, "train_time": 20.0, "size_mb": 2.4} and meta["eta"] == 3
    assert {"command", "machine"} <= set(meta)
    pq.write_table(table, tmp_path / "bench.parquet")
    loaded = load_table(tmp_path / "bench.parquet")
    assert loaded.equals(table) and bench_metadata(loaded) == meta


def test_synthetic_curves_are_plausible(table: Any) -> None:
    rows = table.to_pylist()
    # PSNR recovers over retraining; early rungs still show the pruning damage
    assert np.all(np.diff(np.mean([r["rung_psnr"] for r in rows], axis=0)) > 0)
    assert all(r["rung_psnr"][0] < r["psnr"] and r["seconds"] > r["train_time"] for r in rows)
    coreset = sorted((r for r in rows if r["strategy"] == "coreset"), key=lambda r: r["width"])
    assert (
        coreset[0]["size_mb"] < coreset[-1]["size_mb"]
        and coreset[0]["train_time"] < coreset[-1]["train_time"]
    )
    assert coreset[0]["psnr"] < coreset[-1]["psnr"]


def test_a_table_without_bench_metadata_is_refused(table: Any, tmp_path) -> None:
    pq.write_table(table.replace_schema_metadata(None), tmp_path / "bare.parquet")
    with pytest.raises(ValueError, match="bench"):
        load_table(tmp_path / "bare.parquet")


def test_space_proposes_only_rows_of_the_table(table: Any) -> None:
    study = optuna.create_study(
        directions=["maximize", "minimize", "minimize"],
        sampler=random(1),
        storage=optuna.storages.InMemoryStorage(),
    )
    define = table_space(table)
    rows = table.to_pylist()
    keys = {r["key"] for r in rows}
    snapped = 0
    for _ in range(300):
        trial = study.ask()
        config = define(trial)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        assert config_key(config) in keys  # combinations the grid lacks come back snapped to a row
        strategy = config["strategy"]
        snapped += any(
            config[n] != v for p, v in trial.params.items() if (n := p.removeprefix(f"{strategy}.")) != p
        )
        if config["width"] is not None:
            assert trial.params[f"{config['strategy']}.width"] in {r["width"] for r in rows}
    assert snapped > 0  # 150 of the grid's 171 rows: some sampled combinations are missing
    # per-strategy names: Optuna wants a categorical's choices fixed, and strategies hold different values
    names = {name for t in study.trials for name in t.distributions}
    assert names == {"strategy"} | {n for n in names if n.split(".")[0] in {r["strategy"] for r in rows}}
    assert {"uniform.width", "coreset.phi", "coreset.beta", "edge.threshold"} <= names


def test_proposals_the_grid_lacks_snap_to_the_nearest_row_of_their_strategy() -> None:
    full = make_synthetic_table(171, seed=0)  # the whole synthetic grid
    missing = trial_config("uniform", 64, threshold=0.03)
    table = full.filter(pc.field("key") != config_key(missing))
    assert table.num_rows == 170 and bench_metadata(table) == bench_metadata(full)
    # |log2(64/48)| = 0.42 beats a threshold step of 0.03 (0.6) and |log2(96/64)| = 0.58
    assert row_for(table, missing)["key"] == config_key(trial_config("uniform", 48, threshold=0.03))
    # |ln(1/0.5)| = 0.69 beats |ln(3/1)| = 1.1
    tanh = trial_config("coreset", 64, beta=1.0, phi="tanh", scaling="none")
    assert row_for(table, tanh)["key"] == config_key({**tanh, "beta": 0.5})
    with pytest.raises(ValueError, match="no row"):
        row_for(table.filter(pc.field("strategy") != "edge"), trial_config("edge", threshold=0.1))


# --- the replay ---------------------------------------------------------------------------------------


def test_random_replay_traces_a_non_decreasing_hypervolume(table: Any) -> None:
    result = replay(table, random, moasha=False, budget=0.4 * grid_compute(table))
    assert result.compute[-1] == pytest.approx(0.4 * grid_compute(table))
    assert np.all(np.diff(result.compute) >= 0) and np.all(np.diff(result.hypervolume) >= 0)
    assert result.stopped == 0 and result.complete > 20
    by_key = {r["key"]: r for r in table.to_pylist()}
    done = [
        (by_key[t.key]["psnr"], by_key[t.key]["train_time"], by_key[t.key]["size_mb"])
        for t in result.trials
        if t.status == "complete"
    ]
    assert result.hypervolume[-1] == pytest.approx(hypervolume(done, reference_point(table)))
    assert 0 < result.hypervolume[-1] <= result.grid_hypervolume <= 1
    assert result.grid_compute == pytest.approx(grid_compute(table))
    assert len({t.key for t in result.trials}) == len(result.trials)  # no row measured twice


def test_moasha_starts_more_trials_for_the_same_compute(table: Any) -> None:
    budget = 0.1 * grid_compute(table)
    plain = replay(table, random, moasha=False, budget=budget)
    early = replay(table, random, moasha=True, budget=budget)
    assert early.stopped > 0
    for fraction in (0.01, 0.03, 0.1):
        compute = fraction * grid_compute(table)
        assert trials_started_by(early, compute) > trials_started_by(plain, compute)


BUDGET_WITH_MOASHA = 0.03
"""Fraction of the grid's compute for replays with MOASHA: it stops most trials at the first rung (a few
percent of their cost), so this much already starts about a third of the configurations."""


@pytest.fixture(scope="module")
def early_stopped(table: Any) -> dict[str, ReplayResult]:
    """One replay with MOASHA per sampler (jittered durations), shared by the tests below."""
    budget = BUDGET_WITH_MOASHA * grid_compute(table)
    return {
        name: replay(table, sampler, moasha=True, budget=budget, seed=5, duration_jitter=0.2)
        for name, sampler in (("random", random), ("tpe", tpe))
    }


@pytest.mark.parametrize("name", ["random", "tpe"])
def test_stopped_trials_never_reach_the_front(early_stopped: dict[str, ReplayResult], name: str) -> None:
    result = early_stopped[name]
    stopped = {t.key for t in result.trials if t.status == "stopped"}
    complete = {t.key for t in result.trials if t.status == "complete"}
    assert stopped and complete
    assert set(result.front) <= complete and not set(result.front) & stopped
    assert all(t.iterations in (37, 111, 333) for t in result.trials if t.status == "stopped")
    assert np.all(np.diff(result.compute) >= 0) and np.all(np.diff(result.hypervolume) >= 0)
    assert result.hypervolume[-1] <= result.grid_hypervolume


@pytest.mark.parametrize("seed", range(3))
def test_the_whole_grid_bounds_every_replay(table: Any, seed: int) -> None:
    for moasha, budget in ((False, 0.5), (True, BUDGET_WITH_MOASHA)):
        result = replay(table, random, moasha=moasha, budget=budget * grid_compute(table), seed=seed)
        assert max(result.hypervolume) <= result.grid_hypervolume


@pytest.mark.parametrize(("name", "sampler"), [("random", random), ("tpe", tpe)], ids=["random", "tpe"])
def test_replays_are_deterministic_for_a_seed(
    table: Any, early_stopped: dict[str, ReplayResult], name: str, sampler: Callable[[int], Any]
) -> None:
    budget = BUDGET_WITH_MOASHA * grid_compute(table)
    again = replay(table, sampler, moasha=True, budget=budget, seed=5, duration_jitter=0.2)
    assert again == early_stopped[name]
    if name == "random":  # another seed: other proposals and other durations
        assert replay(table, sampler, moasha=True, budget=budget, seed=6, duration_jitter=0.2) != again


def test_hv_at_is_the_step_function_of_the_trace(table: Any) -> None:
    result = replay(table, random, moasha=False, budget=0.2 * grid_compute(table))
    assert hv_at(result, -1.0) == 0.0
    assert hv_at(result, 1e12) == result.hypervolume[-1]
    for i in range(1, len(result.compute)):
        if result.compute[i] > result.compute[i - 1]:
            middle = (result.compute[i - 1] + result.compute[i]) / 2
            assert hv_at(result, middle) == result.hypervolume[i - 1]
            assert hv_at(result, result.compute[i]) == result.hypervolume[i]


class ListSearcher(Searcher):
    """Proposes fixed configurations, then says it is finished; remembers what it was told."""

    def __init__(self, configs: list[dict[str, Any]]) -> None:
        super().__init__(metric=OBJECTIVES, mode=MODES)
        self.configs = list(configs)
        self.results: list[tuple[str, dict | None]] = []
        self.intermediate: list[str] = []

    def suggest(self, trial_id: str) -> dict | str | None:
        return self.configs.pop(0) if self.configs else Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.intermediate.append(trial_id)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.results.append((trial_id, result))


def test_searcher_hears_full_results_partial_results_and_duplicates(table: Any) -> None:
    rows = table.to_pylist()
    configs = [
        {k: rows[i][k] for k in ("strategy", "width", "beta", "phi", "scaling", "threshold")}
        for i in range(8)
    ]
    fixed = ListSearcher([*configs, configs[0]])
    result = simulate(
        table,
        searcher=fixed,
        scheduler_core=MOASHA(milestones=(37, 111, 333)),
        workers=1,
        budget_seconds=None,
        max_trials=None,
        seed=0,
    )
    assert len(result.trials) == 8 and result.duplicates == 1
    assert result.complete + result.stopped == 8
    told = dict(fixed.results)
    assert told[result.trials[0].trial_id]["partial"] == 0  # the first at every rung continues
    for trial in result.trials:
        outcome = told[trial.trial_id]
        assert outcome["partial"] == (trial.status == "stopped")
        assert outcome["retrain_iteration"] == trial.iterations
        if trial.status == "complete":
            row = next(r for r in rows if r["key"] == trial.key)
            assert (outcome["psnr"], outcome["train_time"]) == (row["psnr"], row["train_time"])
    assert told["replay_00008"] is None  # the repeat of configs[0]
    # one worker: trials run back to back, so the simulated wall time is the compute
    assert result.wall_seconds == pytest.approx(result.compute[-1])


def test_max_trials_and_an_exhausted_searcher_end_the_replay(table: Any) -> None:
    capped = replay(table, random, moasha=False, budget=None, max_trials=7)
    assert len(capped.trials) == 7 and capped.complete == 7
    empty = simulate(
        table,
        searcher=ListSearcher([]),
        scheduler_core=None,
        workers=2,
        budget_seconds=None,
        max_trials=None,
        seed=0,
    )
    assert empty.trials == () and empty.compute == (0.0,) and empty.hypervolume == (0.0,)


def test_a_searcher_with_nothing_now_leaves_the_worker_idle(table: Any) -> None:
    rows = table.to_pylist()[:3]
    configs = [{k: r[k] for k in ("strategy", "width", "beta", "phi", "scaling", "threshold")} for r in rows]

    class Sequential(ListSearcher):
        def suggest(self, trial_id: str) -> dict | str | None:
            running = int(trial_id.split("_")[1]) - len(self.results)
            return None if running >= 1 else super().suggest(trial_id)

    result = simulate(
        table,
        searcher=Sequential(configs),
        scheduler_core=None,
        workers=3,
        budget_seconds=None,
        max_trials=None,
        seed=0,
    )
    assert result.complete == 3
    assert result.compute[-1] == pytest.approx(sum(r["seconds"] for r in rows))
    assert result.wall_seconds == pytest.approx(result.compute[-1])  # one at a time despite 3 workers


def test_the_study_searcher_learns_through_the_tell_hook(table: Any) -> None:
    from study.search.searcher import StudySearcher, make_sampler

    study_searcher = StudySearcher(
        define=table_space(table),
        storage=optuna.storages.InMemoryStorage(),
        study_name="replay",
        sampler=make_sampler("tpe", 0),
    )
    result = simulate(
        table,
        searcher=study_searcher,
        scheduler_core=MOASHA(milestones=rung_milestones(1000, 3)),
        workers=4,
        budget_seconds=BUDGET_WITH_MOASHA * grid_compute(table),
        max_trials=None,
        seed=0,
        tell=study_searcher.tell,
    )
    assert result.duplicates == 0  # its own repeat guard answers repeats; table_space proposes rows
    trials = study_searcher.study.get_trials(deepcopy=False)
    measured = [t for t in trials if "repeat_of" not in t.user_attrs]
    states = {t.user_attrs["config_key"]: t.state.name for t in measured if t.state.name != "RUNNING"}
    assert states == {
        t.key: "COMPLETE" if t.status == "complete" else "PRUNED"
        for t in result.trials
        if t.status != "running"
    }
    best = {
        t.user_attrs.get("config_key") or t.user_attrs["repeat_of"] for t in study_searcher.study.best_trials
    }
    assert best <= {t.key for t in result.trials if t.status == "complete"}
