"""Run a preset and write what it printed into the README (quick) or docs/presets.md (fashion), between
the markers <!-- PRESET-run:start --> and <!-- PRESET-run:end -->, with the wall time, the commit, the
torch version and the lock's hash. Numbers in prose come from here, never from typing.

Usage, from a clone installed as the README says (requirements.lock):
    python scripts/readme_results.py --preset quick [--out DIR]
The interpreter running this script is the one whose bocb runs the preset.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"quick": ROOT / "README.md", "fashion": ROOT / "docs" / "presets.md",
           "transfer": ROOT / "docs" / "transfer.md"}


def run_preset(preset: str, out: Path) -> tuple[str, float, int, float]:
    load = os.getloadavg()[0]  # what else the machine was doing: a loaded machine takes longer
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bocb", "run", "--preset", preset, "--out", str(out)],
                          capture_output=True, text=True)
    return done.stdout, time.perf_counter() - started, done.returncode, load


def environment() -> dict[str, str]:
    code = ("from bocb.provenance import environment as e; x = e(); "
            "print(x['git_commit'], x['torch'], x['lock'], len(x['lock_mismatches'] or []))")
    commit, torch, lock, mismatches = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                     check=True).stdout.split()
    return {"commit": commit[:10], "torch": torch, "lock": lock, "mismatches": mismatches}


def block(preset: str, printed: str, seconds: float, env: dict[str, str], load: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    counts = "; ".join(re.findall(r"^((?:transfer: )?\d+ trials: .*?crashed)", printed, flags=re.MULTILINE))
    locked = "installed from `requirements.lock`" if env["mismatches"] == "0" else \
        f"with {env['mismatches']} package(s) differing from `requirements.lock`"
    printed = printed.replace(str(Path.cwd()) + "/", "")
    return (f"`bocb run --preset {preset}` on this project's reference machine (2 CPU cores, no GPU), {locked} "
            f"(lock `{env['lock']}`, torch {env['torch']}) at commit `{env['commit']}`, took **{minutes} min "
            f"{rest:02d} s** from the command to the report on {datetime.date.today().isoformat()} "
            f"({counts or 'no trial count printed'}; 1-minute load average {load:.1f} at the "
            "start), and printed:\n\n"
            f"```\n{printed.rstrip()}\n```\n")


def replace_block(path: Path, preset: str, text: str) -> None:
    start, end = f"<!-- {preset}-run:start -->", f"<!-- {preset}-run:end -->"
    page = path.read_text()
    if start not in page or end not in page:
        raise SystemExit(f"{path}: markers {start} ... {end} not found")
    head, rest = page.split(start, 1)
    path.write_text(head + start + "\n" + text + end + rest.split(end, 1)[1])


def report_simulation(printed: str, page: Path, marker: str, docs: bool, started: float) -> None:
    """Print a simulation's output and, with ``docs``, put it between ``marker``'s markers in ``page`` with
    the command, commit, lock and date it ran at (benchmarks/verdicts.py, benchmarks/compare.py)."""
    print(printed)
    if not docs:
        return
    env = environment()
    command = " ".join(["python", *sys.argv])
    text = (f"`{command}` on this project's reference machine (2 CPU cores), lock `{env['lock']}`, at commit "
            f"`{env['commit']}` on {datetime.date.today().isoformat()} in "
            f"{(time.perf_counter() - started) / 60:.1f} min:\n\n```\n{printed}\n```\n")
    replace_block(page, marker, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(TARGETS), required=True)
    parser.add_argument("--out", type=Path, default=None, help="results folder; default: a temporary one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "bocb-results"
        printed, seconds, code, load = run_preset(args.preset, out)
        if code != 0:
            print(printed)
            raise SystemExit(f"bocb run --preset {args.preset} exited {code}; README left alone")
        replace_block(TARGETS[args.preset], args.preset, block(args.preset, printed.replace(str(out), "bocb-results"),
                                                               seconds, environment(), load))
    print(f"{TARGETS[args.preset].relative_to(ROOT)}: {args.preset} run written ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
