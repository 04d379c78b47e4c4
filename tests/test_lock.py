"""requirements.lock, which the README and CI install, agrees with pyproject.toml and with what is installed."""
from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "lock.py"


def _lock_module():
    spec = importlib.util.spec_from_file_location("lock_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lock_pins_every_dependency_within_pyproject_ranges() -> None:
    lock = _lock_module()
    pins = lock.read_lock()
    assert lock.disagreements(pins) == []
    assert pins["torch"] and pins["timm"]  # the versions results depend on are pinned
    # the check is real: a pin outside a range, and a missing dependency, are both found
    wrong = {**pins, "numpy": "1.0.0"}
    del wrong["scipy"]
    found = lock.disagreements(wrong)
    assert any(line.startswith("numpy: requirements.lock pins 1.0.0") for line in found)
    assert "scipy: not in requirements.lock" in found


def test_the_installed_environment_is_the_lock() -> None:
    """CI installs the lock first: what runs the tests is what users are told to install."""
    lock = _lock_module()
    installed, pins = lock.closure("bocb"), lock.read_lock()
    differing = {name: (pins.get(name), version) for name, version in installed.items() if pins.get(name) != version}
    assert differing == {}
