"""A module imported on first use, for a library that a module's functions need but that importing the
module must not cost: pandas in bocb.protocol, whose names (trial states, Eq. 1's gamma) a spec's check and
`bocb list` import, and whose frame rules only `bocb results`, the planner and the analysis run."""
from __future__ import annotations

import importlib
from typing import Any


class LazyModule:
    """Stands for the module ``name``: its first attribute access imports it (later ones find it imported)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported on first use>"
