"""Rows as the store's readers need them: a row written outside bocb (text in a number column, a JSON
column holding no object, a layer table that is no JSON records) is refused in one line naming its trial,
when read here and when a bundle is written out or merged in."""
from __future__ import annotations

import json
from collections.abc import Mapping
from io import StringIO
from typing import Any

import pandas as pd
import sqlalchemy as sa

from bocb.errors import DataError
from bocb.store.schema import MACHINE_COLUMNS, trials


def check_finished_rows(rows: Mapping[str, list[dict[str, Any]]]) -> None:
    """Refuse, in one line naming the trial, trial and layer-table rows that the store's readers could not
    read (text in a number column, a JSON column holding no object, a layer table that is no JSON records):
    what `bocb export` writes out and `bocb import` merges in is checked as the store reads it."""
    check_trial_rows(pd.DataFrame(rows["trials"], columns=[c.name for c in trials.columns
                                                            if c.name not in MACHINE_COLUMNS])
                      .rename(columns={"key": "trial_key"}))
    for row in rows["layer_tables"]:
        layer_rows(row["trial_key"], row["table_json"])


def json_shape_problem(column: str, value: Any) -> str | None:
    """What a row's JSON ``column`` holds when bocb wrote it (a layer table's records of bocb.weights' columns;
    an object in any other), if the parsed ``value`` is not that; None when it is. The one rule for the
    store's readers, `bocb export` and `bocb import`."""
    if column == "table_json":
        return None if _is_layer_table(value) else "a layer table (records of bocb.weights' columns)"
    return None if isinstance(value, dict) else "a JSON object"


def _is_layer_table(value: Any) -> bool:
    from bocb.weights import COLUMNS, TEXT_COLUMNS  # bocb.weights' column names import no torch

    def fits(name: str, cell: Any) -> bool:
        if name in TEXT_COLUMNS:
            return isinstance(cell, str)
        return cell is None or (isinstance(cell, (int, float)) and not isinstance(cell, bool))

    return isinstance(value, list) and all(
        isinstance(r, dict) and set(r) == set(COLUMNS) and all(fits(k, v) for k, v in r.items()) for r in value)


def _stored_json(key: str, column: str, text: Any) -> Any:
    """The JSON value of a row's ``column``, refused in one line naming the trial when bocb could not have
    written it there."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        value, problem = None, "JSON"
    else:
        problem = json_shape_problem(column, value)
    if problem:
        raise DataError(f"store: trial {key}: column '{column}' holds {str(text)!r:.60}, not {problem} "
                        "(written outside bocb); restore the store from a copy")
    return value


def layer_rows(key: str, text: str) -> pd.DataFrame:
    """A trial's stored layer table; one that is not bocb's layer records was written outside bocb."""
    _stored_json(key, "table_json", text)
    return pd.read_json(StringIO(text), orient="records")


def _json_objects(frame: pd.DataFrame, column: str) -> pd.Series:
    """Each row's JSON object in ``column`` (a missing one is empty); a row holding anything else was written
    outside bocb, and is refused in one line naming its trial."""
    def parsed(key: str, text: Any) -> dict[str, Any]:
        return {} if text is None or is_nan(text) else _stored_json(key, column, text)

    return pd.Series([parsed(k, t) for k, t in zip(frame["trial_key"], frame[column])], index=frame.index,
                     dtype=object)


def _check_numbers(frame: pd.DataFrame) -> None:
    """SQLite keeps whatever a row was given: a number column holding text was written outside bocb."""
    for column in (c.name for c in trials.columns if isinstance(c.type, (sa.Float, sa.Integer))):
        if column in frame and frame[column].dtype == object:
            bad = frame[column].notna() & pd.to_numeric(frame[column], errors="coerce").isna()
            if bad.any():
                first = frame.loc[bad.idxmax()]
                raise DataError(f"store: trial {first['trial_key']}: column '{column}' holds "
                                f"{str(first[column])!r:.60}, not a number ({int(bad.sum())} such row(s), written "
                                "outside bocb); restore the store from a copy")


def check_trial_rows(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Refuse rows written outside bocb (text in a number column, a JSON column that holds no object);
    returns the parsed configurations and provenances."""
    _check_numbers(frame)
    _json_objects(frame, "hparams_json")
    return _json_objects(frame, "config_json"), _json_objects(frame, "provenance_json")


def is_nan(value: Any) -> bool:
    return isinstance(value, float) and value != value
