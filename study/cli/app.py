"""`study`: the command line. Thin: each command parses its options into a config and calls one
library function; one module per command group (`model`, `launch`, `report`, `bench`, `data`), the
options of `launch`, `paper` and `bench` generated from their dataclasses (`common.parameters_of`).

Bad input exits with code 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import sys

import torch  # noqa: F401  (first: a lazy torch import inside Ray Tune's loggers once failed to load)
import typer

try:  # typer >= 0.20 vendors its own click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - older typer
    from click.exceptions import UsageError

from study.cli import bench, launch, model, report
from study.cli.data import data_app

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Pruning study for Neural Radiance Fields.",
)


@app.callback()
def root() -> None:
    """Pruning study for Neural Radiance Fields: train, prune, search, report."""


app.command()(model.dense)
app.command()(model.prune)
app.command()(launch.spaces)
launch.register(app)
app.command()(report.report)
app.command()(report.ui)
bench.register(app)
app.add_typer(data_app, name="data")


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except UsageError as exc:  # unknown option, bad type, missing value: one line
        typer.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
