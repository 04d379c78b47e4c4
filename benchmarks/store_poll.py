"""What a waiting worker's poll costs: reading every trial (planning) vs the progress signature.

    python benchmarks/store_poll.py [--trials 30000] [--store URL]

Fills a fresh store (SQLite in a temporary folder unless ``--store`` names an empty database) with
``--trials`` finished trials of one benchmark, each with a provenance record the size of a real one (the
paper's 20 x 20 grid with 25 configurations and 3 seeds is about 30,000), then times, side by side, the
two reads a waiting worker may make per poll: ``Store.trials_frame`` (what planning reads) and
``Store.progress_signature`` (what ``StageWatch`` reads while nothing has changed).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from bocb.recipes import resolve_recipe
from bocb.spec import DatasetSpec, TrialConfig
from bocb.store import Store, plan, trials


def real_config() -> dict:
    recipe = resolve_recipe("torch", {"epochs": 200, "batch_size": 128})
    return TrialConfig(dataset=DatasetSpec(name="digits"), backbone="resnet50", size="paper", image_size=224,
                       optimizer="adamw", lr=1e-3, weight_decay=0.05, recipe=recipe, epochs=200, batch_size=128,
                       seed=0).model_dump(mode="json")


def provenance(config: dict) -> dict:
    """The shape of a stored trial's provenance (1.2 kB here; real ones are 1.2 to 1.7 kB)."""
    versions = {name: "1.0.0" for name in ("bocb", "numpy", "pytorch_optimizer", "schedulefree", "timm", "torch")}
    return {**versions, "git_commit": "0" * 40, "device": "cuda", "device_name": "NVIDIA H100 80GB HBM3",
            "platform": "Linux-6.18-x86_64-with-glibc2.36", "python": "3.11.7", "recipe": config["recipe"],
            "optimizer": {"class": "torch.optim.adamw.AdamW", "library": "torch.optim", "family": "modern",
                          "kwargs": {"lr": 1e-3, "weight_decay": 0.05, "betas": [0.9, 0.999], "eps": 1e-8},
                          "weight_decay_policy": "no_decay_1d", "decayed_tensors": 54, "non_decayed_tensors": 107}}


def fill(store: Store, n: int) -> None:
    now, config = time.time(), real_config()
    config_json, provenance_json = json.dumps(config), json.dumps(provenance(config))
    rows = [{"key": f"{i:040d}", "config_json": config_json,
             "backbone": f"backbone{i % 20}", "size": "paper", "optimizer": f"optimizer{i // 20 % 20}", "lr": 1e-3,
             "weight_decay": 0.05, "hparams_json": "{}", "seed": i % 3, "epochs": 200, "created_at": now + i,
             "state": "done", "attempts": 1, "started_at": now, "finished_at": now + i, "val_top1": 50.0,
             "test_top1": 50.0, "test_top5": 80.0, "train_loss": 1.0, "time_s": 1.0,
             "provenance_json": provenance_json} for i in range(n)]
    links = [{"benchmark_id": "b", "trial_key": r["key"], "stage": "search", "budget": 1} for r in rows]
    store.register_benchmark("b", "poll-benchmark", {})
    with store.engine.begin() as conn:
        conn.execute(sa.insert(trials), rows)
        conn.execute(sa.insert(plan), links)


def best_of(repeats: int, read) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        read()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=30_000)
    parser.add_argument("--store", help="an empty database URL (default: SQLite in a temporary folder)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(args.store or Path(tmp) / "poll.db")
        fill(store, args.trials)
        frame_s = best_of(args.repeats, lambda: store.trials_frame("b"))
        signature_s = best_of(args.repeats, lambda: store.progress_signature("b"))
        print(f"{store.engine.dialect.name}, {args.trials} finished trials: trials_frame {frame_s * 1e3:.1f} ms, "
              f"progress_signature {signature_s * 1e3:.2f} ms, ratio {frame_s / signature_s:.0f}x")


if __name__ == "__main__":
    main()
