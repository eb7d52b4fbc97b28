"""`study spaces`, `study launch` and `study paper`: the search-space presets, and the two commands whose
options are generated from `StudyOptions`."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import typer

from common.errors import InputError
from study.cli.common import dense_progress, fail, generated_command, parameters_of, print_outcome
from study.paper.run import run_paper
from study.run.options import StudyOptions, option_help
from study.run.runner import launch
from study.search.space import BUDGETS, SPACES, get_space


def spaces() -> None:
    """List the search-space presets with their parameters and budgets."""

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


def launch_command(**values) -> None:
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
    options = StudyOptions(space="paper", budget=budget, **values)
    command = "study paper " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "study paper"

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


def register(app: typer.Typer) -> None:
    generated_command(
        app,
        "launch",
        study_parameters(),
        launch_command,
        "Run a pruning study: Ray Tune trials proposed by Optuna, recorded in MLflow and Parquet.",
    )
    generated_command(
        app,
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
            *study_parameters(PAPER_OPTIONS, out=Path("runs/paper")),
        ],
        paper_command,
        "Reproduce the paper: Tables 1-4 and Figs. 2 and 4 beside the paper's numbers (OUT/paper_report.md).",
    )


def study_parameters(names: tuple[str, ...] | None = None, **defaults: object) -> list[inspect.Parameter]:
    """`StudyOptions`' command-line options (those `option_help` lists)."""
    return parameters_of(StudyOptions, tuple(option_help()) if names is None else names, **defaults)
