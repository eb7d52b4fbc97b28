"""`study`: the command line. Thin: parses options into configs and calls the library.

Bad input exits with code 2 and one line on stderr, never a traceback.

Why one module of ~670 lines: it is the option lists and help of every command (the `launch` and
`paper` ones generated from `StudyOptions`); each command is a short function that builds a config
and calls one library function, so the length is declarations, not logic.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
import typing
from collections.abc import Callable
from pathlib import Path

import typer

from common.errors import InputError
from pruning.strategies import STRATEGIES
from study.data_cli import data_app
from study.options import StudyOptions, option_help
from study.schema import STATUSES
from study.spaces import SPACES, get_space
from study.store import StudyFolder

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Pruning study for Neural Radiance Fields.",
)


@app.callback()
def root() -> None:
    """Pruning study for Neural Radiance Fields: train, prune, search, report."""


app.add_typer(data_app, name="data")


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
                typer.echo(
                    f"{label}: {stats.iteration}/{total} loss {stats.loss:.4f} "
                    f"psnr {stats.psnr:.2f} dB {stats.iters_per_s:.1f} it/s",
                    err=True,
                )

        return on_line, lambda: None

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "loss {task.fields[loss]:.4f}  psnr {task.fields[psnr]:.2f} dB  {task.fields[ips]:.1f} it/s"
        ),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    task = progress.add_task(label, total=total, loss=float("nan"), psnr=float("nan"), ips=0.0)

    def on_step(stats) -> None:
        progress.start()  # at the first step: no bar at all for a run that never steps (a cache hit)
        progress.update(
            task, completed=stats.iteration, loss=stats.loss, psnr=stats.psnr, ips=stats.iters_per_s
        )

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
    test = (
        f"test psnr {metrics['test_psnr']:.2f} dB ssim {metrics['test_ssim']:.3f}  "
        if "test_psnr" in metrics
        else ""
    )
    return (
        f"psnr {metrics['psnr']:.2f} dB  ssim {metrics['ssim']:.3f} (validation, "
        f"{len(metrics['eval_views'])} views)  {test}params {metrics['params']:,}  "
        f"size {metrics['size_mb']:.3f} MB  {metrics['seconds_per_1k_iters']:.1f} s/1k iters  "
        f"({metrics['iterations']} iters)"
    )


@app.command()
def dense(
    data: str = typer.Option(
        "synthetic", help="'synthetic' (built-in scene), a Blender or LLFF folder, or a tiny_nerf .npz file."
    ),
    downscale: int = typer.Option(1, help="Integer factor to shrink images by on load (area average)."),
    iters: int = typer.Option(3000, help="Training iterations."),
    out: Path = typer.Option(Path("runs/dense"), help="Output folder (metrics.json, model.pt, renders/)."),
    rays_per_step: int = typer.Option(256, help="Random rays per step, across all training images."),
    samples: int = typer.Option(64, help="Stratified samples per ray (coarse network)."),
    sampling: str = typer.Option(
        "occupancy",
        help="occupancy (skip empty space once an occupancy grid is "
        "built from the model) | vanilla (every sample).",
    ),
    fine_samples: int = typer.Option(0, help="Extra samples per ray for a fine network (0: coarse only)."),
    lr: float = typer.Option(5e-4, help="Initial Adam learning rate."),
    lr_decay_iters: int = typer.Option(250_000, help="Iterations over which the lr falls tenfold."),
    precrop_iters: int = typer.Option(0, help="Early iterations that sample only the image centres."),
    precision: str = typer.Option(
        "auto", help="auto (the faster, measured on this machine) | fp32 | bf16 | fp16."
    ),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    threads: int | None = typer.Option(None, help="CPU threads for torch (default: all cores)."),
    seed: int = typer.Option(0, help="Seed for model init, ray sampling and the built-in scene."),
    eval_views: int = typer.Option(
        8, help="Views scored in each of the validation and test splits, evenly spaced."
    ),
    eval_all: bool = typer.Option(False, "--eval-all", help="Score every validation and test view."),
    allow_weak: bool = typer.Option(
        False,
        "--allow-weak",
        help="Exit 0 even when the model failed to learn the scene (under 5 dB above a constant-colour "
        "image on the validation views); the line saying so is printed either way.",
    ),
) -> None:
    """Train a dense NeRF once and evaluate it on the validation and test views."""
    from nerf.evaluate import EvalConfig
    from nerf.experiment import DataConfig, DenseConfig, run_dense
    from nerf.render import RenderConfig
    from nerf.train import TrainConfig

    try:
        if eval_views < 1:
            raise InputError(f"eval views must be a positive integer, got {eval_views}")
        config = DenseConfig(
            data=DataConfig(data, downscale=downscale),
            render=RenderConfig(n_samples=samples, n_importance=fine_samples, sampling=sampling),
            train=TrainConfig(
                iterations=iters,
                rays_per_step=rays_per_step,
                lr=lr,
                lr_decay_iters=lr_decay_iters,
                precrop_iters=precrop_iters,
                seed=seed,
                precision=precision,
                device=device,
                threads=threads,
            ),
            eval=EvalConfig(max_views=None if eval_all else eval_views),
        )
        from nerf.device import resolve_device
        from nerf.precision import check_precision

        check_precision(precision)  # refuse bad values before loading data (without measuring)
        resolve_device(device)
        scene = config.data.load(seed=seed)
        on_step, close = progress_printer(iters, f"dense {scene.name} {scene.height}px")
        try:
            metrics = run_dense(config, out, on_step=on_step, scene=scene)
        finally:
            close()
    except InputError as exc:
        fail(str(exc))
    typer.echo(summary_line(metrics))
    typer.echo(
        f"wall {metrics['wall_seconds']:.1f} s; wrote {out}/metrics.json, {out}/model.pt, {out}/renders/"
    )
    from nerf.quality import weak_model

    weak = weak_model(metrics)
    if weak is not None:
        if allow_weak:
            typer.echo(f"warning: {weak}", err=True)
        else:
            fail(f"{weak} (the files are written; --allow-weak exits 0)")


@app.command()
def prune(
    checkpoint: Path = typer.Option(..., help="A `study dense` output folder or a model.pt file."),
    strategy: str = typer.Option(..., help="Pruning strategy: " + " | ".join(STRATEGIES) + "."),
    width: int | None = typer.Option(None, help="Neurons kept per pruned layer (1..256; structured)."),
    beta: float = typer.Option(3.0, help="Coreset upper-bound controller beta (> 0)."),
    phi: str = typer.Option(
        "relu", help="Coreset activation phi: relu (the paper; beta cancels) | tanh | exp."
    ),
    scaling: str = typer.Option(
        "unbiased", help="Coreset reweighting of kept neurons: unbiased (Algorithm 1) | none."
    ),
    threshold: float = typer.Option(
        0.0,
        help="Edge threshold on |w| (>= 0); with a structured strategy "
        "it is applied after shrinking (hybrid).",
    ),
    prune_view: bool = typer.Option(
        False, "--prune-view", help="Also prune the 128-wide view layer to half the width."
    ),
    retrain_iters: int = typer.Option(1000, help="Retraining iterations after pruning."),
    rays_per_step: int | None = typer.Option(None, help="Rays per step (default: the dense run's)."),
    data: str | None = typer.Option(None, help="Scene path, if it moved since the dense run."),
    precision: str = typer.Option("auto", help="auto | fp32 | bf16 | fp16."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    threads: int | None = typer.Option(None, help="CPU threads for torch."),
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
        spec = PruneSpec(
            strategy=strategy,
            width=width,
            beta=beta,
            phi=phi,
            scaling=scaling,
            threshold=threshold,
            prune_view=prune_view,
        )
        _, _, meta = load_checkpoint(checkpoint)
        dense_train = dense_config_of(meta).get("train", {})
        retrain = TrainConfig(
            iterations=retrain_iters,
            rays_per_step=rays_per_step or dense_train.get("rays_per_step", 256),
            seed=seed,
            precision=precision,
            device=device,
            threads=threads,
        )
        on_step, close = progress_printer(retrain_iters, f"retrain {strategy}")
        try:
            metrics = run_prune(
                checkpoint,
                spec,
                retrain=retrain,
                out_dir=out,
                data_source=data,
                eval_config=EvalConfig(max_views=eval_views),
                on_step=on_step,
            )
        finally:
            close()
    except InputError as exc:
        fail(str(exc))
    typer.echo(
        f"before retraining: psnr {metrics['pre_retrain_psnr']:.2f} dB; kept fraction "
        f"{metrics['kept_fraction']:.3f}; nonzero params {metrics['nonzero_params']:,}"
    )
    typer.echo(summary_line(metrics))
    typer.echo(f"wrote {out}/metrics.json, {out}/model.pt, {out}/renders/")


@app.command()
def spaces() -> None:
    """List the search-space presets with their parameters and budgets."""
    from study.spaces import BUDGETS

    for space in SPACES.values():
        b = space.budget
        typer.echo(
            f"{space.name}: {space.description} (scheduler {space.scheduler}, sampling {space.sampling})"
        )
        for name, rng in space.parameters.items():
            typer.echo(f"    {name:<10} {rng}")
        typer.echo(
            f"    budget: downscale {b.downscale}, {b.rays_per_step} rays x {b.samples} samples, dense "
            f"{b.dense_iters} iters (once, cached), {b.retrain_iters} retrain iters/trial, "
            f"{b.trials} trials, {b.eval_views} eval views"
        )
        typer.echo(
            f"    cost: ~{b.trials * b.retrain_iters:,} retraining iterations + "
            f"{b.dense_iters:,} dense iterations"
        )
    typer.echo("budget presets (--budget):")
    for name, b in BUDGETS.items():
        typer.echo(
            f"    {name:<6} {b.description}: downscale {b.downscale}, {b.rays_per_step} rays x {b.samples} "
            f"samples, dense {b.dense_iters:,} iters, {b.retrain_iters:,} retrain iters/trial, "
            f"{b.replicates} seed(s) per neuron-pruning point"
        )


def options_parameters(names: tuple[str, ...] | None = None, **defaults: object) -> list[inspect.Parameter]:
    """typer parameters generated from StudyOptions: each option's flag, type, default and help text come
    from the dataclass field (its docstring is the help), so they are written once."""
    hints = typing.get_type_hints(StudyOptions)
    docs = option_help()
    params = []
    for f in dataclasses.fields(StudyOptions):
        if f.name not in docs or (names is not None and f.name not in names):
            continue
        default = defaults.get(f.name, f.default)
        flag = "--" + f.name.replace("_", "-")
        params.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Option(default, flag, help=docs[f.name]),
                annotation=hints[f.name],
            )
        )
    return params


def generated_command(
    name: str, parameters: list[inspect.Parameter], handler: Callable[..., None], help_text: str
) -> None:
    def command(**kwargs) -> None:
        handler(**kwargs)

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__doc__ = help_text
    app.command(name)(command)


def launch_command(**values) -> None:
    from study.runner import launch

    options = StudyOptions(**values)
    try:
        budget = options.resolved_budget(get_space(options.space)) if options.space in SPACES else None
        on_dense_step, close = dense_progress(budget.dense_iters if budget else 1)
        try:
            result = launch(
                options, echo=lambda line: typer.echo(line, err=True), on_dense_step=on_dense_step
            )
        finally:
            close()
    except InputError as exc:
        fail(str(exc))
    print_outcome(
        result.folder,
        result.rows,
        result.front,
        wall_seconds=result.wall_seconds,
        hypervolume=result.hypervolume,
        repeats_avoided=result.repeats_avoided,
        waiting=result.records_waiting,
    )


generated_command(
    "launch",
    options_parameters(),
    launch_command,
    "Run a pruning study: Ray Tune trials proposed by Optuna, recorded in MLflow and Parquet.",
)


def print_outcome(
    folder: StudyFolder,
    rows: list[dict],
    front: list[dict],
    *,
    wall_seconds: float | None,
    hypervolume: float | None,
    repeats_avoided: int = 0,
    waiting: int = 0,
) -> None:
    from study.results import front_table

    summary = folder.summary()
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    wall = f", wall {wall_seconds:.0f} s" if wall_seconds is not None else ""
    typer.echo(
        f"{counts['COMPLETE']} trials complete, {counts['STOPPED']} stopped early, {counts['FAILED']} "
        f"failed{wall}; {repeats_avoided} repeated proposals answered without retraining"
    )
    if hypervolume is not None:
        typer.echo(
            f"hypervolume of the front: {hypervolume:.4f}  (plot {folder / StudyFolder.HYPERVOLUME_PLOT})"
        )
    typer.echo("Pareto front (PSNR up, training time down, size down):")
    typer.echo(front_table(front))
    typer.echo(f"results table: {folder / StudyFolder.RESULTS}")
    typer.echo(f"report:        {folder / StudyFolder.REPORT}  (plot {folder / StudyFolder.PARETO_PLOT})")
    typer.echo(
        f"MLflow store:  {folder.tracking_uri(summary)}  (browse: study ui {folder.path})"
        + (f"; {waiting} record(s) waiting for it" if waiting else "")
    )
    typer.echo(f"Optuna store:  {folder.optuna_url()}  (study name '{folder.optuna_study_name(summary)}')")


@app.command()
def bench(
    data: str = typer.Option(
        "synthetic",
        help="Scene whose training rays are timed (shapes, not content, "
        "set the cost): 'synthetic' or a Blender/LLFF folder.",
    ),
    downscale: int = typer.Option(1, help="Integer factor to shrink images by on load."),
    rays: int = typer.Option(1024, help="Rays per step."),
    samples: int = typer.Option(64, help="Samples per ray."),
    sampling: str = typer.Option(
        "vanilla",
        help="vanilla | occupancy (through the occupancy grid of --dense-run; points per ray are reported).",
    ),
    dense_run: Path | None = typer.Option(
        None,
        help="A `study dense` folder trained with occupancy sampling: "
        "its grid is what --sampling occupancy steps through.",
    ),
    widths: str = typer.Option("256,128,64", help="Comma-separated widths; the first is the reference."),
    precision: str = typer.Option(
        "fp32,bf16",
        help="Comma-separated precisions timed at every width, and only those; 'auto' times the precision "
        "measured fastest here.",
    ),
    repeats: int = typer.Option(5, help="Timed steps per row (median reported), after 2 warm-up steps."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    threads: int | None = typer.Option(None, help="CPU threads for torch (default: all cores)."),
    time_to_psnr: float | None = typer.Option(
        None, help="Also train a dense model on --data until this test PSNR (dB) and time it."
    ),
    ttp_iters: int = typer.Option(4000, help="Iteration cap of the --time-to-psnr run."),
    ttp_rays: int = typer.Option(256, help="Rays per step of the --time-to-psnr run."),
    overhead: bool = typer.Option(
        False,
        "--overhead",
        help="Also run a `quick` study on the built-in scene and measure the per-trial overhead.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Time training steps (dense and pruned widths, each precision), optionally time-to-PSNR and
    study overhead, in one process."""
    from study.benchmark import bench_command

    try:
        out = bench_command(
            data=data,
            downscale=downscale,
            rays=rays,
            samples=samples,
            sampling=sampling,
            widths=parse_ints(widths, "widths"),
            precisions=tuple(p.strip() for p in precision.split(",") if p.strip()),
            repeats=repeats,
            device=device,
            threads=threads,
            time_to_psnr=time_to_psnr,
            ttp_iters=ttp_iters,
            ttp_rays=ttp_rays,
            overhead=overhead,
            dense_run=dense_run,
        )
    except InputError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    from study.benchmark import bench_table

    typer.echo(bench_table(out))


