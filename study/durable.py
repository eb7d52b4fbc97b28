"""Writes that a kill at any moment leaves consistent: a file is replaced atomically (written under a
temporary name, then renamed) or grows by whole lines; a log's reader drops a last line cut by a kill
(and its one writer cuts it off, with one message, before appending)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Replace `path` with `data` so that a reader (or a later run after a kill) sees the old file or the
    new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def append_line(path: Path, record: dict) -> None:
    """One whole JSON line in one write(2) on an O_APPEND descriptor: a kill lands before or after it."""
    data = (json.dumps(record, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(path: Path, *, repair: bool = False, echo: Callable[[str], None] | None = None) -> list[dict]:
    """The complete JSON lines of an append-only log; an incomplete last line is left out. With `repair`
    (the log's one writer, before it appends: a driver at its start) a last line cut by a kill is cut off
    the file, so that the next append starts a fresh line, and reported in one message. A reader beside
    a live writer must not repair: it may be looking at a line half-way through its write."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    records: list[dict] = []
    good = 0
    for raw in data.splitlines(keepends=True):
        try:
            if not raw.endswith(b"\n"):
                raise ValueError("no line end")
            if raw.strip():
                records.append(json.loads(raw))
        except ValueError:
            break
        good += len(raw)
    if good < len(data) and repair:
        with open(path, "r+b") as f:
            f.truncate(good)
        if echo is not None:
            echo(f"repaired {path.name}: dropped {len(data) - good} bytes of a record cut off by a kill")
    return records
