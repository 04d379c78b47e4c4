"""Atomic, safely loaded in-trial checkpoints.

Written to a temporary file, fsynced and renamed, so a kill mid-write leaves the
previous checkpoint intact. The file starts with a header holding the SHA-256 of
the rest, checked before anything is read, so a flipped byte (a bad disk, a
partial copy) is caught rather than resumed into a different trial. Loaded with
``torch.load(weights_only=True)``: only tensors and plain containers, never
arbitrary pickled objects. A checkpoint that cannot be read, fails its digest, is
not ours, or belongs to another trial is removed and reported as absent, so the
trial restarts cleanly.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

REQUIRED_KEYS = ("format", "trial", "epoch", "model", "optimizer", "rng")
FORMAT = "bocb-checkpoint-3"
MAGIC = b"BOCBCKPT3\n"  # then the payload's SHA-256 in hex and a newline, then torch.save's bytes
DIGEST_LENGTH = 64

log = logging.getLogger(__name__)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        **({"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuples(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    # random.setstate needs tuples; a weights-only load may hand back lists.
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: the old file stays whole until the new one is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    payload = buffer.getvalue()
    with open(tmp, "wb") as fh:
        fh.write(MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n")
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)  # make the rename itself durable
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by writers killed mid-write
        stale.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not every platform opens folders
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: Path, trial: str) -> dict[str, Any] | None:
    """The checkpoint of trial key ``trial`` at ``path``; None (and the file removed) if it is absent,
    unreadable, not a bocb checkpoint, or another trial's."""
    if not path.is_file():
        return None
    try:
        state = torch.load(io.BytesIO(_verified_payload(path.read_bytes())), map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != FORMAT or any(k not in state for k in REQUIRED_KEYS):
            raise ValueError("not a bocb checkpoint of this format")
        if state["trial"] != trial:
            raise ValueError(f"belongs to trial {state['trial']}, not {trial}")
    except Exception as exc:  # noqa: BLE001 - any unreadable file means: restart cleanly
        discard_checkpoint(path, f"{type(exc).__name__}: {exc}")
        return None
    return state


def _verified_payload(blob: bytes) -> bytes:
    """The torch bytes of a checkpoint file whose header digest matches them; ValueError otherwise."""
    if not blob.startswith(MAGIC):
        raise ValueError("no bocb checkpoint header")
    digest, payload = blob[len(MAGIC):len(MAGIC) + DIGEST_LENGTH], blob[len(MAGIC) + DIGEST_LENGTH + 1:]
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise ValueError("content does not match its digest (damaged or altered)")
    return payload


def discard_checkpoint(path: Path, reason: str) -> None:
    log.warning("discarding checkpoint %s (%s); the trial restarts from epoch 0", path, reason)
    path.unlink(missing_ok=True)
