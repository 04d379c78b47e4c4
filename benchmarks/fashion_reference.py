"""Fashion-MNIST reference: the tiny ResNet with SGD-M, trained on a stratified subset of the training
set, tested on the full 10,000-image test set, printed beside the numbers the dataset's authors list.

    python benchmarks/fashion_reference.py --train-subset 6000 --epochs 10 --out fashion_reference.json

Needs the data: ``apt-get install dataset-fashion-mnist`` (or --path to the IDX files).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bocb.engine import Runtime, run_trial
from bocb.recipes import resolve_recipe
from bocb.spec import DatasetSpec, TrialConfig

# Test accuracy (%) from the Benchmark table of Zalando's README (fashion-mnist, also shipped in
# /usr/share/doc/dataset-fashion-mnist/README.md.gz); submitted results the authors list without re-testing.
PUBLISHED = {
    "Human performance (crowd-sourced, 1,000 test images)": 83.5,
    "MLP 256-128-100": 88.33,
    "2 Conv+pooling (TensorFlow tutorial)": 91.6,
    "ResNet18 (flips, translation, rotation)": 94.9,
    "WRN-28-10 (crop + flip)": 95.9,
    "WRN-28-10 + Random Erasing": 96.3,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-subset", type=int, default=6000, help="stratified, fixed seed; 60000 = all")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--path", default=None, help="folder of the four IDX files; default: the Debian package")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = parser.parse_args()

    subset = None if args.train_subset >= 60000 else args.train_subset
    config = TrialConfig(
        dataset=DatasetSpec(name="fashion_mnist", path=args.path, train_subset=subset, val_fraction=0.0),
        backbone="resnet50", size="tiny", image_size=args.image_size, optimizer="sgd", lr=args.lr,
        weight_decay=args.weight_decay, recipe=resolve_recipe("torch"), epochs=args.epochs,
        batch_size=args.batch_size, seed=args.seed,
    )
    started = time.perf_counter()
    outcome = run_trial(config, Runtime(device=args.device, threads=args.threads, layer_table=False))
    if outcome.state != "done":
        raise SystemExit(f"trial {outcome.state}: {outcome.error}")
    result = {
        "config": config.model_dump(mode="json"), "test_top1": outcome.last.test_top1,
        "test_images": outcome.provenance["test_size"], "train_images": outcome.provenance["train_size"],
        "wall_s": round(time.perf_counter() - started, 1), "device": outcome.provenance["device_name"],
        "threads": args.threads, "per_epoch_test_top1": [e.test_top1 for e in outcome.epochs],
        "published": PUBLISHED,
    }
    print(f"tiny ResNet-50 + SGD-M, {result['train_images']} train images, {args.epochs} epochs: "
          f"test top-1 {result['test_top1']:.2f}% on {result['test_images']} images ({result['wall_s']} s)")
    for name, acc in PUBLISHED.items():
        print(f"  published  {acc:6.2f}%  {name}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
