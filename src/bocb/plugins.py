"""Plugins: objects a spec names as ``package.module:attr``, or that installed packages publish as entry points.

One place for every registry (backbones, optimizers, datasets, recipes; see :class:`bocb.registry.Registry`).
A plugin's canonical name is what finds it again in a fresh process (a ``bocb worker``, a local worker
process, a Ray task), which resolves it by string: its ``module:attr`` reference, or its entry-point name.
So the module must be importable there too (PYTHONPATH, or the package installed); see docs/own-backbone.md.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint
from operator import attrgetter
from typing import Any, TypeVar

from bocb.errors import SpecError

T = TypeVar("T")

ENTRY_POINT_GROUPS = {"backbone": "bocb.backbones", "optimizer": "bocb.optimizers", "dataset": "bocb.datasets",
                      "recipe": "bocb.recipes"}


def is_reference(name: str) -> bool:
    """True for 'package.module:attr' (registry names never hold a colon)."""
    return ":" in name


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def import_object(reference: str, field: str, what: str) -> Any:
    """The object at ``reference``: 'package.module:attr' (attr may be dotted), or 'package.module.attr'.
    A one-line SpecError naming ``field`` and the cause when the module fails to import (in any way: a
    SyntaxError too) or lacks the attribute."""
    module_name, colon, attr = reference.partition(":")
    if not colon:
        module_name, _, attr = reference.rpartition(".")
    if not module_name or not attr:
        raise SpecError(field, f"'{reference}' is not 'package.module:attr'")
    if os.getcwd() not in sys.path:  # the `bocb` console script does not see the working directory
        sys.path.append(os.getcwd())
    try:
        return attrgetter(attr)(importlib.import_module(module_name))
    # the user's module may fail at import in any way, sys.exit(), a raised KeyboardInterrupt and a class of
    # its own deriving from BaseException included: each would otherwise end bocb with that module's exit
    # code (0, having done nothing) or a traceback
    except BaseException as exc:  # noqa: BLE001
        raise SpecError(field, f"cannot import {what} '{reference}': {_first_line(exc)}") from None


def load_entry_point(ep: EntryPoint, field: str, what: str) -> Any:
    """The object entry point ``ep`` names; a one-line SpecError naming it and its package if it fails."""
    dist = f" of {ep.dist.name}" if ep.dist else ""
    try:
        return ep.load()
    except BaseException as exc:  # noqa: BLE001 - as in import_object
        raise SpecError(field, f"cannot load {what} '{ep.name}' (entry point '{ep.value}'{dist} in group "
                               f"'{ep.group}'): {_first_line(exc)}") from None


def renamed_instance(cls: type[T]) -> Callable[[str, Any, str], T]:
    """The plugin adapter of a registry whose plugins are ``cls`` instances (a dataset's DatasetInfo, a
    Recipe): the object itself, renamed to its canonical name."""
    def adapt(name: str, obj: Any, field: str) -> T:
        if not isinstance(obj, cls):
            raise SpecError(field, f"'{name}' is a {type(obj).__name__}, not a {cls.__module__}.{cls.__qualname__}")
        return dataclasses.replace(obj, name=name)

    return adapt
