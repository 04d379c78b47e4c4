"""Write requirements.lock: the exact version of every package `bocb run` needs (bocb's own dependencies
and theirs, without the dev or ray extras), as installed in the running environment.

Usage (in an environment where `pip install -e .` and the tests pass): python scripts/lock.py
`python scripts/lock.py --check` only says where the lock and pyproject.toml disagree (exit 1 if they do).
The README's set-up command installs from it, so a fresh clone reproduces the README's numbers; each
trial records the lock's hash (bocb.provenance). By hand because pip has no "freeze the closure of one
distribution" command and pip-tools would re-resolve against the index instead of locking what was tested.
"""
from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

LOCK = Path(__file__).resolve().parents[1] / "requirements.lock"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root: str) -> dict[str, str]:
    """{canonical name: installed version} of everything ``root`` needs without extras (a package reached
    with extras, like torch's cuda-toolkit[cublas,...], brings what those extras need)."""
    found: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(r) for r in metadata.requires(root) or []]
    while todo:
        requirement = todo.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        name, extras = _canonical(requirement.name), frozenset(requirement.extras)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        dist = metadata.distribution(requirement.name)
        found[name] = dist.version
        for child in map(Requirement, dist.requires or []):
            marker = child.marker
            if marker is None or marker.evaluate({"extra": ""}) or any(marker.evaluate({"extra": e}) for e in extras):
                todo.append(Requirement(str(child).split(";")[0]))  # its marker is settled here
    return found


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """{canonical name: version} pinned by a lock file."""
    pins = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[_canonical(name)] = version
    return pins


def disagreements(pins: dict[str, str]) -> list[str]:
    """Where the lock and pyproject.toml's dependencies disagree: a dependency the lock leaves out, or pins at a
    version outside the range pyproject.toml asks for (read from the installed bocb's metadata)."""
    found = []
    for requirement in map(Requirement, metadata.requires("bocb") or []):
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        pinned = pins.get(_canonical(requirement.name))
        if pinned is None:
            found.append(f"{requirement.name}: not in {LOCK.name}")
        elif not requirement.specifier.contains(pinned, prereleases=True):
            found.append(f"{requirement.name}: {LOCK.name} pins {pinned}, pyproject.toml asks {requirement.specifier}")
    return found


def main() -> int:
    if sys.argv[1:] == ["--check"]:  # CI: the lock the README installs is the one pyproject.toml describes
        problems = disagreements(read_lock())
        print("\n".join(problems) or f"{LOCK.name} agrees with pyproject.toml")
        return 1 if problems else 0
    pins = closure("bocb")
    header = ("# Exact versions of everything `bocb run` needs (no dev or ray extras), written by scripts/lock.py\n"
              f"# from the environment it was run in (Python {sys.version.split()[0]}). Install: see the README.\n")
    LOCK.write_text(header + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
    print(f"{LOCK.name}: {len(pins)} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
