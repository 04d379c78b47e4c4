"""Print the value tables of docs/paper-fidelity.md from the code: Table A1 (each backbone's input size and
recipe), Table A3 (each recipe's values in both settings, with the optimizer it was published with) and
Table A2 (each optimizer's category and weight-decay type as built), with the source of each row. The paper's
values are pinned against these by tests/test_paper_fidelity.py.

Usage: python scripts/paper_fidelity_tables.py
"""
from __future__ import annotations

from bocb.backbones import PAPER_ORDER, get_backbone
from bocb.optim import OPTIMIZERS
from bocb.paper import OPTIMIZER_NAMES
from bocb.protocol import SETTINGS
from bocb.recipes import TABLE_A3, published_column, resolve_recipe

RECIPES = tuple(TABLE_A3)
# Table A3 rows: (label, ingredient or a function of the resolved recipe and setting, source)
ROWS = (
    ("optimizer", lambda r, s: published_column(r, s).optimizer, "P; authors' configs"),
    ("lr (grid centre)", lambda r, s: published_column(r, s).lr,
     "P (SGD 0.1, AdamW 1e-3, LAMB 5e-3 / 8e-3); ImageNet: D (5e-4 x 1024/512), C (4e-3 at 4096), R"),
    ("weight decay", lambda r, s: published_column(r, s).weight_decay, "P; D, C, R"),
    ("epochs", "epochs", "P: 200 on CIFAR-100; ImageNet 100/300: authors' configs, D, C, R"),
    ("batch size", "batch_size",
     "P: 100 on CIFAR-100; ImageNet: authors' configs (4x64, 8x128, 8x256x2, 8x256), D, C, R"),
    ("train side / test side", "train_image_ratio", "R A3: 160 / 224 (a ratio here, see deviations)"),
    ("test crop", "test_crop", "P: 0.875 / 0.95 on ImageNet; CIFAR is tested whole"),
    ("warmup epochs", "warmup_epochs", "P (5-20), D 5, C 20, R 5"),
    ("label smoothing", "label_smoothing", "P, D, C; R none (BCE)"),
    ("stochastic depth", "drop_path_rate", "D 0.1, C 0.1, R A2 0.05 / A3 0"),
    ("repeated augmentation", "repeated_aug", "D 3, R A2"),
    ("gradient clipping", "grad_clip", "P: 5 for ViTs (the DeiT recipe)"),
    ("RandAugment", "randaugment", "P m9 mstd 0.5; R m7 / m6"),
    ("Mixup / CutMix", lambda r, s: f"{resolve_recipe(r, setting=s)['mixup_alpha']:g} / "
                                    f"{resolve_recipe(r, setting=s)['cutmix_alpha']:g}", "P, D, C, R"),
    ("random erasing", "random_erasing", "P, D, C; R none"),
    ("EMA decay", "ema_decay", "D 0.99996, C 0.9999; R none"),
    ("loss", "loss", "P: CE; RSB BCE (target threshold 0.2)"),
)


def _show(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def table_a3(setting: str) -> list[str]:
    lines = ["| row | " + " | ".join(RECIPES) + " | source |", "|---|" + "---|" * len(RECIPES) + "---|"]
    for label, row, source in ROWS:
        cells = [row(r, setting) if callable(row) else resolve_recipe(r, setting=setting)[row] for r in RECIPES]
        lines.append(f"| {label} | " + " | ".join(_show(c) for c in cells) + f" | {source} |")
    return lines


def table_a1() -> list[str]:
    lines = ["| backbone | Table 1 column | input size | recipe |", "|---|---|---:|---|"]
    for name in PAPER_ORDER:
        info = get_backbone(name)
        lines.append(f"| {name} | {info.column} | {info.paper_input_size} | {info.default_recipe} |")
    return lines


def table_a2() -> list[str]:
    lines = ["| optimizer | category | weight decay | built as | deviation |", "|---|---|---|---|---|"]
    for name in dict.fromkeys(OPTIMIZER_NAMES.values()):
        info = OPTIMIZERS.get(name)
        lines.append(f"| {info.paper_name} | {info.category} | {'decoupled' if info.decoupled_decay else 'L2'} "
                     f"| {info.source} `{info.cls.rsplit('.', 1)[-1]}` | {info.deviation or '—'} |")
    return lines


if __name__ == "__main__":
    print("\n".join(table_a1()), end="\n\n")
    for setting in SETTINGS:
        print(f"{setting}:\n")
        print("\n".join(table_a3(setting)), end="\n\n")
    print("\n".join(table_a2()))
