"""A small typed registry keyed by name, with aliases and wildcard listing.

The same shape serves backbones, optimizers, datasets and recipes (after
timm's ``OptimInfo`` / ``register_model``): entries are frozen dataclasses
with a ``name``; users add their own with :meth:`Registry.register`.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from bocb.errors import SpecError, unknown_name_message


class Named(Protocol):
    name: str


T = TypeVar("T", bound=Named)


def normalise(name: str) -> str:
    """Lower case, '-' and ' ' as '_' : 'SGD-M' -> 'sgd_m'."""
    return name.strip().lower().replace("-", "_").replace(" ", "_")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, entry: T, aliases: tuple[str, ...] = (), *, replace: bool = False) -> T:
        key = normalise(entry.name)
        if key in self._entries and not replace:
            raise ValueError(f"{self.kind} '{entry.name}' is already registered")
        self._entries[key] = entry
        for alias in aliases:
            self._aliases[normalise(alias)] = key
        return entry

    def resolve(self, name: str) -> str:
        """Canonical name for ``name`` or an alias of it."""
        key = normalise(name)
        key = self._aliases.get(key, key)
        if key not in self._entries:
            raise KeyError(name)
        return self._entries[key].name

    def get(self, name: str, field: str | None = None) -> T:
        """The entry for ``name``; a one-line SpecError naming the choices if unknown."""
        try:
            canonical = self.resolve(name)
        except KeyError:
            raise SpecError(field or self.kind, unknown_name_message(self.kind, name, self.names())) from None
        return self._entries[normalise(canonical)]

    def __contains__(self, name: str) -> bool:
        try:
            self.resolve(name)
        except KeyError:
            return False
        return True

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(e.name for e in self._entries.values() if fnmatch.fnmatch(e.name, pattern))

    def __iter__(self) -> Iterator[T]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)
