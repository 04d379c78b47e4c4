"""Print the optimizer tables of docs/optimizers.md from the registry (bocb.optim.OPTIMIZERS), so that the
docs' numbers come from the code: the defaults and search grids, every fixed hyper-parameter, and the
weight-decay type with any recorded deviation from the paper.

Usage: python scripts/optimizer_tables.py  (paste each table over its namesake in docs/optimizers.md)
"""
from __future__ import annotations

from bocb.optim import OPTIMIZERS, OptimizerInfo, search_space
from bocb.paper import OPTIMIZER_NAMES


def in_paper_order() -> list[OptimizerInfo]:
    """Table 1's rows (categories a-d), then the newer optimizers by name."""
    paper = list(dict.fromkeys(OPTIMIZER_NAMES.values()))
    return [OPTIMIZERS.get(n) for n in paper] + [i for i in OPTIMIZERS if i.name not in paper]


def _values(values: list) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _fixed(fixed: dict) -> str:
    return ", ".join(f"{k}={tuple(v) if isinstance(v, (tuple, list)) else v}" for k, v in fixed.items())


def defaults_table() -> list[str]:
    rows = ["| name | paper name | cat. | source | class | classical lr / wd | modern lr / wd | lr grid (classical) "
            "| wd grid (classical) | extras |", "|---|---|---|---|---|---|---|---|---|---|"]
    for info in in_paper_order():
        space = search_space(info.name, "classical")
        c, m = info.defaults["classical"], info.defaults["modern"]
        extras = "; ".join(f"{k}: {_values(v)}" for k, v in info.extras.items()) or "—"
        rows.append(f"| `{info.name}` | {info.paper_name} | {info.category} | {info.source} | `{info.cls}` "
                    f"| {c['lr']:g} / {c['weight_decay']:g} | {m['lr']:g} / {m['weight_decay']:g} "
                    f"| {_values(space.lr)} | {_values(space.weight_decay)} | {extras} |")
    return rows


def fixed_table() -> list[str]:
    rows = ["| name | fixed hyper-parameters | internal clipping | note |", "|---|---|---|---|"]
    rows += [f"| `{i.name}` | {_fixed(i.fixed)} | {i.internal_clipping} | {i.note or '—'} |" for i in in_paper_order()]
    return rows


def decay_table() -> list[str]:
    rows = ["| name | paper name | weight decay (Table A2) | deviation from the paper |", "|---|---|---|---|"]
    rows += [f"| `{i.name}` | {i.paper_name} | {'decoupled' if i.decoupled_decay else 'L2'} | {i.deviation or '—'} |"
             for i in in_paper_order() if i.category != "new"]
    return rows


if __name__ == "__main__":
    for table in (defaults_table(), fixed_table(), decay_table()):
        print("\n".join(table), end="\n\n")
