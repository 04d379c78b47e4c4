"""Write docs/compare.md's worked comparison: `bocb compare` of the quick preset's store against the fashion
preset's, what it printed, the commits the two stores' trials ran at, and a screenshot of its page.

Usage (stores of `bocb run --preset quick` and `--preset fashion`, e.g. from scripts/readme_results.py --out):
    python scripts/compare_presets.py QUICK_STORE FASHION_STORE [--out DIR]
"""
from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from readme_results import environment, replace_block  # noqa: E402


def commits(store: Path) -> str:
    """The git commits a store's trials ran at (their provenance), most trials first."""
    from bocb.store import Store

    trials = Store(store, read_only=True).trials_frame()
    counts = trials["git_commit"].fillna("unknown").str[:10].value_counts()
    return ", ".join(f"`{commit}` ({count} trials)" for commit, count in counts.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("quick", type=Path)
    parser.add_argument("fashion", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="where the comparison page goes; default: temporary")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "compare"
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "bocb", "compare", str(args.quick), str(args.fashion), "-o",
                               str(out)], capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"bocb compare exited {done.returncode}: {done.stderr.strip()}")
        subprocess.run([sys.executable, str(ROOT / "scripts" / "report_screenshot.py"), str(out / "compare.html"),
                        "--png", str(ROOT / "docs" / "compare-quick-fashion.png")], check=True)
    env = environment()
    printed = "\n".join(line for line in done.stdout.splitlines() if not line.startswith("comparison written"))
    printed = printed.replace(str(args.quick), "quick/bocb.db").replace(str(args.fashion), "fashion/bocb.db")
    text = (f"`bocb compare quick/bocb.db fashion/bocb.db -o compare/` at commit `{env['commit']}` (lock "
            f"`{env['lock']}`) on {datetime.date.today().isoformat()}, {seconds:.1f} s. The quick store's trials ran "
            f"at {commits(args.quick)}; the fashion store's at {commits(args.fashion)}. It printed:\n\n"
            f"```\n{printed.rstrip()}\n```\n")
    replace_block(ROOT / "docs" / "compare.md", "quick-vs-fashion", text)
    print(text)


if __name__ == "__main__":
    main()
