"""The paper's 20 backbones as the registry holds them: Table A1's metadata (era, stage-wise and block-wise
design, token mixer, residual, input size, training recipe), names and aliases, without torch.

Each entry's builder imports the models (:data:`bocb.backbones._zoo.FACTORIES`: timm, torchvision, torch) on
its first build, so checking a spec's names or listing the zoo takes milliseconds, not the seconds those
imports cost.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bocb.backbones._api import BackboneInfo, register_backbone

if TYPE_CHECKING:
    from torch import nn

PRIMARY, CLASSICAL, MODERN = "primary CNN", "classical CNN", "modern DNN"


def _zoo_build(name: str) -> Callable[..., nn.Module]:
    """The ``build`` of the zoo's backbone ``name``: its paper or tiny factory, imported on the first call."""
    def build(size: str = "tiny", *, num_classes: int, img_size: int, in_chans: int = 3,
              drop_path_rate: float = 0.0) -> nn.Module:
        from bocb.backbones._zoo import FACTORIES

        paper, tiny = FACTORIES[name]
        factory = paper if size == "paper" else tiny
        return factory(num_classes, img_size, in_chans, drop_path_rate)

    return build


def _add(name: str, paper_name: str, column: str, era: str, design: tuple[str, str, str, str],
         recipe: str, paper_input: int, *, cifar_stem: bool = False, aliases: tuple[str, ...] = ()) -> None:
    stage, block, mixer, residual = design
    register_backbone(BackboneInfo(
        name=name, paper_name=paper_name, column=column, era=era, stage_design=stage, block_design=block,
        token_mixer=mixer, residual=residual, default_recipe=recipe, paper_input_size=paper_input,
        cifar_stem=cifar_stem, build=_zoo_build(name),
    ), aliases=aliases)


_add("vgg13_bn", "VGG-13-BN", "VGG-13", PRIMARY,
     ("hierarchical", "plain (2-3 conv + pool)", "conv 3x3", "none"),
     "torch", 224, aliases=("vgg13", "vgg_13"))
_add("resnet50", "ResNet-50", "R-50", CLASSICAL,
     ("hierarchical", "bottleneck", "conv 3x3", "residual"),
     "torch", 32, cifar_stem=True, aliases=("r_50", "r50", "resnet_50"))
_add("deit_s", "DeiT-S", "DeiT-S", MODERN,
     ("isotropic", "MetaFormer", "attention", "residual"),
     "deit", 224, aliases=("deit_small", "deit"))
_add("convnext_t", "ConvNeXt-T", "CNX-T", MODERN,
     ("hierarchical", "MetaNeXt (inverted bottleneck)", "depth-wise conv 7x7", "residual + layer scale"),
     "convnext", 32, cifar_stem=True, aliases=("cnx_t", "convnext_tiny"))
_add("alexnet", "AlexNet", "AlexNet", PRIMARY,
     ("hierarchical", "plain (conv + pool)", "conv 11x11 / 5x5 / 3x3", "none"),
     "torch", 224)
_add("densenet121", "DenseNet-121", "DN-121", CLASSICAL,
     ("hierarchical", "dense block (bottleneck)", "conv 3x3", "dense (concatenation)"),
     "torch", 32, cifar_stem=True, aliases=("dn_121", "densenet_121"))
_add("mobilenetv2", "MobileNetV2", "MobV2", CLASSICAL,
     ("hierarchical", "inverted bottleneck", "depth-wise conv 3x3", "residual"),
     "torch", 224, aliases=("mobv2", "mobilenet_v2", "mobilenetv2_100"))
_add("efficientnet_b0", "EfficientNet-B0", "Eff-B0", CLASSICAL,
     ("hierarchical", "inverted bottleneck + SE (MBConv)", "depth-wise conv 3x3 / 5x5", "residual"),
     "rsb_a2", 224, aliases=("eff_b0", "effnet_b0"))
_add("repvgg_a1", "RepVGG-A1", "RVGG-A1", CLASSICAL,
     ("hierarchical", "re-parameterised plain (3x3 + 1x1 + identity)", "conv 3x3", "re-parameterised branch"),
     "torch", 224, aliases=("rvgg_a1",))
_add("mlp_mixer_s", "MLP-Mixer-S", "MLP-S", MODERN,
     ("isotropic", "MetaFormer", "token-mixing MLP", "residual"),
     "deit", 224, aliases=("mlp_s", "mixer_s", "mixer_s16"))
_add("swin_t", "Swin-T", "Swin-T", MODERN,
     ("hierarchical", "MetaFormer", "shifted-window attention", "residual"),
     "convnext", 224, aliases=("swin_tiny",))
_add("convnextv2_t", "ConvNeXtV2-T", "CNXV2-T", MODERN,
     ("hierarchical", "MetaNeXt (inverted bottleneck + GRN)", "depth-wise conv 7x7", "residual"),
     "convnext", 32, cifar_stem=True, aliases=("cnxv2_t", "convnextv2_tiny"))
_add("moganet_s", "MogaNet-S", "Moga-S", MODERN,
     ("hierarchical", "MetaFormer", "multi-order gated depth-wise conv", "residual + layer scale"),
     "convnext", 32, cifar_stem=True, aliases=("moga_s", "moganet_small"))
_add("unireplknet_t", "UniRepLKNet-T", "URLK-T", MODERN,
     ("hierarchical", "MetaNeXt (large-kernel + SE + GRN)", "dilated large-kernel depth-wise conv 13x13",
      "residual + layer scale"),
     "convnext", 224, aliases=("urlk_t", "unireplknet_tiny"))
_add("transnext_t", "TransNeXt-T", "TNX-T", MODERN,
     ("hierarchical", "MetaFormer (convolutional GLU)", "aggregated (pixel-focused) attention", "residual"),
     "deit", 224, aliases=("tnx_t", "transnext_tiny"))

# The MetaFormer baselines (Yu et al. 2024): one design and recipe, five token mixers
for _name, _paper_name, _column, _mixer, _aliases in (
    ("identityformer_s12", "IdentityFormer-S12", "IF-12", "identity", ("if_12", "if_s12")),
    ("poolformerv2_s12", "PoolFormerV2-S12", "PFV2-12", "pooling", ("pfv2_12", "pfv2_s12")),
    ("convformer_s12", "ConvFormer-S12", "CF-12", "separable conv 7x7", ("cf_12", "cf_s12")),
    ("attentionformer_s12", "AttentionFormer-S12", "AF-12", "attention", ("af_12", "af_s12")),
    ("caformer_s12", "CAFormer-S12", "CAF-12", "separable conv (stages 1-2) + attention (3-4)", ("caf_12", "caf_s12")),
):
    _add(_name, _paper_name, _column, MODERN, ("hierarchical", "MetaFormer", _mixer, "residual + res scale"),
         "rsb_a2", 224, aliases=_aliases)

# Table 1's column order (the order reports and `bocb list backbones` use)
PAPER_ORDER = (
    "alexnet", "vgg13_bn", "resnet50", "densenet121", "mobilenetv2", "efficientnet_b0", "repvgg_a1", "deit_s",
    "mlp_mixer_s", "swin_t", "convnext_t", "convnextv2_t", "moganet_s", "unireplknet_t", "transnext_t",
    "identityformer_s12", "poolformerv2_s12", "convformer_s12", "attentionformer_s12", "caformer_s12",
)
