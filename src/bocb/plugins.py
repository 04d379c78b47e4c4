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
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


class _ProcessExit(BaseException):
    """A user's code called os._exit while bocb ran it to check it."""


@contextmanager
def _os_exit_refused() -> Iterator[None]:
    """os._exit ends the process at once, with no exception to catch: a plugin calling os._exit(0) would end
    bocb with exit code 0, success, having done nothing. While a user's code runs here, os._exit raises
    instead, in this thread only (a worker's watcher thread keeps the real one)."""
    real_exit, checking = os._exit, threading.current_thread()

    def refuse(code: int) -> None:
        if threading.current_thread() is not checking:
            real_exit(code)
        raise _ProcessExit(f"it called os._exit({code})")

    os._exit = refuse
    try:
        yield
    finally:
        os._exit = real_exit


# Set when a Ctrl-C (SIGINT) reaches this process while a user's code runs (bocb's handler, installed by
# the outermost run_user_code only: a user's code may run inside another's, an optimizer class imported
# while the optimizer is built): that KeyboardInterrupt is the user stopping bocb, not the code failing.
_CTRL_C = threading.Event()


def _record_ctrl_c(signum: int, frame: object) -> None:
    _CTRL_C.set()
    signal.default_int_handler(signum, frame)


@contextmanager
def _ctrl_c_recorded() -> Iterator[None]:
    """Within, a Ctrl-C sets _CTRL_C before it interrupts. Where SIGINT is already recorded (an outer call),
    or is not Python's default (a worker ignores it), or this is not the main thread, nothing changes."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    _CTRL_C.clear()
    signal.signal(signal.SIGINT, _record_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run_user_code(action: Callable[[], T], field: str, failure: str) -> T:
    """``action()``, which runs a user's code: a module's import, a backbone factory, an optimizer's
    __init__. A SpecError of bocb's own passes, and so does a Ctrl-C; any other way it fails is one line
    naming ``field``, ``failure: the cause``: an exception, sys.exit(), a raised KeyboardInterrupt, a
    BaseException class of its own (each would otherwise end bocb with that code, 0 having done nothing, or
    a traceback), or os._exit."""
    with _ctrl_c_recorded():
        try:
            with _os_exit_refused():
                return action()
        except SpecError:
            raise
        except BaseException as exc:  # noqa: BLE001 - see the docstring
            if isinstance(exc, KeyboardInterrupt) and _CTRL_C.is_set():
                raise
            cause = str(exc) if isinstance(exc, _ProcessExit) else _first_line(exc)
            raise SpecError(field, f"{failure}: {cause}") from None


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
    return run_user_code(lambda: attrgetter(attr)(importlib.import_module(module_name)), field,
                         f"cannot import {what} '{reference}'")


def load_entry_point(ep: EntryPoint, field: str, what: str) -> Any:
    """The object entry point ``ep`` names; a one-line SpecError naming it and its package if it fails."""
    dist = f" of {ep.dist.name}" if ep.dist else ""
    return run_user_code(ep.load, field, f"cannot load {what} '{ep.name}' (entry point '{ep.value}'{dist} in "
                                         f"group '{ep.group}')")


def renamed_instance(cls: type[T]) -> Callable[[str, Any, str], T]:
    """The plugin adapter of a registry whose plugins are ``cls`` instances (a dataset's DatasetInfo, a
    Recipe): the object itself, renamed to its canonical name."""
    def adapt(name: str, obj: Any, field: str) -> T:
        if not isinstance(obj, cls):
            raise SpecError(field, f"'{name}' is a {type(obj).__name__}, not a {cls.__module__}.{cls.__qualname__}")
        return dataclasses.replace(obj, name=name)

    return adapt
