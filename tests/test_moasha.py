"""MOASHA: rung layout, non-dominated sorting and crowding, the asynchronous promotion rule, its state,
and the Ray Tune adapter in a real (small) Tune run."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from study.search.moasha import MOASHA, MOASHAScheduler, rung_milestones
from study.search.objectives import crowding_distance, nondominated_sort, rank


def values(psnr: float, train_time: float = 10.0, size_mb: float = 1.0) -> dict[str, float]:
    return {"psnr": psnr, "train_time": train_time, "size_mb": size_mb}


# --- rungs --------------------------------------------------------------------------------------------


def test_rungs_sit_at_fractions_of_the_budget() -> None:
    assert rung_milestones(1000, 3) == (37, 111, 333)
    assert rung_milestones(1000, 3, min_iters=12) == (12, 37, 111, 333)
    assert rung_milestones(1000, 3, min_iters=200) == (333,)
    assert rung_milestones(1000, 3, min_iters=400) == ()
    assert rung_milestones(2000, 2, min_iters=100) == (125, 250, 500, 1000)
    assert rung_milestones(100, 3) == (3, 11, 33)


def test_eta_must_exceed_one() -> None:
    with pytest.raises(ValueError):
        rung_milestones(100, 1)
    with pytest.raises(ValueError):
        MOASHA(milestones=(10,), eta=1)


def test_milestones_must_ascend() -> None:
    with pytest.raises(ValueError):
        MOASHA(milestones=(30, 10))


# --- sorting ------------------------------------------------------------------------------------------


def brute_force_fronts(objs: np.ndarray) -> list[list[int]]:
    def dominates(a: np.ndarray, b: np.ndarray) -> bool:
        return bool(np.all(a <= b) and np.any(a < b))

    left, fronts = set(range(len(objs))), []
    while left:
        front = sorted(i for i in left if not any(dominates(objs[j], objs[i]) for j in left))
        fronts.append(front)
        left -= set(front)
    return fronts


@pytest.mark.parametrize("seed", range(5))
def test_nondominated_sort_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    objs = rng.integers(0, 5, size=(30, 3)).astype(float)  # small integers: many ties and duplicates
    assert nondominated_sort(objs) == brute_force_fronts(objs)


def test_nondominated_sort_of_nothing() -> None:
    assert nondominated_sort(np.zeros((0, 3))) == []


def test_crowding_distance() -> None:
    objs = np.array([[0.0, 4.0], [1.0, 2.0], [3.0, 1.0], [4.0, 0.0]])
    distance = crowding_distance(objs, [0, 1, 2, 3])
    assert np.isinf(distance[0]) and np.isinf(distance[3])
    # neighbours' gaps over each objective's span: (3 - 0) / 4 + (4 - 1) / 4 and (4 - 1) / 4 + (2 - 0) / 4
    assert distance[1:3] == pytest.approx([1.5, 1.25])
    assert np.all(np.isinf(crowding_distance(objs, [1, 2])))


def test_rank_orders_fronts_then_crowding_then_arrival() -> None:
    objs = np.array(
        [
            [2.0, 2.0],  # dominated by 1: second front
            [1.0, 1.0],  # first front, interior
            [0.0, 3.0],  # first front, boundary
            [3.0, 0.0],  # first front, boundary
            [np.nan, 0.0],  # diverged: last
            [2.0, 2.0],  # duplicate of 0: after it
        ]
    )
    assert rank(objs) == [2, 3, 1, 0, 5, 4]


# --- the promotion rule -------------------------------------------------------------------------------


def test_first_trial_at_a_rung_continues_and_eta_bounds_the_rest() -> None:
    core = MOASHA(milestones=(10, 30), eta=3)
    assert core.decide("a", 10, values(20.0))  # alone: the best of 1
    assert not core.decide("b", 10, values(19.0))  # 1 of 2 continues: a
    assert core.decide("c", 10, values(21.0))  # better than both: the best of 3
    assert not core.decide("d", 10, values(18.0))
    assert not core.decide("e", 10, values(19.5))
    assert core.decide("f", 10, values(22.0))  # 2 of 6 continue
    assert core.counts() == {10: (6, 3), 30: (0, 0)}


def test_psnr_is_maximised_and_costs_minimised() -> None:
    core = MOASHA(milestones=(10,), eta=2)
    core.record("slow", 10, values(25.0, train_time=20.0))
    assert core.decide("fast", 10, values(25.0, train_time=10.0))
    core = MOASHA(milestones=(10,), eta=2)
    core.record("sharp", 10, values(25.0))
    assert not core.decide("blurry", 10, values(24.0))


def test_incomparable_trials_are_split_by_crowding() -> None:
    core = MOASHA(milestones=(10,), eta=2, keep_front=False)  # the plain best-1/eta rule
    # one front (PSNR costs time): its two ends are infinitely crowded, the interior is not
    front = [values(20.0, 5.0), values(22.0, 7.0), values(23.0, 8.0)]
    for i, v in enumerate(front):
        core.record(f"t{i}", 10, v)
    assert not core.decide("middle", 10, values(22.5, 7.5))  # 4 trials, 2 continue: both extremes
    assert core.decide("extreme", 10, values(26.0, 11.0))  # a new extreme


def test_a_trial_no_other_at_its_rung_dominates_goes_on_beyond_the_best_1_over_eta() -> None:
    front = [values(20.0, 5.0), values(22.0, 7.0), values(23.0, 8.0)]  # PSNR costs time: one front
    plain, keeping = MOASHA(milestones=(10,), eta=2, keep_front=False), MOASHA(milestones=(10,), eta=2)
    for core in (plain, keeping):
        for i, v in enumerate(front):
            core.record(f"t{i}", 10, v)
    assert not plain.decide("middle", 10, values(22.5, 7.5))  # 4 at the rung, 2 go on: the two ends
    assert keeping.decide("middle", 10, values(22.5, 7.5))  # but it is on the front: it goes on
    assert not keeping.decide("dominated", 10, values(21.0, 7.6))  # worse and slower than t1: it stops


def test_decisions_are_idempotent() -> None:
    core = MOASHA(milestones=(10,), eta=3)
    assert core.decide("a", 10, values(20.0))
    assert not core.decide("b", 10, values(19.0))
    for _ in range(3):
        assert core.decide("a", 10, values(0.0))  # re-reports, even with other values, keep the answer
        assert not core.decide("b", 10, values(99.0))
    assert core.decision("a", 10) is True and core.decision("b", 10) is False
    assert core.decision("c", 10) is None
    with pytest.raises(ValueError):
        core.decide("a", 11, values(20.0))


def test_recorded_history_counts_and_is_decided_when_reported_again() -> None:
    core = MOASHA(milestones=(10,), eta=3)
    core.record("old", 10, values(30.0))
    core.record("old", 10, values(0.0))  # recorded once
    core.record("kept", 10, values(10.0), decision=True)
    assert core.decision("old", 10) is None and core.decision("kept", 10) is True
    assert not core.decide("new", 10, values(25.0))  # 3 at the rung, old is better
    assert core.decide("old", 10, values(30.0))  # a resumed trial re-reports: decided now, first slot
    assert core.decide("kept", 10, values(0.0))  # its restored decision stands


def test_diverged_trials_rank_last_and_survive_the_state_round_trip() -> None:
    core = MOASHA(milestones=(10,), eta=2)
    core.decide("diverged", 10, {"psnr": None, "train_time": 1.0, "size_mb": 0.1})
    core.decide("nan", 10, values(float("nan")))
    assert core.decide("fine", 10, values(5.0, train_time=99.0))
    state = json.loads(json.dumps(core.state(), allow_nan=False))
    assert state["rungs"]["10"][0]["values"][0] is None
    assert MOASHA.from_state(state).state() == state


def test_missing_objectives_are_an_error() -> None:
    with pytest.raises(KeyError):
        MOASHA(milestones=(10,)).decide("a", 10, {"psnr": 20.0})


def test_state_round_trips_through_json_and_decides_alike() -> None:
    rng = np.random.default_rng(3)
    core = MOASHA(milestones=(10, 30), eta=3)
    reports = [
        (f"t{i}", int(m), values(*rng.uniform(1, 30, 3).tolist()))
        for i, m in zip(range(40), itertools.cycle((10, 30)))
    ]
    for trial_id, m, v in reports[:20]:
        core.decide(trial_id, m, v)
    core.record("history", 10, values(12.0))
    copy = MOASHA.from_state(json.loads(json.dumps(core.state())))
    assert copy.state() == core.state()
    for trial_id, m, v in reports[20:]:
        assert copy.decide(trial_id, m, v) == core.decide(trial_id, m, v)


# --- the Ray Tune adapter -----------------------------------------------------------------------------


def fake_trial(trial_id: str) -> Any:
    return SimpleNamespace(trial_id=trial_id)


def test_scheduler_decides_at_rungs_only() -> None:
    scheduler = MOASHAScheduler(max_iters=90, eta=3, min_iters=10)
    assert scheduler.core.milestones == (10, 30)
    a, b = fake_trial("a"), fake_trial("b")
    report = lambda it, psnr: {**values(psnr), "retrain_iteration": it}
    assert scheduler.on_trial_result(None, a, report(5, 20.0)) == "CONTINUE"  # before the first rung
    assert scheduler.on_trial_result(None, a, report(10, 20.0)) == "CONTINUE"
    assert scheduler.on_trial_result(None, b, report(10, 10.0)) == "STOP"
    assert scheduler.on_trial_result(None, b, report(10, 10.0)) == "STOP"  # a re-report
    assert scheduler.on_trial_result(None, a, report(20, 20.0)) == "CONTINUE"  # between rungs
    assert scheduler.on_trial_result(None, a, {**values(25.0), "iterations": 90}) == "CONTINUE"  # final
    assert scheduler.core.counts() == {10: (2, 1), 30: (0, 0)}
    c = fake_trial("c")
    assert scheduler.on_trial_result(None, c, report(40, 30.0)) == "CONTINUE"  # skipped 10: decided at 30
    assert scheduler.core.decision("c", 10) is None and scheduler.core.decision("c", 30) is True
    assert (
        scheduler.on_trial_result(None, c, report(15, 30.0)) == "CONTINUE"
    )  # resumed from an older checkpoint
    assert scheduler.core.decision("c", 10) is None
    assert "1 stopped" in scheduler.debug_string()


def test_scheduler_accepts_matching_search_properties() -> None:
    scheduler = MOASHAScheduler(max_iters=1000)
    assert scheduler.metric == "psnr"
    assert scheduler.set_search_properties(None, None)
    assert scheduler.set_search_properties("psnr", "max")
    assert scheduler.set_search_properties("size_mb", "min")
    assert scheduler.set_search_properties(["psnr", "train_time", "size_mb"], ["max", "min", "min"])
    assert not scheduler.set_search_properties("psnr", "min")
    assert not scheduler.set_search_properties("loss", "min")
    assert not scheduler.set_search_properties(["train_time", "psnr", "size_mb"], ["min", "max", "min"])


def test_scheduler_rungs_must_lie_below_the_budget() -> None:
    with pytest.raises(ValueError):
        MOASHAScheduler(max_iters=100, core=MOASHA(milestones=(50, 100)))


def test_scheduler_state_survives_save_and_restore(tmp_path) -> None:
    scheduler = MOASHAScheduler(max_iters=90, eta=3, min_iters=10)
    scheduler.on_trial_result(None, fake_trial("a"), {**values(20.0), "retrain_iteration": 10})
    scheduler.on_trial_result(None, fake_trial("b"), {**values(10.0), "retrain_iteration": 10})
    scheduler.save(str(tmp_path / "s.json"))
    restored = MOASHAScheduler(max_iters=90, eta=3, min_iters=10)
    restored.restore(str(tmp_path / "s.json"))
    assert restored.core.state() == scheduler.core.state()
    assert restored.debug_string() == scheduler.debug_string()


# --- a real Tune run ----------------------------------------------------------------------------------

# trial k of the grid: PSNR climbs by `gain` per 10 iterations from 20 dB; time and size fixed. Trial 0
# dominates every other at every iteration, trial 5 is dominated by every other.
CURVES = [
    {"gain": 1.0, "train_time": 5.0, "size_mb": 1.0},
    {"gain": 0.9, "train_time": 6.0, "size_mb": 1.2},
    {"gain": 0.8, "train_time": 5.5, "size_mb": 1.1},
    {"gain": 0.7, "train_time": 7.0, "size_mb": 1.3},
    {"gain": 0.6, "train_time": 6.5, "size_mb": 1.4},
    {"gain": 0.1, "train_time": 9.0, "size_mb": 2.0},
]
MAX_ITERS = 90


def synthetic_trainable() -> Callable[[dict[str, Any]], None]:
    """A function trainable; nested so that Ray pickles it by value (workers cannot import tests/)."""
    curves, max_iters = CURVES, MAX_ITERS

    def trainable(config: dict[str, Any]) -> None:
        from ray import tune

        curve = curves[config["k"]]
        for iteration in range(10, max_iters + 1, 10):
            tune.report(
                {
                    "psnr": 20.0 + curve["gain"] * iteration / 10,
                    "train_time": curve["train_time"],
                    "size_mb": curve["size_mb"],
                    "retrain_iteration": iteration,
                }
            )

    return trainable


@pytest.fixture(scope="module")
def tune_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import os

    import ray
    from ray import tune

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    scheduler = MOASHAScheduler(max_iters=MAX_ITERS, eta=3, min_iters=10)
    tuner = tune.Tuner(
        tune.with_resources(synthetic_trainable(), {"cpu": 1}),
        param_space={"k": tune.grid_search(list(range(len(CURVES))))},
        tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path_factory.mktemp("tune")), verbose=0),
    )
    grid = tuner.fit()
    yield SimpleNamespace(scheduler=scheduler, grid=grid)
    ray.shutdown()


def test_tune_run_stops_dominated_trials_and_runs_the_best_to_the_end(tune_run: Any) -> None:
    core: MOASHA = tune_run.scheduler.core
    assert core.milestones == (10, 30)
    assert not tune_run.grid.errors
    last = {r.config["k"]: r.metrics["retrain_iteration"] for r in tune_run.grid}
    trial_of = {r.config["k"]: r.metrics["trial_id"] for r in tune_run.grid}
    assert last[0] == MAX_ITERS  # dominates everything: always continued
    assert last[5] == 10  # starts after four trials left rung 10, is dominated by all of them: stopped
    stopped = [k for k, it in last.items() if it < MAX_ITERS]
    assert stopped
    for k, iteration in last.items():
        decisions = [core.decision(trial_of[k], m) for m in core.milestones if m <= iteration]
        # every rung a trial reached was decided, and only its last one can have stopped it
        assert all(d is not None for d in decisions)
        assert decisions[:-1] == [True] * (len(decisions) - 1)
        assert decisions[-1] is (iteration == MAX_ITERS)


def test_tune_run_never_lets_a_trial_wait(tune_run: Any) -> None:
    # asynchronous: every trial ends TERMINATED in one pass (none paused, none pending)
    assert tune_run.grid.num_terminated == len(CURVES)
    state = tune_run.scheduler.core.state()
    assert all(e["decision"] is not None for entries in state["rungs"].values() for e in entries)
