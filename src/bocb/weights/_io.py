"""Read weights from a file: a bocb checkpoint, a saved state dict, or a .safetensors file."""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import torch

from bocb.errors import DataError
from bocb.weights._table import layer_table

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of ``path``; a bocb checkpoint (a dict with key 'model') yields its model.

    Torch files are read with ``weights_only=True`` onto the CPU: no pickled code ever runs.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"weights: no such file '{path}'")
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        return _load_safetensors(path)
    if suffix not in TORCH_SUFFIXES:
        valid = ", ".join((*TORCH_SUFFIXES, SAFETENSORS_SUFFIX))
        raise DataError(f"weights: '{path}' has suffix '{suffix}'; valid: {valid}")
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle's protocol: the error below says it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise DataError(f"weights: cannot read '{path}' as a torch file ({type(exc).__name__})") from None
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)} if isinstance(state, Mapping) else {}
    if not tensors:
        raise DataError(f"weights: '{path}' holds no state dict (expected name -> tensor, or {{'model': ...}})")
    return tensors


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError) as exc:
        raise DataError(f"weights: cannot read '{path}' as safetensors ({exc})") from None


def load_layer_table(target: str, *, store_url: str | None = None, topk: int | float = 5) -> pd.DataFrame:
    """The layer table of a weights file, or of a stored trial (its key, or a unique key prefix).

    A stored table is returned as the trial stored it (its own top-k).
    """
    if Path(target).is_file():
        return layer_table(load_state_dict(target), topk=topk)
    if store_url is None:
        raise DataError(f"weights: no such file '{target}'; to read a stored trial's table give --store URL")
    from bocb.store import Store

    return Store(store_url, existing=True).layer_table(target)