PAPER_OPTIONS = (
    "data",
    "out",
    "name",
    "seed",
    "replicates",
    "precision",
    "gpus_per_trial",
    "address",
    "tracking_uri",
    "cache_dir",
    "storage_path",
    "wait_for_gpus",
    "resume",
    "allow_weak_dense",
)


def paper_command(*, budget: str, **values) -> None:
    from study.paper import run_paper

    options = StudyOptions(space="paper", budget=budget, **values)
    command = "study paper " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "study paper"
    from study.spaces import BUDGETS

    on_dense_step, close = dense_progress(BUDGETS[budget].dense_iters if budget in BUDGETS else 1)
    try:
        result = run_paper(
            options,
            command=command,
            echo=lambda line: typer.echo(line, err=True),
            on_dense_step=on_dense_step,
        )
    except InputError as exc:
        fail(str(exc))
    finally:
        close()
    typer.echo(result.report.read_text())
    typer.echo(f"wrote {result.report} (also logged to MLflow run {result.parent_run_id})", err=True)


generated_command(
    "paper",
    [
        inspect.Parameter(
            "budget",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=str,
            default=typer.Option(
                "cpu",
                "--budget",
                help="cpu (lego 100 px, < 1 h on 2 cores) | "
                "paper (GPU, paper scale) | toy (smoke test); see `study spaces`.",
            ),
        ),
        *options_parameters(PAPER_OPTIONS, out=Path("runs/paper")),
    ],
    paper_command,
    "Reproduce the paper: Tables 1-4 and Figs. 2 and 4 beside the paper's numbers (OUT/paper_report.md).",
)


