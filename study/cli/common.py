"""What the commands share: the one-line error (exit 2), progress lines, the study's outcome, and
command lines generated from option dataclasses (their attribute docstrings are the help)."""

from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
from collections.abc import Callable, Iterable

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from common.fields import field_docs
from study.record.results import front_table
from study.record.schema import STATUSES
from study.record.store import StudyFolder
from study.record.study_record import StudyRecord


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
    record = StudyRecord.load(folder)
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
        f"MLflow store:  {record.tracking_uri(folder)}  (browse: study ui {folder.path})"
        + (f"; {waiting} record(s) waiting for it" if waiting else "")
    )
    typer.echo(f"Optuna store:  {folder.optuna_url()}  (study name '{record.optuna_study}')")


def parameters_of(
    cls: type, names: Iterable[str] | None = None, *, hidden: Iterable[str] = (), **defaults: object
) -> list[inspect.Parameter]:
    """typer parameters generated from an options dataclass: each option's flag, type, default and help
    text come from its field (the attribute docstring is the help), so they are written once. `names`
    picks fields (default: all but `hidden`); `defaults` overrides the dataclass's."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    keep = set(names) if names is not None else None
    params = []
    for f in dataclasses.fields(cls):
        if f.name in hidden or f.name not in docs or (keep is not None and f.name not in keep):
            continue
        flag = "--" + f.name.replace("_", "-")
        params.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Option(defaults.get(f.name, f.default), flag, help=docs[f.name]),
                annotation=hints[f.name],
            )
        )
    return params


def generated_command(
    app: typer.Typer,
    name: str,
    parameters: list[inspect.Parameter],
    handler: Callable[..., None],
    help_text: str,
) -> None:
    def command(**kwargs) -> None:
        handler(**kwargs)

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__doc__ = help_text
    app.command(name)(command)
