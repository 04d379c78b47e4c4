"""Print the parameter-count and FLOPs table of docs/backbones.md: each paper-size backbone as bocb builds it
(100 and 1000 classes) beside the published count, in the form the publication counts it (RepVGG-A1 and
UniRepLKNet-T re-parameterised), with the published FLOPs at 224 px where they exist. The published numbers
and the counting helpers are those of tests/test_published_architectures.py, which checks the 2 % bound.

Usage: python scripts/backbone_counts.py
"""
from __future__ import annotations

import sys
from pathlib import Path

from timm.layers import set_fused_attn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
set_fused_attn(False)  # before the models are built: FlopCounterMode does not count the fused CPU kernel

import test_published_architectures as published  # noqa: E402

from bocb.backbones import PAPER_ORDER, build_backbone, input_size  # noqa: E402
from bocb.backbones.moganet import MogaNet  # noqa: E402


def row(name: str) -> str:
    head100 = published.n_params(build_backbone(name, size="paper", num_classes=100,
                                                img_size=input_size(name, "paper", None)))
    model = published.paper_model(name)
    count = published.unireplknet_deploy_params(model) if name == "unireplknet_t" else published.n_params(model)
    params, macs, source = published.PUBLISHED.get(name, (None, None, "not published"))
    form = f" ({published.FORM[name]})" if name in published.FORM else ""
    cells = [name, f"{head100 / 1e6:.2f} M", f"{count / 1e6:.2f} M{form}"]
    cells += [f"{params} M", f"{(count / 1e6 / params - 1) * 100:+.2f} %"] if params else ["—", ""]
    if macs is not None:
        measured = published.deploy_gmacs(model) if name == "unireplknet_t" else published.gmacs(
            MogaNet() if name == "moganet_s" else model)
        cells += [f"{measured:.2f}", f"{macs}", f"{(measured / macs - 1) * 100:+.2f} %"]
    else:
        cells += ["—", "—", ""]
    return "| " + " | ".join(cells + [source]) + " |"


if __name__ == "__main__":
    print("| backbone | ours, 100 classes | ours, 1000 classes | published | diff | GMACs at 224, ours "
          "| published | diff | source |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name in PAPER_ORDER:
        print(row(name))
