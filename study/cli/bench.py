"""`study bench`: its options generated from `BenchOptions`."""

from __future__ import annotations

import inspect
import json

import typer

from common.errors import InputError
from study.cli.common import fail, generated_command, parameters_of
from study.measure.command import bench_table, run_bench
from study.measure.options import BenchOptions


def bench_command(*, as_json: bool, **values) -> None:
    try:
        out = run_bench(BenchOptions(**values))
    except InputError as exc:
        fail(str(exc))
    typer.echo(json.dumps(out, indent=2) if as_json else bench_table(out))


def bench_parameters() -> list[inspect.Parameter]:
    as_json = inspect.Parameter(
        "as_json",
        inspect.Parameter.KEYWORD_ONLY,
        annotation=bool,
        default=typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    )
    return [*parameters_of(BenchOptions), as_json]


BENCH_HELP = (
    "Time training steps (dense and pruned widths, each precision), optionally time-to-PSNR and study "
    "overhead, in one process."
)


def register(app: typer.Typer) -> None:
    generated_command(app, "bench", bench_parameters(), bench_command, BENCH_HELP)
