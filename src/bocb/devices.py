"""Which torch device a trial runs on, and a check that it exists before any trial is started."""
from __future__ import annotations

import torch

from bocb.errors import SpecError


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when there is one, else the CPU; any other name as torch spells it."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def check_device(name: str, field: str = "device") -> None:
    """Raise a one-line error naming ``field`` when this machine cannot run on ``name`` (so a sweep does
    not start trials that can only crash)."""
    try:
        device = resolve_device(name)
    except RuntimeError:
        raise SpecError(field, f"unknown device {name!r}; valid choices: auto, cpu, cuda, cuda:N") from None
    if device.type == "cpu":
        return
    if device.type != "cuda":
        raise SpecError(field, f"device {name!r} is not supported; valid choices: auto, cpu, cuda, cuda:N")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise SpecError(field, f"{name!r} asked for, but this machine has no CUDA device (torch "
                               f"{torch.__version__}); valid choices here: auto, cpu")
    if device.index is not None and device.index >= count:
        choices = ", ".join(["auto", "cpu", "cuda", *(f"cuda:{i}" for i in range(count))])
        raise SpecError(field, f"{name!r} asked for, but this machine has {count} CUDA device(s); "
                               f"valid choices here: {choices}")