@app.command()
def report(study_dir: Path = typer.Argument(..., help="A study folder written by `study launch`.")) -> None:
    """Rebuild results.parquet, the plots and report.md of a study from its trial log, and write any
    MLflow records still waiting for the tracking server."""
    from study.runner import finish_outputs
    from study.store import TrialLog
    from study.tracking import RecordSync

    folder = StudyFolder(study_dir)
    echo = lambda line: typer.echo(line, err=True)
    try:
        folder.summary()  # refuse a folder that is no study before the lock would touch it
        with folder.lock():  # a running driver owns its folder: it writes the report itself
            summary = folder.summary()
            folder.repair_logs(echo)
            log = TrialLog(folder)
            sync = RecordSync(folder, open_tracker(folder, summary), echo=echo)
            hypervolume, waiting = finish_outputs(
                folder,
                summary,
                sync,
                echo=echo,
                parent_status="FINISHED" if summary.get("status") == "finished" else None,
            )
    except InputError as exc:
        fail(str(exc))
    from study.results import front

    rows = log.rows()
    print_outcome(
        folder,
        rows,
        front(rows),
        wall_seconds=None,
        hypervolume=hypervolume,
        repeats_avoided=(summary.get("search") or {}).get("repeats_avoided", 0),
        waiting=waiting,
    )


