"""A small typed registry keyed by name, with aliases and wildcard listing.

The same shape serves backbones, optimizers, datasets and recipes (after
timm's ``OptimInfo`` / ``register_model``): entries are frozen dataclasses
with a ``name``; users add their own with :meth:`Registry.register` (this
process only), or as plugins that any process finds by name: a
``package.module:attr`` reference, or an entry point of the registry's group
(:meth:`Registry.accept_plugins`, :mod:`bocb.plugins`).
"""
from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, Protocol, TypeVar

from bocb.errors import SpecError, unknown_name_message
from bocb.plugins import import_object, is_reference, load_entry_point


class Named(Protocol):
    name: str


T = TypeVar("T", bound=Named)


def normalise(name: str) -> str:
    """Lower case, '-' and ' ' as '_' : 'SGD-M' -> 'sgd_m'."""
    return name.strip().lower().replace("-", "_").replace(" ", "_")


@dataclass(frozen=True)
class _Plugins(Generic[T]):
    group: str  # entry-point group
    what: str  # what a reference names, for errors: 'backbone factory', 'optimizer class'
    adapt: Callable[[str, Any, str], T]  # (canonical name, loaded object, field) -> the entry, named so


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._plugins: _Plugins[T] | None = None
        self._references: dict[str, T] = {}  # plugins named 'package.module:attr', loaded once

    def accept_plugins(self, group: str, what: str, adapt: Callable[[str, Any, str], T]) -> None:
        """Names this registry lacks are looked up as plugins, in whatever process asks: a
        'package.module:attr' reference, else an entry point of ``group``; ``adapt`` makes the loaded object
        an entry under its canonical name (the reference, or the entry point's name), so the name a driver
        stored resolves identically in a fresh worker. Entry points are listed (:meth:`names`, iteration);
        references are not."""
        self._plugins = _Plugins(group, what, adapt)

    def register(self, entry: T, aliases: tuple[str, ...] = (), *, replace: bool = False) -> T:
        key = normalise(entry.name)
        if key in self._entries and not replace:
            raise ValueError(f"{self.kind} '{entry.name}' is already registered")
        self._entries[key] = entry
        for alias in aliases:
            self._aliases[normalise(alias)] = key
        return entry

    def _key(self, name: str) -> str:
        key = normalise(name)
        return self._aliases.get(key, key)

    def resolve(self, name: str, field: str | None = None) -> str:
        """Canonical name for ``name`` or an alias of it, loading it as a plugin if it is one (a SpecError
        naming ``field`` when that fails); KeyError when unknown."""
        entry = self._find(name, field or self.kind)
        if entry is None:
            raise KeyError(name)
        return entry.name

    def get(self, name: str, field: str | None = None) -> T:
        """The entry for ``name``; a one-line SpecError naming the choices if unknown."""
        entry = self._find(name, field or self.kind)
        if entry is None:
            raise SpecError(field or self.kind, unknown_name_message(self.kind, name, self.names()))
        return entry

    def _find(self, name: str, field: str) -> T | None:
        key = self._key(name)
        if key in self._entries:
            return self._entries[key]
        plugins = self._plugins
        if plugins is None:
            return None
        if is_reference(name):  # loaded once, and kept apart from the listed entries (exact case: module paths)
            if name not in self._references:
                self._references[name] = plugins.adapt(name, import_object(name, field, plugins.what), field)
            return self._references[name]
        ep = self._entry_point(name)
        if ep is None:
            return None
        return self.register(plugins.adapt(ep.name, load_entry_point(ep, field, plugins.what), field))

    def _entry_points(self) -> list[EntryPoint]:
        return list(entry_points(group=self._plugins.group)) if self._plugins else []

    def _entry_point(self, name: str) -> EntryPoint | None:
        return next((ep for ep in self._entry_points() if normalise(ep.name) == normalise(name)), None)

    def __contains__(self, name: str) -> bool:
        try:
            self.resolve(name)
        except KeyError:
            return False
        return True

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names and those of installed entry points (not loaded) matching ``pattern``."""
        known = {normalise(e.name): e.name for e in self._entries.values()}
        for ep in self._entry_points():
            known.setdefault(normalise(ep.name), ep.name)
        return sorted(n for n in known.values() if fnmatch.fnmatch(n, pattern))

    def load_entry_points(self) -> None:
        """Load every installed entry point of the registry's group (a broken one: a one-line SpecError)."""
        for ep in self._entry_points():
            self.resolve(ep.name)

    def __iter__(self) -> Iterator[T]:
        """Every entry, installed entry points loaded first."""
        self.load_entry_points()
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)
