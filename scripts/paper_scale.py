"""What the paper-scale presets cost on this machine, and what each way of reducing it saves: writes
docs/paper-scale.md between <!-- paper-scale:start --> and <!-- paper-scale:end --> (or prints it with
--print). Numbers in prose come from here, never from typing.

    python scripts/paper_scale.py [--print]

It runs `bocb run --preset paper_cifar100 --plan-only` and `... paper_imagenet --plan-only` (the `bocb`
entry point, in this process) and pastes what they print, then costs variants of paper_cifar100 (each a
change to its spec): bocb.estimate times each step once per process, so the variants reuse the steps
timed for the plan above them and differ only in what they train. The device is this machine's: run it
on a GPU to cost the presets there.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "paper-scale.md"
MARKERS = ("<!-- paper-scale:start -->", "<!-- paper-scale:end -->")
QUICK_OPTIMIZERS = ["sgd", "adam", "adamw", "lamb", "adagrad"]
QUICK_BACKBONES = ["alexnet", "vgg13_bn", "resnet50", "repvgg_a1", "deit_s", "convnext_t"]

# (what changes, the change to paper_cifar100's spec)
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("the paper's protocol (`paper_cifar100` as shipped)", {}),
    ("no second phase: lr x wd only (`search.phases: one`)", {"search": {"phases": "one"}}),
    ("successive halving (`search.method: halving`: rungs at 1/9, 1/3, 1 of the epochs, best third kept)",
     {"search": {"method": "halving"}}),
    ("successive halving whose rungs continue their runs (`promotion: continue`)",
     {"search": {"method": "halving", "promotion": "continue"}}),
    ("early stopping (`search.early_stop: {}`: after a third of the epochs, those 10 points below their pair's "
     "best stop)", {"search": {"early_stop": {}}}),
    ("3 x 3 lr/wd grid (`search.lr_points: 3, wd_points: 3`)", {"search": {"lr_points": 3, "wd_points": 3}}),
    ("more seeds only where the failure rule needs them (`reseed: failure_candidates`)",
     {"reseed": "failure_candidates"}),
    ("5 optimizers (the quick preset's: SGD-M, Adam, AdamW, LAMB, AdaGrad)", {"optimizers": QUICK_OPTIMIZERS}),
    ("6 backbones (the quick preset's families)", {"backbones": QUICK_BACKBONES}),
    ("tiny backbones (`size: tiny`, 32 px)", {"size": "tiny"}),
    ("100 epochs (`epochs: 100`)", {"epochs": 100}),
    ("continued halving + 5 optimizers + failure candidates",
     {"search": {"method": "halving", "promotion": "continue"}, "optimizers": QUICK_OPTIMIZERS,
      "reseed": "failure_candidates"}),
]


def plan_only(preset: str) -> str:
    """What `bocb run --preset PRESET --plan-only` prints (run through the entry point, in this process)."""
    from bocb.cli import main

    printed, argv = io.StringIO(), sys.argv
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(printed):
        sys.argv = ["bocb", "run", "--preset", preset, "--plan-only", "--out", tmp]
        try:
            main()
        except SystemExit as exc:
            if exc.code:
                raise SystemExit(f"bocb run --preset {preset} --plan-only exited {exc.code}") from None
        finally:
            sys.argv = argv
        return printed.getvalue().replace(tmp, "bocb-results")


def variant_spec(changes: dict[str, Any]):  # noqa: ANN201 - a BenchmarkSpec
    from bocb.spec import parse_spec, preset_path

    data = yaml.safe_load(preset_path("paper_cifar100").read_text())
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    return parse_spec(data, check_data=False)


def variants_table() -> str:
    from bocb.estimate import duration, estimate_plan

    rows, full = [], None
    for label, changes in VARIANTS:
        cost = estimate_plan(variant_spec(changes))
        full = full or cost.device_hours
        bound = "" if cost.bound == "exact" else f"{cost.bound} "
        rows.append(f"| {label} | {bound}{cost.trials:,} | {bound}{cost.epochs:,} | {duration(cost.device_hours)} | "
                    f"{cost.device_hours / full:.3f} |")
    head = ["| variant of `paper_cifar100` | trials | GPU-epochs | estimated trial time, one at a time, on "
            f"{cost.device} | share of the paper's protocol |", "|---|---|---|---|---|"]
    return "\n".join(head + rows)


def block() -> str:
    from bocb.provenance import environment

    env = environment()
    cifar, imagenet = plan_only("paper_cifar100"), plan_only("paper_imagenet")
    return (f"Written by `python scripts/paper_scale.py` on {datetime.date.today().isoformat()} at commit "
            f"`{(env['git_commit'] or 'unknown')[:10]}` (torch {env['torch']}) on this project's reference machine: "
            "2 CPU cores shared with other jobs, no GPU. So the wall times below are a CPU's, where a paper-size "
            "step takes seconds; the trial and GPU-epoch counts do not depend on the device.\n\n"
            f"`bocb run --preset paper_cifar100 --plan-only` printed:\n\n```\n{cifar.rstrip()}\n```\n\n"
            f"`bocb run --preset paper_imagenet --plan-only` printed:\n\n```\n{imagenet.rstrip()}\n```\n\n"
            "Variants of `paper_cifar100`, costed with the steps timed for the plan above (the tiny backbones "
            f"timed anew):\n\n{variants_table()}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the block instead of writing the page")
    args = parser.parse_args()
    text = block()
    if args.print:
        print(text)
        return 0
    page = TARGET.read_text()
    start, end = MARKERS
    if start not in page or end not in page:
        raise SystemExit(f"{TARGET}: markers {start} ... {end} not found")
    head, rest = page.split(start, 1)
    TARGET.write_text(head + start + "\n" + text + end + rest.split(end, 1)[1])
    print(f"{TARGET.relative_to(ROOT)}: written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
