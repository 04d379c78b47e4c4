"""The paper's 20 backbones: paper size (timm / torchvision) and a tiny size each.

Metadata follows the paper's Table A1 (era, stage-wise and block-wise design,
token mixer, residual, input size, training recipe). Tiny variants keep each
family's block design at reduced width and depth (<= ~2 M parameters) and run
at 16-32 px; see docs/backbones.md.
"""
from __future__ import annotations

from collections.abc import Callable

import timm
from timm.layers import ClassifierHead
from timm.models.byobnet import ByobNet, ByoBlockCfg, ByoModelCfg
from timm.models.convnext import ConvNeXt
from timm.models.densenet import DenseNet
from timm.models.metaformer import Attention, MetaFormer, Pooling, SepConv
from timm.models.mlp_mixer import MlpMixer
from timm.models.resnet import Bottleneck, ResNet
from timm.models.swin_transformer import SwinTransformer
from timm.models.vgg import VGG, ConvMlp
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from bocb.backbones import _stems
from bocb.backbones._api import BackboneInfo, register_backbone

# (num_classes, img_size, in_chans, drop_path_rate) -> model
Factory = Callable[[int, int, int, float], nn.Module]

PRIMARY, CLASSICAL, MODERN = "primary CNN", "classical CNN", "modern DNN"


def _sized(paper: Factory, tiny: Factory) -> Callable[..., nn.Module]:
    def build(size: str = "tiny", *, num_classes: int, img_size: int, in_chans: int = 3,
              drop_path_rate: float = 0.0) -> nn.Module:
        factory = paper if size == "paper" else tiny
        return factory(num_classes, img_size, in_chans, drop_path_rate)

    return build


def _add(name: str, paper_name: str, column: str, era: str, design: tuple[str, str, str, str],
         recipe: str, paper_input: int, paper: Factory, tiny: Factory, *, cifar_stem: bool = False,
         aliases: tuple[str, ...] = ()) -> None:
    stage, block, mixer, residual = design
    register_backbone(BackboneInfo(
        name=name, paper_name=paper_name, column=column, era=era, stage_design=stage, block_design=block,
        token_mixer=mixer, residual=residual, default_recipe=recipe, paper_input_size=paper_input,
        cifar_stem=cifar_stem, build=_sized(paper, tiny),
    ), aliases=aliases)


def _timm(arch: str, num_classes: int, in_chans: int, **kwargs: object) -> nn.Module:
    return timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


def tiny_patch(img_size: int) -> int:
    """Patch side giving an ~8x8 token grid: 2 at 16 px, 4 at 32 px (tiny ViT-likes)."""
    return max(2, img_size // 8)


# --- VGG-13-BN ---------------------------------------------------------------------------------

def _vgg13_paper(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    return _timm("vgg13_bn", nc, ch)


def _vgg13_tiny(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    # VGG-13's 2-conv stages (BN), four of them so 16 px survives the pools; the 4096-wide
    # fc6/fc7 ConvMlp shrinks to 256 (timm's VGG fixes it at 4096).
    cfg = [16, 16, "M", 32, 32, "M", 64, 64, "M", 128, 128, "M"]
    model = VGG(cfg, num_classes=nc, in_chans=ch, norm_layer=nn.BatchNorm2d)
    model.head_hidden_size = 256
    model.pre_logits = ConvMlp(128, 256, kernel_size=1, drop_rate=0.0)
    model.head = ClassifierHead(256, nc, pool_type="avg")
    return model


# --- ResNet-50 ---------------------------------------------------------------------------------

def _resnet50_paper(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    return _stems.cifar_resnet(_timm("resnet50", nc, ch, drop_path_rate=dpr))


def _resnet50_tiny(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    model = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=nc, in_chans=ch, stem_width=16,
                   channels=(16, 32, 64, 128), drop_path_rate=dpr)
    return _stems.cifar_resnet(model)


# --- DeiT-S ------------------------------------------------------------------------------------

def _deit_paper(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    return _timm("deit_small_patch16_224", nc, ch, img_size=img, drop_path_rate=dpr)


def _deit_tiny(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    return VisionTransformer(img_size=img, patch_size=tiny_patch(img), in_chans=ch, num_classes=nc,
                             embed_dim=96, depth=4, num_heads=3, dynamic_img_pad=True, drop_path_rate=dpr)


# --- ConvNeXt-T --------------------------------------------------------------------------------

def _convnext_paper(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    return _stems.cifar_convnext(_timm("convnext_tiny", nc, ch, drop_path_rate=dpr))


def _convnext_tiny(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    model = ConvNeXt(in_chans=ch, num_classes=nc, depths=(1, 1, 2, 1), dims=(32, 64, 128, 256),
                     drop_path_rate=dpr)
    return _stems.cifar_convnext(model)


_add("vgg13_bn", "VGG-13-BN", "VGG-13", PRIMARY,
     ("hierarchical", "plain (2-3 conv + pool)", "conv 3x3", "none"),
     "torch", 224, _vgg13_paper, _vgg13_tiny, aliases=("vgg13", "vgg_13"))
_add("resnet50", "ResNet-50", "R-50", CLASSICAL,
     ("hierarchical", "bottleneck", "conv 3x3", "residual"),
     "torch", 32, _resnet50_paper, _resnet50_tiny, cifar_stem=True, aliases=("r_50", "r50", "resnet_50"))
_add("deit_s", "DeiT-S", "DeiT-S", MODERN,
     ("isotropic", "MetaFormer", "attention", "residual"),
     "deit", 224, _deit_paper, _deit_tiny, aliases=("deit_small", "deit"))
_add("convnext_t", "ConvNeXt-T", "CNX-T", MODERN,
     ("hierarchical", "MetaNeXt (inverted bottleneck)", "depth-wise conv 7x7", "residual + layer scale"),
     "convnext", 32, _convnext_paper, _convnext_tiny, cifar_stem=True, aliases=("cnx_t", "convnext_tiny"))
