"""The `bocb` command. Each concern's commands live in their own module here."""
from __future__ import annotations

from bocb.cli import check, compare, listing, report, run, share, status, upgrade, weights  # noqa: F401  (registers commands)
from bocb.cli._app import app, main

__all__ = ["app", "main"]
