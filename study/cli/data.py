"""`study data`: list the standard NeRF scenes and fetch one. Thin: the work is in nerf.data.catalog.

Bad input exits with code 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from common.errors import InputError
from nerf.data import catalog as datasets
from study.cli.common import fail

data_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="List and fetch the standard NeRF scenes (original release of the NeRF paper).",
)


def human_size(size_mb: int) -> str:
    return f"~{size_mb / 1000:.1f} GB" if size_mb >= 1000 else f"~{size_mb} MB"


@data_app.command("list")
def list_scenes() -> None:
    """Show every known scene: kind, source archive, download size, and where it unpacks."""
    header = ("name", "kind", "archive", "download", "unpacks to (under --to)")
    rows = [header] + [
        (d.name, d.kind, d.archive.file, human_size(d.archive.size_mb), d.target)
        for d in datasets.list_datasets()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    typer.echo(
        f"\nA scene's archive is downloaded once into <--to>/{datasets.CACHE_DIR}/ and reused for its other "
        "scenes; lego and fern come from the smaller nerf_example_data.zip."
    )


@data_app.command()
def fetch(
    name: str = typer.Argument(..., help="Scene name; `study data list` shows them."),
    to: Path = typer.Option(Path("data"), "--to", help="Data folder the scene unpacks under."),
    mirror: str | None = typer.Option(
        None,
        help=f"Base URL serving the archives by file name (default: ${datasets.MIRROR_ENV}, else upstream).",
    ),
) -> None:
    """Download a scene (resumable, verified) and unpack it where `--data` can load it."""
    on_bytes, close = download_progress(name)
    try:
        result = datasets.fetch(name, to, mirror=mirror, progress=on_bytes, log=note)
    except InputError as exc:
        close()
        fail(str(exc))
    close()
    if result.fetched:
        typer.echo(f"{name}: unpacked to {result.path}; train on it with --data {result.path}")
    else:
        typer.echo(f"{name}: already at {result.path}; nothing to do")


def note(line: str) -> None:
    typer.echo(line, err=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


def download_progress(label: str) -> tuple[datasets.ProgressFn, Callable[[], None]]:
    """A live bar on a terminal, else a plain line about every 10% so that logs show it too.
    Returns (on_bytes, close); nothing is shown for a fetch that downloads nothing."""
    if not sys.stderr.isatty():
        last = [-1]

        def on_line(done: int, total: int | None) -> None:
            # Without a known total, a line every 50 MB.
            step = done * 10 // total if total else done // 50_000_000
            if step > last[0]:
                last[0] = step
                of = f" of {human_bytes(total)} ({100 * done // total}%)" if total else ""
                typer.echo(f"{label}: {human_bytes(done)}{of}", err=True)

        return on_line, lambda: None

    progress = Progress(
        TextColumn(label),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    task = progress.add_task(label, total=None)

    def on_bytes(done: int, total: int | None) -> None:
        progress.start()  # at the first bytes: no bar at all for a fetch served from the cache
        progress.update(task, completed=done, total=total)
        if total is not None and done >= total:
            progress.stop()  # so that the checksum line after the download does not run through the bar

    return on_bytes, progress.stop
