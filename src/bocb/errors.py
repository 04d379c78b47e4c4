"""User-facing errors: one line, naming the field and the valid choices.

The CLI prints ``str(error)`` on stderr and exits with code 2; nothing else
(no traceback). Library code raises these for any bad input a user can fix.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class BocbError(Exception):
    """An error the user can fix; its message is a single line."""


class SpecError(BocbError):
    """Invalid benchmark spec or command-line value."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class DataError(BocbError):
    """A dataset file is missing, truncated or in the wrong format."""


def unknown_name_message(kind: str, name: str, choices: Iterable[str]) -> str:
    """'unknown optimizer 'adamx'; did you mean 'adam'? valid: a, b, c'."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name.lower(), choices, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ";"
    return f"unknown {kind} '{name}'{hint} valid choices: {', '.join(choices)}"


def check_choice(field: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``; else a SpecError naming the field and the choices."""
    if value not in choices:
        raise SpecError(field, f"unknown value '{value}'; valid choices: {', '.join(choices)}")
    return value


SHOWN_MATCHES = 5  # an ambiguous prefix: enough matches to pick from, still one short line
MAX_CHOICES_LISTED = 20


def resolve_prefix(field: str, kind: str, requested: str, candidates: Iterable[str]) -> str:
    """The one candidate that is ``requested`` or starts with it: the one rule for every id a user may
    shorten (``kind``: 'benchmark id', 'trial key'). Empty, ambiguous or unknown: a one-line SpecError on ``field``
    naming some of the matches (ambiguous) or the close choices (unknown)."""
    if not requested.strip():
        raise SpecError(field, f"is empty: give a {kind} or the start of one")
    candidates = sorted(set(candidates))
    if requested in candidates:  # a whole id wins, even where it starts another
        return requested
    matches = [c for c in candidates if c.startswith(requested)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        shown = ", ".join(matches[:SHOWN_MATCHES]) + (" ..." if len(matches) > SHOWN_MATCHES else "")
        raise SpecError(field, f"'{requested}' is ambiguous: {len(matches)} {kind}s start with it ({shown}); "
                               "give more of the one you mean")
    if len(candidates) > MAX_CHOICES_LISTED:  # a store of thousands of trials: not thousands of keys
        raise SpecError(field, f"no {kind} starts with '{requested}' (of {len(candidates)} stored)")
    raise SpecError(field, unknown_name_message(kind, requested, candidates))
