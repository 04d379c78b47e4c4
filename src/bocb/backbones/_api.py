"""The backbone registry: metadata (Table A1) plus a builder per backbone.

Besides the registered zoo, a name may be a user's factory ``package.module:factory``
or an entry point of the group ``bocb.backbones`` (see docs/own-backbone.md).
Torch is imported by the builders, not here: a spec's names are checked without it.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from bocb.errors import SpecError
from bocb.plugins import ENTRY_POINT_GROUPS, run_user_code
from bocb.registry import Registry

if TYPE_CHECKING:
    from torch import nn

SIZES = ("paper", "tiny")
TINY_INPUT_SIZE = 32


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    paper_name: str
    column: str
    era: str
    stage_design: str
    block_design: str
    token_mixer: str
    residual: str
    default_recipe: str
    paper_input_size: int
    cifar_stem: bool
    build: Callable[..., nn.Module]


BACKBONES: Registry[BackboneInfo] = Registry("backbone")


def register_backbone(info: BackboneInfo, aliases: tuple[str, ...] = ()) -> BackboneInfo:
    """Add ``info`` to the registry (``aliases`` resolve to its name)."""
    return BACKBONES.register(info, aliases)


def _call_factory(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """A ``build`` that calls a user factory with the keywords it declares."""
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())

    def build(size: str = "tiny", *, num_classes: int, img_size: int, in_chans: int = 3,
              drop_path_rate: float = 0.0) -> nn.Module:
        # num_classes and img_size always; the optional ones only where the factory names them
        kwargs = {"num_classes": num_classes, "img_size": img_size}
        for key, value in (("in_chans", in_chans), ("drop_path_rate", drop_path_rate)):
            if takes_any or key in params:
                kwargs[key] = value
        return factory(**kwargs)

    return build


def _user_info(name: str, factory: Callable[..., nn.Module]) -> BackboneInfo:
    return BackboneInfo(
        name=name, paper_name=getattr(factory, "__name__", name), column=name, era="user",
        stage_design="user", block_design="user", token_mixer="user", residual="user",
        default_recipe="torch", paper_input_size=TINY_INPUT_SIZE, cifar_stem=False,
        build=_call_factory(factory),
    )


def _plugin_info(name: str, obj: object, field: str) -> BackboneInfo:
    """A plugin (a 'module:factory' reference or an entry point of ``bocb.backbones``) as the entry ``name``:
    a :class:`BackboneInfo` as it is, or a factory ``(num_classes, img_size) -> nn.Module``."""
    if isinstance(obj, BackboneInfo):
        return replace(obj, name=name)
    if not callable(obj):
        raise SpecError(field, f"backbone factory '{name}' is not callable")
    return _user_info(name, obj)


BACKBONES.accept_plugins(ENTRY_POINT_GROUPS["backbone"], "backbone factory", _plugin_info)


def load_entry_points() -> None:
    """Register the backbones that installed packages publish in the group ``bocb.backbones``."""
    BACKBONES.load_entry_points()


def get_backbone(name: str, field: str = "backbones") -> BackboneInfo:
    """The metadata and builder of ``name`` (registered name, alias, entry point or 'module:factory')."""
    return BACKBONES.get(name, field=field)


def resolve_backbone_name(name: str, field: str = "backbones") -> str:
    """Canonical name of ``name``; a one-line SpecError naming the closest match if unknown."""
    return get_backbone(name, field).name


def _check_size(size: str) -> None:
    if size not in SIZES:
        raise SpecError("size", f"unknown size '{size}'; valid choices: {', '.join(SIZES)}")


def build_backbone(name: str, *, size: str = "tiny", num_classes: int, img_size: int,
                   in_chans: int = 3, drop_path_rate: float = 0.0) -> nn.Module:
    """A freshly initialised backbone with a ``num_classes`` head for ``img_size`` input."""
    _check_size(size)
    info = get_backbone(name)
    return info.build(size, num_classes=num_classes, img_size=img_size, in_chans=in_chans,
                      drop_path_rate=drop_path_rate)


def classifier(model: nn.Module) -> nn.Module:
    """The model's classifier: timm's ``get_classifier()``, else its last Linear (what a new task replaces)."""
    from torch import nn

    if callable(getattr(model, "get_classifier", None)):
        return model.get_classifier()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has neither get_classifier() nor a Linear layer")
    return linears[-1]


def check_user_backbone(name: str, size: str, num_classes: int, img_size: int, in_chans: int, field: str) -> None:
    """Build a user's backbone once on the CPU and run one batch through it: a one-line SpecError unless the
    factory takes bocb's arguments and returns a torch.nn.Module giving ``num_classes`` logits, so that no
    trial is planned that must crash. Registered backbones are bocb's own and tested: not built here."""
    import torch
    from torch import nn

    if get_backbone(name).era != "user":
        return
    model = run_user_code(
        lambda: build_backbone(name, size=size, num_classes=num_classes, img_size=img_size, in_chans=in_chans),
        field, f"backbone factory '{name}' fails when bocb builds it")
    if not isinstance(model, nn.Module):
        raise SpecError(field, f"backbone factory '{name}' returned {type(model).__name__}, not a torch.nn.Module")

    def one_batch() -> Any:
        with torch.no_grad():
            return model.eval()(torch.zeros(2, in_chans, img_size, img_size))

    logits = run_user_code(one_batch, field,
                           f"backbone '{name}' fails on a batch of {in_chans}x{img_size}x{img_size} images")
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (2, num_classes):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise SpecError(field, f"backbone '{name}' gives {shape} for 2 images, not (2, {num_classes}) logits")


def input_size(name: str, size: str, requested: int | None) -> int:
    """The image side the data layer must deliver to ``name`` at ``size``."""
    _check_size(size)
    if requested is not None:
        return requested
    return get_backbone(name).paper_input_size if size == "paper" else TINY_INPUT_SIZE
