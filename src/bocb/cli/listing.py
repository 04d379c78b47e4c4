"""`bocb list ...`: what is registered (backbones here; optimizers, datasets, recipes beside it)."""
from __future__ import annotations

import typer
from rich.table import Table

from bocb.cli._app import app, print_table

list_app = typer.Typer(help="List registered backbones, optimizers, datasets, recipes.", no_args_is_help=True)
app.add_typer(list_app, name="list")


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f} M"


# --- backbones ---------------------------------------------------------------------------------

@list_app.command("backbones")
def backbones(
    params: bool = typer.Option(False, "--params", help="Add parameter counts: paper size (100 classes), tiny."),
) -> None:
    """The paper's 20 backbones (Table 1 order), then any others registered."""
    from bocb.backbones import BACKBONES, PAPER_ORDER, build_backbone, load_entry_points

    load_entry_points()
    names = list(PAPER_ORDER) + [n for n in BACKBONES.names() if n not in PAPER_ORDER]
    table = Table("name", "paper name", "era", "input", "recipe", "CIFAR stem")
    if params:  # counting builds every model: torch is imported only then
        import torch

        torch.set_num_threads(1)
        table.add_column("params (paper, 100 cl.)", justify="right")
        table.add_column("params (tiny, 100 cl.)", justify="right")
    for name in names:
        info = BACKBONES.get(name)
        row = [info.name, info.paper_name, info.era, str(info.paper_input_size), info.default_recipe,
               "yes" if info.cifar_stem else ""]
        if params:
            for size, img in (("paper", info.paper_input_size), ("tiny", 32)):
                model = build_backbone(name, size=size, num_classes=100, img_size=img)
                row.append(_millions(sum(p.numel() for p in model.parameters())))
        table.add_row(*row)
    print_table(table)


# --- optimizers (added by the optimizer module) ---------------------------------------------------

def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"  # a user's class without an lr default: the spec gives it


@list_app.command("optimizers")
def optimizers() -> None:
    """Every registered optimizer: paper category (a-d, new, or user), library, class, default lr / wd per family."""
    from bocb.optim import optimizer_table

    table = Table("name", "paper name", "cat.", "source", "class", "classical lr / wd", "modern lr / wd")
    for row in optimizer_table():
        table.add_row(row["name"], row["paper_name"], row["category"], row["source"], row["class"],
                      *(f"{_number(row[f'{f}_lr'])} / {_number(row[f'{f}_wd'])}" for f in ("classical", "modern")))
    print_table(table)


@list_app.command("datasets")
def datasets() -> None:
    """Registered datasets."""
    from bocb.data import DATASETS

    table = Table("name", "classes", "native size", "description")
    for info in DATASETS:
        table.add_row(info.name, str(info.num_classes), str(info.native_size), info.description)
    print_table(table)


@list_app.command("recipes")
def recipes() -> None:
    """Training recipes (Table A3) and their family (sets optimizer defaults)."""
    from bocb.recipes import RECIPES

    table = Table("name", "family", "description")
    for recipe in RECIPES:
        table.add_row(recipe.name, recipe.family, recipe.description)
    print_table(table)
