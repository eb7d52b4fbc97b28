"""`study`: the command line. Thin: parses options into configs and calls the library.

Bad input exits with code 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Optional

import typer

from common.errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Pruning study for Neural Radiance Fields.")


@app.callback()
def root() -> None:
    """Pruning study for Neural Radiance Fields: train, prune, search, report."""


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def progress_printer(total: int, label: str) -> tuple[Callable, Callable]:
    """Progress of a training run: a live bar (loss, PSNR, it/s) on a terminal, else a plain line about
    every 10% so that logs of jobs and CI show it too. Returns (on_step, close)."""
    if not sys.stderr.isatty():
        every = max(1, total // 10)
        last = [0]

        def on_line(stats) -> None:
            if stats.iteration - last[0] >= every or stats.iteration == total:
                last[0] = stats.iteration
                typer.echo(f"{label}: {stats.iteration}/{total} loss {stats.loss:.4f} "
                           f"psnr {stats.psnr:.2f} dB {stats.iters_per_s:.1f} it/s", err=True)

        return on_line, lambda: None

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]:.4f}  psnr {task.fields[psnr]:.2f} dB  "
                                   "{task.fields[ips]:.1f} it/s"), TimeRemainingColumn(),
                        console=Console(stderr=True), transient=False)
    task = progress.add_task(label, total=total, loss=float("nan"), psnr=float("nan"), ips=0.0)

    def on_step(stats) -> None:
        progress.start()  # at the first step: no bar at all for a run that never steps (a cache hit)
        progress.update(task, completed=stats.iteration, loss=stats.loss, psnr=stats.psnr,
                        ips=stats.iters_per_s)

    return on_step, progress.stop


def dense_progress(total: int) -> tuple[Callable, Callable]:
    """Progress of a study's dense model (only shown when it is trained here, not found in the cache):
    the bar closes at its last step, so that the trial lines that follow do not run through it."""
    on_step, close = progress_printer(total, "dense model")

    def step(stats) -> None:
        on_step(stats)
        if stats.iteration >= total:
            close()

    return step, close


def parse_ints(text: str, name: str) -> list[int]:
    """'256,128,64' -> [256, 128, 64]; anything else is a one-line error naming the bad value."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--{name} must be comma-separated positive integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise InputError(f"--{name} must be comma-separated positive integers, got {text!r}")
    return values


def summary_line(metrics: dict) -> str:
    return (f"psnr {metrics['psnr']:.2f} dB  ssim {metrics['ssim']:.3f}  params {metrics['params']:,}  "
            f"size {metrics['size_mb']:.3f} MB  {metrics['seconds_per_1k_iters']:.1f} s/1k iters  "
            f"({metrics['iterations']} iters, eval on {len(metrics['eval_views'])} views)")


