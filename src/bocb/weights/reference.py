"""Cross-check against WeightWatcher itself (optional dependency ``weightwatcher==0.7.7``).

WeightWatcher calls ``logging.basicConfig`` and prints at import and during fits; everything
here runs it with stdout/stderr captured and the root logger restored afterwards.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

import pandas as pd
import torch
from torch import nn

from bocb.errors import BocbError
from bocb.weights._table import layer_table

COMPARED = ("alpha", "xmin", "D")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    ww_logger = logging.getLogger("weightwatcher")
    saved_disabled = ww_logger.disabled
    ww_logger.disabled = True
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its pandas deprecation warnings are not ours to show
            yield
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        ww_logger.disabled = saved_disabled


def weightwatcher_details(model: nn.Module) -> pd.DataFrame:
    """WeightWatcher 0.7.7's default ``analyze()`` of ``model`` (its own column names)."""
    if torch.cuda.is_available():
        # WeightWatcher then casts weights to float16 before its SVD: not a reference.
        raise BocbError("weightwatcher comparison: run it on a CPU-only machine (CUDA makes it use float16)")
    with _quiet():
        try:
            import weightwatcher
        except ImportError:
            raise BocbError("weightwatcher comparison needs: pip install weightwatcher==0.7.7") from None
        return weightwatcher.WeightWatcher(model=model).analyze()


def compare_with_weightwatcher(model: nn.Module) -> pd.DataFrame:
    """Per layer WeightWatcher fits: ``alpha``/``xmin``/``D`` from both and absolute differences."""
    ours = layer_table(model).set_index("name")
    theirs = weightwatcher_details(model).set_index("longname")
    theirs = theirs[theirs["alpha"] > 0]  # WeightWatcher marks a failed fit with alpha = -1
    joined = theirs[list(COMPARED)].merge(ours[list(COMPARED)], how="left", left_index=True, right_index=True,
                                          suffixes=("_ww", "_bocb"))
    for column in COMPARED:
        joined[f"{column}_diff"] = (joined[f"{column}_ww"] - joined[f"{column}_bocb"]).abs()
    return joined.rename_axis("name").reset_index()
