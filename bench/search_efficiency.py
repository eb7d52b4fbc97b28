"""How much of the best front a search finds for its compute, replayed against the tabular benchmark.

    python bench/search_efficiency.py [--table bench/tables/lego50.parquet] [--seeds 10] [--workers 2] [--json]

For each search set-up (random search, TPE, NSGA-II, TPE with MOASHA; `--setups gp` adds Optuna's
GPSampler) and each seed, the project's own searcher (`study.search.searcher.StudySearcher`, repeat guard
included) and scheduler core (`study.search.moasha.MOASHA`) search the space `study launch --space full`
gives the sampler (`SearchSpace.define_for`), each proposal run as its table row
(`study.search.table.snapped`), asynchronous workers in simulated time charged the table's measured
durations (`study.search.replay.simulate`). Printed: the median over seeds of the hypervolume reached at
fractions of the whole grid's compute, over the hypervolume of the whole grid's front, and the spread
over seeds at 30%. `--json` prints one object with `grid_hypervolume`, `grid_compute` and, per set-up,
`hv_fraction_at_30pct` (and the other fractions), `hv_quartiles_at_30pct` and `stops_by_rung`.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402

from study.search.moasha import MOASHA  # noqa: E402
from study.search.replay import hv_at, simulate  # noqa: E402
from study.search.searcher import StudySearcher, make_sampler  # noqa: E402
from study.search.space import get_space  # noqa: E402
from study.search.table import bench_metadata, load_table, snapped  # noqa: E402

SETUPS = ("random", "tpe", "nsga2", "tpe_moasha")
FRACTIONS = (0.1, 0.2, 0.3, 0.5)
DEFAULT_TABLE = ROOT / "bench" / "tables" / "lego50.parquet"


def replay(table, setup: str, seed: int, *, workers: int, budget_fraction: float, keep_front: bool = True):
    """One replay of a set-up on the table: the sampler searches the space `study launch --space full`
    gives it (`SearchSpace.define_for`), its proposals run as the table's nearest rows."""
    name = "random" if setup == "random" else setup.removesuffix("_moasha")
    # Optuna 5's GPSampler (logEHVI for several objectives) is measured here, not offered by the study yet
    sampler = (
        optuna.samplers.GPSampler(seed=seed, n_startup_trials=8) if name == "gp" else make_sampler(name, seed)
    )
    searcher = StudySearcher(
        define=snapped(table, get_space("full").define_for(name)),
        storage=optuna.storages.InMemoryStorage(),
        study_name=f"{setup}-{seed}",
        sampler=sampler,
    )
    core = None
    if setup.endswith("_moasha"):
        eta = bench_metadata(table)["eta"]
        milestones = tuple(table.column("rung_iterations")[0].as_py())
        core = MOASHA(milestones=milestones, eta=eta, keep_front=keep_front)
    grid_compute = sum(table.column("seconds").to_pylist())
    return simulate(
        table,
        searcher=searcher,
        scheduler_core=core,
        workers=workers,
        budget_seconds=budget_fraction * grid_compute,
        max_trials=None,
        seed=seed,
        tell=searcher.tell,
    )


def quartiles(values: list[float]) -> dict[str, float]:
    """min, q1, median, q3, max (the spread over seeds; one seed's luck is not a result)."""
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return {"min": min(values), "q1": q1, "median": median, "q3": q3, "max": max(values)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--setups", nargs="+", default=list(SETUPS), choices=(*SETUPS, "gp"))
    p.add_argument(
        "--strict-halving",
        action="store_true",
        help="MOASHA without its keep-front rule: only the best 1/eta at a rung go on (Syne Tune's rule)",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    table = load_table(args.table)
    start = time.perf_counter()
    out: dict = {
        "table": str(args.table),
        "configurations": table.num_rows,
        "seeds": args.seeds,
        "workers": args.workers,
        "keep_front": not args.strict_halving,
        "bench": bench_metadata(table),
    }
    for setup in args.setups:
        fractions: dict[float, list[float]] = {f: [] for f in FRACTIONS}
        trials, stopped, by_rung = [], [], collections.Counter()
        for seed in range(args.seeds):
            result = replay(
                table,
                setup,
                seed,
                workers=args.workers,
                budget_fraction=max(FRACTIONS),
                keep_front=not args.strict_halving,
            )
            out["grid_hypervolume"], out["grid_compute"] = result.grid_hypervolume, result.grid_compute
            for f in FRACTIONS:
                fractions[f].append(hv_at(result, f * result.grid_compute) / result.grid_hypervolume)
            trials.append(len(result.trials))
            stopped.append(result.stopped)
            by_rung.update(t.iterations for t in result.trials if t.status == "stopped")
        out[setup] = {
            **{f"hv_fraction_at_{round(100 * f)}pct": statistics.median(v) for f, v in fractions.items()},
            "hv_fraction_at_30pct_by_seed": fractions[0.3],
            "hv_quartiles_at_30pct": quartiles(fractions[0.3]),
            "stops_by_rung": {str(k): v / args.seeds for k, v in sorted(by_rung.items())},
            "median_trials_started": statistics.median(trials),
            "median_trials_stopped": statistics.median(stopped),
        }
    out["seconds"] = time.perf_counter() - start
    if args.json:
        print(json.dumps(out, indent=2))
        return out
    print(
        f"{args.table.name}: {table.num_rows} configurations; whole grid: hypervolume "
        f"{out['grid_hypervolume']:.4f}, {out['grid_compute']:.0f} trial-seconds; {args.seeds} seeds, "
        f"{args.workers} workers; replayed in {out['seconds']:.1f} s"
    )
    print(
        "| search | "
        + " | ".join(f"HV at {round(100 * f)}% of grid compute" for f in FRACTIONS)
        + " | HV at 30%: min / q1 / q3 / max over seeds | trials started (stopped) at 50% |"
    )
    print("|---|" + "---|" * (len(FRACTIONS) + 2))
    for setup in args.setups:
        s = out[setup]
        print(
            f"| {setup} | "
            + " | ".join(f"{100 * s[f'hv_fraction_at_{round(100 * f)}pct']:.1f}%" for f in FRACTIONS)
            + " | "
            + " / ".join(f"{100 * s['hv_quartiles_at_30pct'][q]:.1f}" for q in ("min", "q1", "q3", "max"))
            + f" | {s['median_trials_started']:.0f} ({s['median_trials_stopped']:.0f}) |"
        )
    print_stops(out, args.setups)
    return out


def print_stops(out: dict, setups: list[str]) -> None:
    for setup in setups:
        if out[setup]["stops_by_rung"]:
            stops = ", ".join(f"{n:.1f} at {it}" for it, n in out[setup]["stops_by_rung"].items())
            print(f"{setup}: trials stopped per seed by rung (iterations): {stops}")


if __name__ == "__main__":
    main()