def open_tracker(folder: StudyFolder, summary: dict):
    """The study's MLflow tracker; a store that is missing or corrupt is one line."""
    from study.tracking import check_reachable, tracker_for

    uri = folder.tracking_uri(summary)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise InputError(f"the study's MLflow store {uri!r} is missing")
    check_reachable(uri)
    try:
        return tracker_for(folder, summary)
    except Exception as exc:  # a corrupt sqlite file, a foreign database
        raise InputError(
            f"the study's MLflow store {uri!r} is unreadable ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0][:160] if str(exc) else ''})"
        ) from None


def experiment_page(tracker) -> str:
    """The study's page in the MLflow UI. MLflow 3.17's UI keeps one workflow (GenAI or model training)
    for all experiments unless the URL names one; a study marked as model development (the experiment
    tag mlflow.experimentKind) opens on its training runs, anything else on the experiment's default."""
    from study.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

    experiment = tracker.client.get_experiment(tracker.experiment_id)
    if experiment.tags.get(EXPERIMENT_KIND_TAG) == EXPERIMENT_KIND:
        return f"#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"
    return f"#/experiments/{experiment.experiment_id}"


@app.command()
def ui(
    study_dir: Path = typer.Argument(..., help="A study folder written by `study launch`."),
    port: int = typer.Option(5000, help="Port of the MLflow UI."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; 127.0.0.1 keeps it local."),
) -> None:
    """Open the MLflow UI on a study: its tracking server if it recorded to one, else a local UI on its
    store (127.0.0.1 unless told otherwise). Prints the URL of the study's runs page."""
    import subprocess

    folder = StudyFolder(study_dir)
    try:
        summary = folder.summary()
        tracker = open_tracker(folder, summary)
    except InputError as exc:
        fail(str(exc))
    uri = folder.tracking_uri(summary)
    page = experiment_page(tracker)
    if uri.startswith(("http://", "https://")):
        typer.echo(f"{uri.rstrip('/')}/{page}")  # a server study: its server already serves the UI
        return
    typer.echo(f"http://{host}:{port}/{page}")
    typer.echo(f"MLflow UI for {folder.path} (Ctrl-C to stop)", err=True)
    raise typer.Exit(
        subprocess.call(
            [
                sys.executable,
                "-m",
                "mlflow",
                "ui",
                "--backend-store-uri",
                uri,
                "--host",
                host,
                "--port",
                str(port),
                "--workers",
                "1",
            ]
        )
    )


def main() -> None:
    # Import torch before anything lazily pulls it in under Ray/Tune: a oneMKL load failure was seen
    # when torch was first imported inside Tune's auto-enabled logger.
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
