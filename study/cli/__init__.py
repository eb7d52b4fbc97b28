"""The `study` command: one module per command group over the option dataclasses (`app` holds the
top-level commands, `data` the scene catalog's)."""

from study.cli.app import app, main

__all__ = ["app", "main"]
