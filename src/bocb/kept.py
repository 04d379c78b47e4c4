"""Kept weights: the final weights of finished trials, which outlive their trial (checkpoints do not).

Each is addressed by its trial key under the artifact root: ``weights/KEY.safetensors`` (the model's state,
as evaluated for the stored numbers) and ``weights/KEY.json`` (format, the trial's configuration, its
provenance, its final epoch's numbers, and the SHA-256 of the safetensors file). Both are written to a
temporary name and renamed, the JSON last, so a kept model is complete whenever its JSON exists. Reading
one checks the digest first and reads tensors only (safetensors executes nothing).

The spec's ``keep_weights`` says which survive a finished benchmark: ``chosen`` (each cell's chosen
configuration, at every seed; the default), ``all``, or ``none`` (nothing is written).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bocb.errors import DataError

if TYPE_CHECKING:
    import pandas as pd
    import torch

FORMAT = "bocb-weights-1"


def kept_path(artifact_root: Path, key: str) -> Path:
    """Where the trial ``key``'s weights are kept (its JSON is beside it, with suffix .json)."""
    return artifact_root / "weights" / f"{key}.safetensors"


def _description_path(path: Path) -> Path:
    return path.with_suffix(".json")


def kept_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_kept(model: torch.nn.Module, path: Path, description: dict[str, Any]) -> None:
    """Write ``model``'s weights to ``path`` and ``description`` (JSON types) beside it, atomically."""
    from safetensors.torch import save_model

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    save_model(model, str(partial), metadata={"format": FORMAT})  # shared (tied) tensors stored once
    digest = kept_sha256(partial)
    os.replace(partial, path)
    text = json.dumps({**description, "format": FORMAT, "sha256": digest}, sort_keys=True, default=str)
    partial_json = path.with_name(path.name + ".json.partial")
    partial_json.write_text(text)
    os.replace(partial_json, _description_path(path))


def read_description(path: Path) -> dict[str, Any]:
    """The JSON kept beside the weights at ``path`` (not checked against them: :func:`load_kept` does)."""
    try:
        description = json.loads(_description_path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"kept weights: no readable description beside '{path}' ({exc})") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise DataError(f"kept weights: '{_description_path(path)}' is not a {FORMAT} description")
    return description


def verify_kept(path: Path) -> dict[str, Any]:
    """The description of the weights kept at ``path`` once the file is checked as a checkpoint is before
    it is read (bocb.checkpoint): its SHA-256 against the description, then its format, a safetensors file
    of bocb's (header parsed, offsets checked against the file's size; no tensor read). A DataError
    naming the first problem otherwise. The digest alone is not enough: a description can be re-signed."""
    description = read_description(path)
    if not path.is_file() or kept_sha256(path) != description.get("sha256"):
        raise DataError(f"kept weights: '{path}' is missing or does not match the SHA-256 in its description "
                        "(damaged or altered)")
    check_safetensors(path)
    if description.get("key") != path.stem or not isinstance(description.get("final"), dict):
        raise DataError(f"kept weights: '{_description_path(path)}' does not describe trial {path.stem}'s "
                        "final weights")
    return description


def check_safetensors(path: Path) -> None:
    """``path`` is a safetensors file written by :func:`save_kept`, checked without reading a tensor; a
    DataError otherwise."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:  # numpy: parsing the header imports no torch
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"kept weights: '{path}' is not a safetensors file ({str(exc).splitlines()[0]})") from None
    if metadata.get("format") != FORMAT:
        raise DataError(f"kept weights: '{path}' is a safetensors file but not {FORMAT} (format "
                        f"{str(metadata.get('format'))[:40]!r})")


def load_kept(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors kept at ``path`` and their description, after checking the file (:func:`verify_kept`)."""
    from bocb.weights import load_state_dict

    description = verify_kept(path)
    return load_state_dict(path), description


