"""The tabular benchmark kept in the repository (bench/tables/lego50.parquet, made by
bench/build_table.py on lego at 50 px): it is well-formed, and short studies replayed on it exercise the
project's own searcher, repeat guard and MOASHA in seconds (the full comparison is
bench/search_efficiency.py, run by hand)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from study.search.replay import hv_at
from study.search.space import STRATEGIES
from study.search.table import bench_metadata, load_table

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "bench" / "tables" / "lego50.parquet"


def search_efficiency():
    spec = importlib.util.spec_from_file_location(
        "search_efficiency", ROOT / "bench" / "search_efficiency.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def table():
    return load_table(TABLE)


def test_the_table_covers_the_full_space_and_says_how_it_was_made(table) -> None:
    rows = table.to_pylist()
    assert len(rows) >= 100 and len({r["key"] for r in rows}) == len(rows)
    assert {r["strategy"] for r in rows} == set(STRATEGIES)
    meta = bench_metadata(table)
    assert "bench/build_table.py" in meta["command"] and meta["machine"]["cpu_model"]
    assert meta["dense"]["psnr"] > 20  # a real lego model, not a synthetic table
    for r in rows:
        assert (
            r["rung_iterations"] == sorted(r["rung_iterations"])
            and r["rung_iterations"][-1] < r["retrain_iters"]
        )
        assert len(r["rung_psnr"]) == len(r["rung_train_time"]) == len(r["rung_iterations"])


@pytest.fixture(scope="module")
def replays(table):
    module = search_efficiency()
    return {
        setup: module.replay(table, setup, seed=0, workers=2, budget_fraction=0.3)
        for setup in ("random", "tpe_moasha")
    }


def test_moasha_stops_trials_at_rungs_and_keeps_them_off_the_front(replays) -> None:
    result = replays["tpe_moasha"]
    stopped = {t.key for t in result.trials if t.status == "stopped"}
    complete = {t.key for t in result.trials if t.status == "complete"}
    assert stopped and complete
    assert set(result.front) <= complete
    assert replays["random"].stopped == 0


def test_no_configuration_is_run_twice(replays) -> None:
    for result in replays.values():
        keys = [t.key for t in result.trials]
        assert len(keys) == len(set(keys))


def test_a_replayed_study_finds_most_of_the_grids_front(replays) -> None:
    """Seed 0 at 30% of the grid's compute; the 10-seed medians are in the README."""
    for result in replays.values():
        assert 0.5 < result.hypervolume[-1] / result.grid_hypervolume <= 1.0


def test_the_headline_holds_over_seeds(table) -> None:
    """The README's claim, checked where it is made: at 20% of the grid's compute, TPE with MOASHA's
    share of the grid's hypervolume over five seeds is above random search's at every quartile (one
    lucky seed is no result), and above 95%. (At 30% the two are within each other's spread on the
    space the study really searches: the README's table says so.) Ten replays take about 20 s."""
    module = search_efficiency()
    share: dict[str, list[float]] = {}
    for setup in ("random", "tpe_moasha"):
        results = [module.replay(table, setup, seed=s, workers=2, budget_fraction=0.2) for s in range(5)]
        share[setup] = [hv_at(r, 0.2 * r.grid_compute) / r.grid_hypervolume for r in results]
    ours, random = module.quartiles(share["tpe_moasha"]), module.quartiles(share["random"])
    assert all(ours[q] > random[q] for q in ("min", "q1", "median", "q3")), (ours, random)
    assert ours["median"] >= 0.95, ours


def test_nsga2_is_replayed_on_its_own_flat_space_not_as_random_search(table) -> None:
    """NSGA-II was once replayed on the conditional table space, where its one crossable parameter made
    every child a random draw: its proposals were random search's, trial for trial."""
    module = search_efficiency()
    keys = {
        setup: [t.key for t in module.replay(table, setup, seed=0, workers=2, budget_fraction=0.1).trials]
        for setup in ("random", "nsga2")
    }
    assert keys["nsga2"] != keys["random"]
