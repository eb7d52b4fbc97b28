"""Build the tabular benchmark: a grid over the `full` space, every configuration retrained on one scene and
budget, its objectives recorded at every early-stopping rung and at the end.

    python bench/build_table.py [--data ../shared/data/nerf_synthetic/lego --downscale 8]
        [--retrain-iters 270] [--workers 2] [--out bench/tables/lego50.parquet]

The table (`study.search.table`'s schema; a few tens of kB) is kept in the repository with the command and the
machine that made it, and `bench/search_efficiency.py` replays whole studies against it in seconds. Each
configuration runs exactly as a study's trial does (`study.run.trial.execute_trial`, one thread per worker,
the dense model and its occupancy grid shared), rung objectives measured as MOASHA sees them: PSNR on
the study's fixed validation rays, seconds per 1k steps so far, size. Resumable: rows already in
--out are kept and not run again.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from study.search.space import config_key, trial_config  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "nerf_synthetic" / "lego"
WIDTHS = (16, 32, 48, 64, 96, 128, 160, 192, 224)


def grid() -> list[dict]:
    """About 150 configurations of the `full` space: every strategy and width, edge thresholds, hybrids,
    and coreset's phi, beta and scaling (beta only where it is a parameter: phi tanh or exp)."""
    configs = [trial_config("edge", threshold=t) for t in (0.0, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2)]
    for strategy in ("uniform", "importance-in", "importance-out", "importance-prod"):
        configs += [trial_config(strategy, w) for w in WIDTHS]
        configs += [trial_config(strategy, w, threshold=t) for w in (48, 96, 160, 224) for t in (0.03, 0.06)]
    for scaling in ("unbiased", "none"):
        configs += [trial_config("coreset", w, phi="relu", scaling=scaling) for w in WIDTHS]
    configs += [
        trial_config("coreset", w, beta=b, phi=phi, scaling="none")
        for w in (32, 64, 128, 192)
        for phi, b in (("tanh", 0.3), ("tanh", 3.0), ("exp", 1.0))
    ]
    configs += [
        trial_config("coreset", w, phi="relu", scaling="none", threshold=t)
        for w in (48, 96, 160, 224)
        for t in (0.03, 0.06)
    ]
    keys = [config_key(c) for c in configs]
    assert len(set(keys)) == len(keys), "the grid repeats a configuration"
    return configs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--downscale", type=int, default=8)
    p.add_argument("--dense-iters", type=int, default=2000)
    p.add_argument("--retrain-iters", type=int, default=270)
    p.add_argument("--rays-per-step", type=int, default=256)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--eval-views", type=int, default=8)
    p.add_argument("--eta", type=int, default=3)
    p.add_argument("--sampling", default="occupancy")
    p.add_argument("--workers", type=int, default=2, help="trials at once, one thread each (as a study's)")
    p.add_argument("--limit", type=int, default=None, help="only the first N configurations (smoke runs)")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "tables" / "lego50.parquet")
    return p.parse_args(argv)


_shared: dict = {}


def _init(payload: dict) -> None:
    torch.set_num_threads(1)
    _shared.update(payload)


def time_dense(_: int) -> float:
    """Seconds per dense step in one pool worker, while the others time theirs: the reference point's
    time under the rows' own conditions (one thread each, `workers` at once)."""
    from study.run.reference import dense_step_seconds

    return dense_step_seconds(_shared["dense"], _shared["scene"], _shared["settings"])


def run_one(config: dict) -> dict:
    from study.run.trial import execute_trial

    rungs: list[dict] = []
    start = time.perf_counter()
    run = execute_trial(
        config,
        scene=_shared["scene"],
        rays=_shared["rays"],
        dense=_shared["dense"],
        settings=_shared["settings"],
        validation=_shared["validation"],
        on_rung=lambda iteration, values: rungs.append({"iteration": iteration, **values}),
    )
    m = run.metrics
    return {
        **config,
        "key": config_key(config),
        "psnr": m["psnr"],
        "train_time": m["train_time"],
        "size_mb": m["size_mb"],
        "seconds": time.perf_counter() - start,
        "retrain_iters": _shared["settings"].budget.retrain_iters,
        "rung_iterations": [r["iteration"] for r in rungs],
        "rung_psnr": [r["psnr"] for r in rungs],
        "rung_train_time": [r["train_time"] for r in rungs],
    }


def main(argv: list[str] | None = None) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nerf.data.loader import load_scene
    from nerf.experiment import machine_info
    from nerf.rays import build_rays_table
    from study.run.dense import dense_config
    from study.run.dense_cache import load_or_train
    from study.run.options import StudyOptions
    from study.run.reference import validation_rays
    from study.run.trial import TrialSettings
    from study.search.moasha import rung_milestones
    from study.search.space import Budget
    from study.search.table import SCHEMA, with_metadata

    args = parse_args(argv)
    budget = Budget(
        description="tabular benchmark",
        downscale=args.downscale,
        rays_per_step=args.rays_per_step,
        samples=args.samples,
        dense_iters=args.dense_iters,
        retrain_iters=args.retrain_iters,
        eval_views=args.eval_views,
        trials=0,
    )
    scene = load_scene(args.data, downscale=args.downscale)
    options = StudyOptions(data=args.data, seed=0)
    config = dense_config(options, budget, sampling=args.sampling, device="cpu")
    dense = load_or_train(config, scene, cache_dir=args.cache_dir)
    print(f"dense model: {dense.metrics['psnr']:.2f} dB ({dense.path})", flush=True)
    settings = TrialSettings(
        budget=budget,
        seed=0,
        precision="auto",
        sampling=args.sampling,
        threads=1,
        use_gpu=False,
        checkpoint_every=0,
        milestones=rung_milestones(args.retrain_iters, args.eta),
    )
    done: dict[str, dict] = {}
    if args.out.is_file():
        done = {r["key"]: r for r in pq.read_table(args.out).to_pylist()}
    todo = [c for c in grid()[: args.limit] if config_key(c) not in done]
    print(f"{len(done)} configurations measured, {len(todo)} to run with {args.workers} workers", flush=True)
    payload = {
        "scene": scene,
        "rays": build_rays_table(scene, "train"),
        "dense": dense,
        "settings": settings,
        "validation": validation_rays(scene, seed=0),
    }
    command = "python bench/build_table.py " + " ".join(sys.argv[1:] if argv is None else argv)
    rows = list(done.values())

    def save() -> None:
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        table = with_metadata(
            table,
            dense={
                "psnr": dense.metrics["psnr"],
                "train_time": dense_time,
                "size_mb": dense.metrics["size_mb"],
            },
            eta=args.eta,
            command=command,
            machine=machine_info(),
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, args.out)

    with mp.get_context("spawn").Pool(args.workers, initializer=_init, initargs=(payload,)) as pool:
        # the reference's time: the dense model timed as the rows are, `workers` copies at once
        dense_time = 1000.0 * statistics.median(pool.map(time_dense, range(args.workers), chunksize=1))
        for i, row in enumerate(pool.imap_unordered(run_one, todo), 1):
            rows.append(row)
            print(
                f"[{i}/{len(todo)}] {row['key']}: {row['psnr']:.2f} dB, {row['train_time']:.1f} s/1k, "
                f"{row['size_mb']:.3f} MB, {row['seconds']:.1f} s",
                flush=True,
            )
            if i % 10 == 0:
                save()
    save()
    print(json.dumps({"rows": len(rows), "out": str(args.out)}))
    return args.out


if __name__ == "__main__":
    main()