def load_kept_into(model: torch.nn.Module, path: Path) -> dict[str, Any]:
    """Load the weights kept at ``path`` into ``model`` (strictly: every tensor, same shapes); returns the
    description."""
    from safetensors.torch import load_model

    load_kept(path)  # checks the digest (and reads the tensors once: a damaged file fails here)
    load_model(model, str(path), strict=True)  # restores tied tensors that the file stores once
    return read_description(path)


def prune_kept(artifact_root: Path, drop: Iterable[str]) -> int:
    """Delete the kept weights of the trials ``drop``; returns how many were there. Idempotent: any number
    of workers may prune the same benchmark at once."""
    removed = 0
    for key in drop:
        path = kept_path(artifact_root, key)
        _description_path(path).unlink(missing_ok=True)  # first: a model without its JSON is no kept model
        if path.exists():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def unchosen(trials: pd.DataFrame, sources: pd.DataFrame | None = None) -> set[str]:
    """The finished trials of a benchmark whose weights ``keep_weights: chosen`` does not keep: all but
    each cell's chosen configuration at every seed (bocb.protocol's one rule chooses it). For a transfer,
    ``sources`` (its pre-training trials) make its cells (source, mode) x fine-tuning optimizer."""
    from bocb.protocol import FINISHED, chosen_seeds, transfer_cells

    finished = set(trials.loc[trials["state"].isin([s.value for s in FINISHED]), "trial_key"])
    cells = trials if sources is None else transfer_cells(trials, sources)
    return finished - set(chosen_seeds(cells)["trial_key"])


def expected_kept(trials: pd.DataFrame, keep_weights: str, sources: pd.DataFrame | None = None) -> set[str]:
    """The trials whose final weights a worker kept and the pruning left: done trials that ended their run
    (not a rung that starts a longer one), all of them under ``keep_weights: all``, each cell's chosen
    configuration at every seed under ``chosen`` (what :func:`unchosen` does not prune), none under ``none``."""
    from bocb.protocol import TrialState

    if keep_weights == "none" or trials.empty:
        return set()
    starts = trials["config_json"].map(lambda text: json.loads(text).get("schedule_epochs") is not None)
    ended = set(trials.loc[(trials["state"] == TrialState.DONE.value) & ~starts, "trial_key"])
    return ended if keep_weights == "all" else ended - unchosen(trials, sources)


def start_from_kept(model: torch.nn.Module, path: Path, mode: str) -> torch.nn.Module | None:
    """Load the kept weights at ``path`` into ``model``, all but its classifier (a new head for the new
    task, as built); for ``mode`` 'linear_probe' freeze everything else and return the head (the caller
    trains it alone, with the body in eval mode), else None."""
    from bocb.backbones import classifier

    tensors = _input_channels_adapted(load_kept(path)[0], model)
    head = classifier(model)
    head_keys = {name for name, value in model.state_dict(keep_vars=True).items()
                 if any(value is v for v in head.state_dict(keep_vars=True).values())}
    missing, unexpected = model.load_state_dict({k: v for k, v in tensors.items() if k not in head_keys},
                                                strict=False)
    if set(missing) != head_keys or unexpected:
        raise ValueError(f"the kept weights at {path} do not fit this backbone (missing {sorted(missing)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]})")
    if mode != "linear_probe":
        return None
    trained = {id(p) for p in head.parameters()}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in trained)
    return head


def _input_channels_adapted(tensors: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The input convolution adapted to the new dataset's channel count (grey <-> RGB) as timm adapts
    pre-trained weights (``adapt_input_conv``: channels summed, or repeated and rescaled)."""
    from timm.models import adapt_input_conv

    target = model.state_dict()
    adapted = dict(tensors)
    for name, tensor in tensors.items():
        want = target.get(name)
        if (want is not None and tensor.ndim == 4 and want.shape != tensor.shape
                and want.shape[:1] + want.shape[2:] == tensor.shape[:1] + tensor.shape[2:]):
            adapted[name] = adapt_input_conv(want.shape[1], tensor, base_chans=tensor.shape[1])
    return adapted
