"""Provenance recorded next to every result: versions, git commit, host, device."""
from __future__ import annotations

import functools
import hashlib
import platform
import re
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import bocb

TRACKED_PACKAGES = ("torch", "torchvision", "timm", "pytorch_optimizer", "schedulefree", "numpy")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the bocb source tree, when it is a git checkout (with '+dirty' if modified)."""
    here = Path(bocb.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


LOCK_FILE = Path(bocb.__file__).resolve().parents[2] / "requirements.lock"  # in a source checkout


@functools.lru_cache(maxsize=1)
def lock_state() -> dict[str, Any]:
    """The lock's hash (sha256 of requirements.lock, first 16 hex digits) and the packages whose installed
    version differs from it: results reproduce only where that list is empty. None where bocb was
    installed without its source tree (no lock to compare with)."""
    if not LOCK_FILE.is_file():
        return {"lock": None, "lock_mismatches": None}
    text = LOCK_FILE.read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9._-]+)==(\S+)$", text, flags=re.MULTILINE))
    mismatches = sorted(f"{name}=={_version(name) or 'missing'}" for name, version in pins.items()
                        if _version(name) != version)
    return {"lock": hashlib.sha256(text.encode()).hexdigest()[:16], "lock_mismatches": mismatches}


@functools.lru_cache(maxsize=1)
def environment() -> dict[str, Any]:
    """What stays the same for every trial in this process."""
    return {
        "bocb": bocb.__version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        **{pkg: _version(pkg) for pkg in TRACKED_PACKAGES},
        **lock_state(),
    }