@app.command()
def dense(
    data: str = typer.Option("synthetic", help="'synthetic' (built-in scene), a Blender or LLFF folder, "
                                                "or a tiny_nerf .npz file."),
    downscale: int = typer.Option(1, help="Integer factor to shrink images by on load (area average)."),
    iters: int = typer.Option(3000, help="Training iterations."),
    out: Path = typer.Option(Path("runs/dense"), help="Output folder (metrics.json, model.pt, renders/)."),
    rays_per_step: int = typer.Option(256, help="Random rays per step, across all training images."),
    samples: int = typer.Option(64, help="Stratified samples per ray (coarse network)."),
    fine_samples: int = typer.Option(0, help="Extra samples per ray for a fine network (0: coarse only)."),
    lr: float = typer.Option(5e-4, help="Initial Adam learning rate."),
    lr_decay_iters: int = typer.Option(250_000, help="Iterations over which the lr falls tenfold."),
    precrop_iters: int = typer.Option(0, help="Early iterations that sample only the image centres."),
    precision: str = typer.Option("auto", help="auto | fp32 | bf16 | fp16 (auto: bf16 where native)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: all cores)."),
    seed: int = typer.Option(0, help="Seed for model init, ray sampling and the built-in scene."),
    eval_views: int = typer.Option(8, help="Test views scored, evenly spaced over the test split."),
    eval_all: bool = typer.Option(False, "--eval-all", help="Score every test view."),
) -> None:
    """Train a dense NeRF once and evaluate it on test views."""
    from nerf.evaluate import EvalConfig
    from nerf.experiment import DataConfig, DenseConfig, run_dense
    from nerf.render import RenderConfig
    from nerf.train import TrainConfig

    try:
        if eval_views < 1:
            raise InputError(f"eval views must be a positive integer, got {eval_views}")
        if samples < 2:
            raise InputError(f"samples per ray must be >= 2, got {samples}")
        if fine_samples < 0:
            raise InputError(f"fine samples must be >= 0, got {fine_samples}")
        config = DenseConfig(
            data=DataConfig(data, downscale=downscale),
            render=RenderConfig(n_samples=samples, n_importance=fine_samples),
            train=TrainConfig(iterations=iters, rays_per_step=rays_per_step, lr=lr,
                              lr_decay_iters=lr_decay_iters, precrop_iters=precrop_iters, seed=seed,
                              precision=precision, device=device, threads=threads),
            eval=EvalConfig(max_views=None if eval_all else eval_views))
        from nerf.device import resolve_device, resolve_precision
        resolve_precision(precision, resolve_device(device))  # refuse bad values before loading data
        scene = config.data.load(seed=seed)
        on_step, close = progress_printer(iters, f"dense {scene.name} {scene.height}px")
        try:
            metrics = run_dense(config, out, on_step=on_step, scene=scene)
        finally:
            close()
    except InputError as exc:
        fail(str(exc))
    typer.echo(summary_line(metrics))
    typer.echo(f"wall {metrics['wall_seconds']:.1f} s; wrote {out}/metrics.json, {out}/model.pt, "
               f"{out}/renders/")


