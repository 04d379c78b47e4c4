"""The pydantic base of every spec section, and the bound that keeps a seed storable: below both bocb.spec
and bocb.data, whose dataset section (bocb.data.DatasetSpec) the spec holds."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

MAX_SEED = 2**31 - 1  # a seed is stored in a 32-bit integer column in PostgreSQL


class StrictModel(BaseModel):
    """Unknown fields refused; numbers finite (no NaN or infinity) and never booleans (StrictInt,
    StrictFloat: YAML's `true` is not 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
