"""Training throughput of every tiny backbone on this machine.

images/s for forward + backward + optimizer step (AdamW), batch 128, 32x32, 100 classes,
one thread, denormals flushed. Usage: python benchmarks/backbones.py [--steps N] [names...]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from bocb.backbones import PAPER_ORDER, build_backbone


def throughput(name: str, steps: int, warmup: int = 2, batch: int = 128, side: int = 32) -> float:
    torch.manual_seed(0)
    model = build_backbone(name, size="tiny", num_classes=100, img_size=side).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch, 3, side, side), torch.randint(0, 100, (batch,))
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(PAPER_ORDER))
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    print(f"torch {torch.__version__}, 1 thread, batch 128, 32x32, {args.steps} timed steps")
    print(f"{'backbone':22s} {'images/s':>9s}")
    for name in args.names:
        print(f"{name:22s} {throughput(name, args.steps):9.1f}", flush=True)


if __name__ == "__main__":
    main()
