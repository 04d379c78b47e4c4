"""The backbone zoo: every registered backbone, tiny training steps, paper-size counts, CIFAR stems."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from bocb.backbones import (
    BACKBONES,
    PAPER_ORDER,
    build_backbone,
    get_backbone,
    input_size,
    resolve_backbone_name,
)
from bocb.errors import SpecError
from bocb.recipes import RECIPES

torch.set_num_threads(1)
TABLE1 = Path("/work/shared/paper/table1_cifar100_top1.csv")
USER_FACTORY = "own_backbone_factory:small_cnn"


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_holds_the_papers_20_in_table1_order() -> None:
    assert len(PAPER_ORDER) == 20
    assert set(PAPER_ORDER) <= set(BACKBONES.names())
    columns = [get_backbone(name).column for name in PAPER_ORDER]
    if TABLE1.exists():
        with TABLE1.open() as f:
            assert columns == next(csv.reader(f))[1:]


def test_the_catalogue_and_the_models_name_the_same_backbones() -> None:
    """The registry's zoo entries come from bocb.backbones._catalogue (no torch), their models from
    bocb.backbones._zoo.FACTORIES, by name: the two lists must not drift apart."""
    from bocb.backbones._zoo import FACTORIES

    catalogued = [info.name for info in BACKBONES if info.build.__module__ == "bocb.backbones._catalogue"]
    assert sorted(catalogued) == sorted(FACTORIES) == sorted(PAPER_ORDER)


@pytest.mark.parametrize("name", PAPER_ORDER)
def test_metadata_is_complete(name: str) -> None:
    info = get_backbone(name)
    assert info.era in ("primary CNN", "classical CNN", "modern DNN")
    assert info.default_recipe in RECIPES
    assert info.paper_input_size == (32 if info.cifar_stem else 224)
    assert all((info.stage_design, info.block_design, info.token_mixer, info.residual))


@pytest.mark.parametrize("name", PAPER_ORDER)
def test_tiny_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    for img in sorted({16, 32, input_size(name, "tiny", None)}):
        model = build_backbone(name, size="tiny", num_classes=7, img_size=img)
        out = model(torch.randn(3, 3, img, img))
        assert out.shape == (3, 7)
        out.logsumexp(dim=1).sum().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
    assert n_params(build_backbone(name, size="tiny", num_classes=100, img_size=32)) <= 2_000_000


# Side of the feature map after the stem and after each stage for a 32x32 input (docs/backbones.md)
CIFAR_STEM_SIDES = {
    "resnet50": (["act1", "layer1", "layer2", "layer3", "layer4"], [32, 32, 16, 8, 4]),
    "densenet121": (["features.conv0", "features.denseblock1", "features.denseblock2", "features.denseblock3",
                     "features.denseblock4"], [32, 32, 16, 8, 4]),
    "convnext_t": (["stem", "stages.0", "stages.1", "stages.2", "stages.3"], [32, 32, 16, 8, 4]),
    "convnextv2_t": (["stem", "stages.0", "stages.1", "stages.2", "stages.3"], [32, 32, 16, 8, 4]),
    "moganet_s": (["stem", "stages.0", "stages.1", "stages.2", "stages.3"], [32, 32, 16, 8, 4]),
}


@pytest.mark.parametrize("name", sorted(CIFAR_STEM_SIDES))
def test_cifar_stem_feature_map_sizes(name: str) -> None:
    assert get_backbone(name).cifar_stem
    paths, expected = CIFAR_STEM_SIDES[name]
    model = build_backbone(name, size="paper", num_classes=100, img_size=32).eval()
    sides: dict[str, int] = {}
    modules = dict(model.named_modules())
    for path in paths:
        modules[path].register_forward_hook(lambda m, i, o, path=path: sides.__setitem__(path, o.shape[-1]))
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 100)
    assert [sides[p] for p in paths] == expected


def test_input_size() -> None:
    assert input_size("resnet50", "paper", None) == 32
    assert input_size("DeiT-S", "paper", None) == 224
    assert input_size("deit_s", "tiny", None) == 32
    assert input_size("deit_s", "paper", 64) == 64
    with pytest.raises(SpecError, match="size"):
        input_size("deit_s", "huge", None)


def test_aliases_and_table_columns_resolve() -> None:
    assert resolve_backbone_name("R-50") == "resnet50"
    assert resolve_backbone_name("CNXV2-T") == "convnextv2_t"
    assert resolve_backbone_name("VGG-13") == "vgg13_bn"


def test_unknown_name_is_a_one_line_spec_error_with_the_closest_match() -> None:
    with pytest.raises(SpecError) as exc:
        resolve_backbone_name("convnex_t")
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith("backbones: unknown backbone 'convnex_t'; did you mean 'convnext_t'?")
    assert "caformer_s12" in message


@pytest.mark.parametrize("bad", ["own_backbone_factory:missing", "no_such_module_xyz:f",
                                 "own_backbone_factory:NOT_CALLABLE"])
def test_bad_user_factory_is_a_spec_error(bad: str) -> None:
    with pytest.raises(SpecError, match="^backbones: "):
        resolve_backbone_name(bad)


def digits_batch(n: int = 128, side: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    digits = load_digits()
    x = torch.tensor(digits.images[:n], dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=side, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    return x, torch.tensor(digits.target[:n])


def test_user_factory_trains() -> None:
    assert resolve_backbone_name(USER_FACTORY) == USER_FACTORY
    assert input_size(USER_FACTORY, "tiny", None) == 32
    torch.manual_seed(0)
    model = build_backbone(USER_FACTORY, num_classes=10, img_size=16)
    x, y = digits_batch()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(2.30, abs=0.1)  # ln(10) at initialisation
    assert losses[-1] < 0.85 * losses[0]
    assert losses[-1] < min(losses[:5])


def test_entry_point_backbone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a fake installed distribution publishing one backbone in the 'bocb.backbones' group
    dist = tmp_path / "fake_bocb_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-bocb-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[bocb.backbones]\nplugin_cnn = {USER_FACTORY}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(BACKBONES, "_entries", dict(BACKBONES._entries))
    assert "plugin_cnn" in BACKBONES.names()  # listed before it is loaded
    assert resolve_backbone_name("Plugin-CNN") == "plugin_cnn"
    assert get_backbone("plugin_cnn").era == "user"
    model = build_backbone("plugin_cnn", num_classes=4, img_size=16)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 4)
    assert "own_backbone_factory" in sys.modules


def test_cli_lists_the_20_backbones() -> None:
    from typer.testing import CliRunner

    from bocb.cli import listing  # noqa: F401  (registers `list`)
    from bocb.cli._app import app

    result = CliRunner().invoke(app, ["list", "backbones"])
    assert result.exit_code == 0, result.output
    for name in PAPER_ORDER:
        assert name in result.output
    assert "primary CNN" in result.output and "224" in result.output