@app.command()
def prune(
    checkpoint: Path = typer.Option(..., help="A `study dense` output folder or a model.pt file."),
    strategy: str = typer.Option(..., help="edge | uniform | importance-in | importance-out | "
                                           "importance-prod | coreset"),
    width: Optional[int] = typer.Option(None, help="Neurons kept per pruned layer (1..256; structured)."),
    beta: float = typer.Option(3.0, help="Coreset upper-bound controller beta (> 0)."),
    phi: str = typer.Option("relu", help="Coreset activation phi: relu (the paper; beta cancels) | tanh | exp."),
    scaling: str = typer.Option("unbiased", help="Coreset reweighting of kept neurons: unbiased "
                                                 "(Algorithm 1) | none."),
    threshold: float = typer.Option(0.0, help="Edge threshold on |w| (>= 0); with a structured strategy "
                                              "it is applied after shrinking (hybrid)."),
    prune_view: bool = typer.Option(False, "--prune-view", help="Also prune the 128-wide view layer to "
                                                                "half the width."),
    retrain_iters: int = typer.Option(1000, help="Retraining iterations after pruning."),
    rays_per_step: Optional[int] = typer.Option(None, help="Rays per step (default: the dense run's)."),
    data: Optional[str] = typer.Option(None, help="Scene path, if it moved since the dense run."),
    precision: str = typer.Option("auto", help="auto | fp32 | bf16 | fp16."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch."),
    seed: int = typer.Option(0, help="Seed for neuron sampling and retraining."),
    eval_views: int = typer.Option(8, help="Test views scored."),
    out: Path = typer.Option(Path("runs/pruned"), help="Output folder (metrics.json, model.pt, renders/)."),
) -> None:
    """Prune a trained NeRF with one of the paper's methods, retrain it, and evaluate it."""
    from nerf.checkpoint import load_checkpoint
    from nerf.evaluate import EvalConfig
    from nerf.train import TrainConfig
    from pruning import PruneSpec, run_prune
    from pruning.retrain import dense_config_of

    try:
        spec = PruneSpec(strategy=strategy, width=width, beta=beta, phi=phi, scaling=scaling,
                         threshold=threshold,
                         prune_view=prune_view)
        _, _, meta = load_checkpoint(checkpoint)
        dense_train = dense_config_of(meta).get("train", {})
        retrain = TrainConfig(iterations=retrain_iters,
                              rays_per_step=rays_per_step or dense_train.get("rays_per_step", 256),
                              seed=seed, precision=precision, device=device, threads=threads)
        on_step, close = progress_printer(retrain_iters, f"retrain {strategy}")
        try:
            metrics = run_prune(checkpoint, spec, retrain=retrain, out_dir=out, data_source=data,
                                eval_config=EvalConfig(max_views=eval_views), on_step=on_step)
        finally:
            close()
    except InputError as exc:
        fail(str(exc))
    typer.echo(f"before retraining: psnr {metrics['pre_retrain_psnr']:.2f} dB; kept fraction "
               f"{metrics['kept_fraction']:.3f}; nonzero params {metrics['nonzero_params']:,}")
    typer.echo(summary_line(metrics))
    typer.echo(f"wrote {out}/metrics.json, {out}/model.pt, {out}/renders/")


@app.command()
def spaces() -> None:
    """List the search-space presets with their parameters and budgets."""
    from study.spaces import SPACES

    for space in SPACES.values():
        b = space.budget
        typer.echo(f"{space.name}: {space.description}")
        for name, rng in space.parameters.items():
            typer.echo(f"    {name:<10} {rng}")
        typer.echo(f"    budget: downscale {b.downscale}, {b.rays_per_step} rays x {b.samples} samples, dense "
                   f"{b.dense_iters} iters (once, cached), {b.retrain_iters} retrain iters/trial, "
                   f"{b.trials} trials, {b.eval_views} eval views")
        typer.echo(f"    cost: ~{b.trials * b.retrain_iters:,} retraining iterations + "
                   f"{b.dense_iters:,} dense iterations")


@app.command()
def launch(
    space: str = typer.Option("quick", help="Search space: quick | paper | full (see `study spaces`)."),
    data: str = typer.Option("synthetic", help="'synthetic' or a Blender / LLFF folder or .npz file."),
    out: Path = typer.Option(Path("runs/study"), help="Study folder."),
    trials: Optional[int] = typer.Option(None, help="Number of trials (default: the space's)."),
    max_concurrent: int = typer.Option(2, help="Trials running at once."),
    cpus_per_trial: float = typer.Option(1.0, help="CPU cores per trial."),
    gpus_per_trial: float = typer.Option(0.0, help="GPUs per trial (fractions pack trials on a GPU)."),
    sampler: str = typer.Option("tpe", help="tpe | nsga2 | random (the paper space is a grid)."),
    seed: int = typer.Option(0, help="Seed for the dense model, the sampler and the trials."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address ('auto' inside a Ray job)."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow URI (default: sqlite in the study folder)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the study in --out."),
    precision: str = typer.Option("auto", help="auto | fp32 | bf16 | fp16."),
    downscale: Optional[int] = typer.Option(None, help="Override the space's image downscale."),
    dense_iters: Optional[int] = typer.Option(None, help="Override the space's dense iterations."),
    retrain_iters: Optional[int] = typer.Option(None, help="Override the space's retraining iterations."),
    rays_per_step: Optional[int] = typer.Option(None, help="Override the space's rays per training step."),
    samples: Optional[int] = typer.Option(None, help="Override the space's coarse samples per ray."),
    eval_views: Optional[int] = typer.Option(None, help="Override the space's number of test views scored."),
    storage_path: Optional[str] = typer.Option(None, help="Trial folders and checkpoints: a path every "
                                                          "node sees, or s3:// / gs:// (multi-node)."),
    trial_retries: int = typer.Option(2, help="Restarts of a crashed trial from its last checkpoint."),
    checkpoint_every: Optional[int] = typer.Option(None, help="Retraining steps between a trial's "
                                                              "checkpoints (default: a quarter; 0: none)."),
    wait_for_gpus: float = typer.Option(0.0, help="Seconds an autoscaling cluster may take to start GPU "
                                                  "workers before a GPU study is refused (0: refuse at once)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Dense-model cache folder (default: "
                                                        "$NERF_STUDY_CACHE or ~/.cache/nerf-prune-study)."),
) -> None:
    """Run a pruning study: Ray Tune trials proposed by Optuna, recorded in MLflow and Parquet."""
    from study.runner import StudyOptions, launch as run_study

    options = StudyOptions(space=space, data=data, out=out, trials=trials, max_concurrent=max_concurrent,
                           cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, sampler=sampler,
                           seed=seed, address=address, tracking_uri=tracking_uri, resume=resume,
                           precision=precision, downscale=downscale, dense_iters=dense_iters,
                           retrain_iters=retrain_iters, rays_per_step=rays_per_step, samples=samples,
                           eval_views=eval_views, storage_path=storage_path,
                           trial_retries=trial_retries, checkpoint_every=checkpoint_every,
                           wait_for_gpus=wait_for_gpus, cache_dir=cache_dir)
    try:
        from nerf.device import resolve_precision
        import torch

        from study.spaces import get_space

        resolve_precision(precision, torch.device("cpu"))
        on_dense_step, close = dense_progress(dense_iters or get_space(space).budget.dense_iters)
        try:
            result = run_study(options, echo=lambda line: typer.echo(line, err=True), on_dense_step=on_dense_step)
        finally:
            close()
    except InputError as exc:
        fail(str(exc))
    print_outcome(out, result)


def print_outcome(out: Path, result: dict) -> None:
    from study.results import front_table

    rows = result["rows"]
    n_ok = sum(r["status"] == "COMPLETE" for r in rows)
    typer.echo(f"{n_ok} trials complete, {len(rows) - n_ok} failed, wall {result.get('wall_seconds', 0):.0f} s")
    typer.echo("Pareto front (PSNR up, training time down, size down):")
    typer.echo(front_table(result["front"]))
    typer.echo(f"results table: {out}/results.parquet")
    typer.echo(f"report:        {out}/report.md  (plot {out}/pareto.png)")
    typer.echo(f"MLflow store:  {result['tracking_uri']}  (browse: study ui {out})")
    typer.echo(f"Optuna store:  sqlite:///{out}/optuna.db  (study name 'study')")


@app.command()
def bench(
    data: str = typer.Option("synthetic", help="Scene whose training rays are timed (shapes, not content, "
                                                "set the cost): 'synthetic' or a Blender/LLFF folder."),
    downscale: int = typer.Option(1, help="Integer factor to shrink images by on load."),
    rays: int = typer.Option(1024, help="Rays per step."),
    samples: int = typer.Option(64, help="Coarse samples per ray."),
    widths: str = typer.Option("256,128,64", help="Comma-separated widths; the first is the reference."),
    precision: str = typer.Option("auto,fp32", help="Comma-separated precisions timed at every width."),
    repeats: int = typer.Option(5, help="Timed steps per row (median reported), after 2 warm-up steps."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: all cores)."),
    time_to_psnr: Optional[float] = typer.Option(None, help="Also train a dense model on --data until "
                                                            "this test PSNR (dB) and time it."),
    ttp_iters: int = typer.Option(4000, help="Iteration cap of the --time-to-psnr run."),
    ttp_rays: int = typer.Option(256, help="Rays per step of the --time-to-psnr run."),
    overhead: bool = typer.Option(False, "--overhead", help="Also run a `quick` study on the built-in "
                                                            "scene and measure the per-trial overhead."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Time training steps (dense and pruned widths, each precision), optionally time-to-PSNR and
    study overhead, in one process."""
    import tempfile
    from dataclasses import asdict

    import torch

    from nerf.benchmark import StepBenchConfig, run_step_bench
    from nerf.benchmark import time_to_psnr as measure_time_to_psnr
    from nerf.device import resolve_device, resolve_precision
    from nerf.experiment import DataConfig, machine_info
    from nerf.render import RenderConfig
    from nerf.train import TrainConfig

    try:
        width_list = parse_ints(widths, "widths")
        precisions = tuple(p.strip() for p in precision.split(",") if p.strip())
        for p in precisions:
            resolve_precision(p, resolve_device(device))
        for name, value, low in (("rays", rays, 1), ("samples", samples, 2), ("repeats", repeats, 1),
                                 ("ttp-iters", ttp_iters, 1), ("ttp-rays", ttp_rays, 1)):
            if value < low:
                raise InputError(f"--{name} must be >= {low}, got {value}")
        if threads is not None:
            if threads < 1:
                raise InputError(f"--threads must be a positive integer, got {threads}")
            torch.set_num_threads(threads)
        scene = DataConfig(data, downscale=downscale).load()
        config = StepBenchConfig(rays=rays, samples=samples, widths=tuple(width_list), precisions=precisions,
                                 repeats=repeats, device=device)
        steps = run_step_bench(scene, config)
    except InputError as exc:
        fail(str(exc))
    main_precision = steps.rows[0].precision
    dense = steps.row(width_list[0], main_precision)
    out: dict = {"scene": scene.name, "image_px": scene.height, "rays": rays, "samples": samples,
                 "device": steps.device, "threads": steps.threads, "precision": main_precision,
                 "dense_s_per_iter": dense.seconds_per_step,
                 "fp32_peak_fraction": steps.row(width_list[0], "fp32").peak_fraction
                 if any(r.precision == "fp32" for r in steps.rows) else None,
                 **{f"ratio_w{w}": steps.row(w, main_precision).ratio for w in width_list[1:]},
                 "peaks_gflops": steps.peaks_gflops, "rows": [asdict(r) for r in steps.rows],
                 "machine": machine_info()}
    if time_to_psnr is not None:
        ttp = measure_time_to_psnr(scene, target_psnr=time_to_psnr, render=RenderConfig(n_samples=samples),
                                   train_config=TrainConfig(iterations=ttp_iters, rays_per_step=ttp_rays,
                                                            device=device, log_every=50))
        out["time_to_psnr"] = asdict(ttp)
    if overhead:
        from study.overhead import measure_study_overhead
        with tempfile.TemporaryDirectory() as tmp:
            out["study_overhead"] = measure_study_overhead(Path(tmp) / "overhead")
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(f"{scene.name} {scene.height}px, {rays} rays x {samples} samples per step, {steps.device}, "
               f"{steps.threads} threads; matmul peak " + ", ".join(
                   f"{p} {g:.0f} GFLOP/s" for p, g in steps.peaks_gflops.items()))
    typer.echo("| width | precision | params | s / step | GFLOP / step | % of matmul peak | step / dense step |")
    typer.echo("|---|---|---|---|---|---|---|")
    for r in steps.rows:
        typer.echo(f"| {r.width} | {r.precision} | {r.params:,} | {r.seconds_per_step:.3f} | "
                   f"{r.gflop_per_step:.0f} | {100 * r.peak_fraction:.0f}% | {r.ratio:.2f} |")
    if "time_to_psnr" in out:
        t = out["time_to_psnr"]
        typer.echo(f"time to {t['target_psnr']:.1f} dB test PSNR: " + (
            f"{t['train_seconds']:.0f} s ({t['iterations']} iters of {ttp_rays} rays)" if t["reached"] else
            f"not reached in {t['iterations']} iters ({t['psnr']:.2f} dB after {t['train_seconds']:.0f} s)"))
    if "study_overhead" in out:
        o = out["study_overhead"]
        typer.echo(f"study overhead ({o['space']}, {o['trials']} trials, {o['max_concurrent']} concurrent): "
                   f"{100 * o['per_trial_overhead_fraction']:.1f}% per trial ({o['mean_gap_s']:.2f} s between "
                   f"trials on an actor, {o['mean_trial_compute_s']:.1f} s compute); one-off: Ray start "
                   f"{o['ray_init_s']:.1f} s, actor start-up {o['startup_s']:.1f} s")


@app.command()
def paper(
    data: str = typer.Option("synthetic", help="Scene: a Blender folder such as nerf_synthetic/lego, or "
                                                "'synthetic' (the built-in scene)."),
    out: Path = typer.Option(Path("runs/paper"), help="Study folder; the report is OUT/paper_report.md."),
    budget: str = typer.Option("cpu", help="cpu (lego 100 px, < 1 h on 2 cores) | paper (GPU, paper "
                                           "scale) | toy (smoke test)."),
    seed: int = typer.Option(0, help="Study seed; replicate r of a configuration uses seed + r."),
    replicates: Optional[int] = typer.Option(None, help="Seeds per neuron-pruning configuration "
                                                        "(default: the budget's)."),
    precision: str = typer.Option("auto", help="auto | fp32 | bf16 | fp16."),
    gpus_per_trial: float = typer.Option(0.0, help="GPUs per trial (fractions pack trials on a GPU)."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address ('auto' inside a Ray job)."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: sqlite in OUT)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Dense-model cache folder."),
    storage_path: Optional[str] = typer.Option(None, help="Trial folders on shared storage (multi-node)."),
    wait_for_gpus: float = typer.Option(0.0, help="Seconds an autoscaling cluster may take to start GPU "
                                                  "workers (see `study launch --help`)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in OUT."),
) -> None:
    """Reproduce the paper: Tables 1-4 and Figs. 2 and 4 beside the paper's numbers (OUT/paper_report.md)."""
    from study.paper import run_paper

    from study.paper import PAPER_BUDGETS

    command = "study paper " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "study paper"
    on_dense_step, close = dense_progress(PAPER_BUDGETS[budget].dense_iters if budget in PAPER_BUDGETS else 1)
    try:
        result = run_paper(data=data, out=out, budget_name=budget, seed=seed, replicates=replicates,
                           tracking_uri=tracking_uri, address=address, gpus_per_trial=gpus_per_trial,
                           cache_dir=cache_dir, resume=resume, precision=precision, command=command,
                           storage_path=storage_path, wait_for_gpus=wait_for_gpus,
                           echo=lambda line: typer.echo(line, err=True), on_dense_step=on_dense_step)
    except InputError as exc:
        fail(str(exc))
    finally:
        close()
    typer.echo(result["report"].read_text())
    typer.echo(f"wrote {result['report']} (also logged to MLflow run {result['parent_run_id']})", err=True)


@app.command()
def report(study_dir: Path = typer.Argument(..., help="A study folder written by `study launch`.")) -> None:
    """Rebuild results.parquet, pareto.png and report.md of a study from its trial log."""
    from study.runner import rebuild_outputs

    if not (study_dir / "study.json").is_file():
        fail(f"{str(study_dir)!r} is not a study folder (no study.json)")
    result = rebuild_outputs(study_dir)
    result["tracking_uri"] = json.loads((study_dir / "study.json").read_text())["mlflow"].get("uri") or \
        f"sqlite:///{study_dir}/mlflow.db"
    print_outcome(study_dir, result)


@app.command()
def ui(
    study_dir: Path = typer.Argument(..., help="A study folder written by `study launch`."),
    port: int = typer.Option(5000, help="Port of the MLflow UI."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; 127.0.0.1 keeps it local."),
) -> None:
    """Start the MLflow UI on a study's store (127.0.0.1 unless told otherwise)."""
    import subprocess

    if not (study_dir / "study.json").is_file():
        fail(f"{str(study_dir)!r} is not a study folder (no study.json)")
    uri = f"sqlite:///{(study_dir / 'mlflow.db').resolve()}"
    typer.echo(f"MLflow UI for {study_dir} on http://{host}:{port} (Ctrl-C to stop)", err=True)
    raise typer.Exit(subprocess.call([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                                      "--host", host, "--port", str(port), "--workers", "1"]))


def main() -> None:
    # Import torch before anything lazily pulls it in under Ray/Tune (see FACTS.md: a oneMKL load
    # failure was seen when torch was first imported inside Tune's logger).
    import torch  # noqa: F401

    try:  # typer >= 0.20 vendors its own click
        from typer._click.exceptions import UsageError
    except ImportError:  # pragma: no cover - older typer
        from click.exceptions import UsageError
    try:
        code = app(standalone_mode=False)
    except UsageError as exc:  # unknown option, bad type, missing value: one line
        typer.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
