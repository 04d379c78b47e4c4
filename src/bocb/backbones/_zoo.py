"""The paper's 20 backbones as models: paper size (timm / torchvision) and a tiny size each.

Their metadata (Table A1) and registration are in :mod:`bocb.backbones._catalogue`, which imports this
module on a backbone's first build. Tiny variants keep each family's block design at reduced width and
depth (<= ~2 M parameters) and run at 16-32 px; see docs/backbones.md.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import timm
import torch
import torchvision
from timm.models.byobnet import ByobNet
from timm.models.byobnet import model_cfgs as byob_cfgs
from timm.models.convnext import ConvNeXt
from timm.models.densenet import DenseNet
from timm.models.metaformer import (
    Attention,
    GroupNorm1NoBias,
    LayerNorm2dNoBias,
    LayerNormNoBias,
    MetaFormer,
    SepConv,
)
from timm.models.mlp_mixer import MlpMixer
from timm.models.resnet import Bottleneck, ResNet
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from bocb.backbones import _stems
from bocb.backbones.moganet import MogaNet
from bocb.backbones.transnext import TransNeXt
from bocb.backbones.unireplknet import UniRepLKNet

# (num_classes, img_size, in_chans, drop_path_rate) -> model
Factory = Callable[[int, int, int, float], nn.Module]


def _timm(arch: str, num_classes: int, in_chans: int, **kwargs: object) -> nn.Module:
    return timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


def _fc_head(in_features: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    """AlexNet/VGG's three fully connected layers (dropout before the first two in AlexNet's order)."""
    return nn.Sequential(
        nn.Dropout(dropout), nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
        nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


def tiny_patch(img_size: int) -> int:
    """Patch 4 as CIFAR ViTs use (8x8 tokens at 32 px, 4x4 at 16 px: 3.5x cheaper than patch 2
    on a CPU); 2 below 16 px (tiny ViT-likes)."""
    return 4 if img_size >= 16 else 2


# --- VGG-13-BN ---------------------------------------------------------------------------------

def _vgg13_paper(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    return _timm("vgg13_bn", nc, ch)


class TinyVGG(nn.Module):
    """VGG-13-BN's design (stages of two 3x3 conv-BN-ReLU + max-pool; three FC layers) at 16-32 px.

    Written by hand: timm's VGG always builds the 4096-wide 7x7 fc6 (42 M parameters) even
    for narrow configs. Four stages instead of five so that 16 px input survives the pools.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, widths: tuple[int, ...] = (16, 32, 64, 128),
                 hidden: int = 256, dropout: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_chans
        for width in widths:
            for _ in range(2):
                layers += [nn.Conv2d(prev, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                prev = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = _fc_head(prev, hidden, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _vgg13_tiny(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    return TinyVGG(nc, ch)


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
    model = ConvNeXt(in_chans=ch, num_classes=nc, depths=(1, 1, 2, 1), dims=(16, 32, 64, 128),
                     drop_path_rate=dpr)
    return _stems.cifar_convnext(model)


# --- AlexNet -----------------------------------------------------------------------------------

def _alexnet_paper(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    model = torchvision.models.alexnet(weights=None, num_classes=nc)
    if ch != 3:
        model.features[0] = nn.Conv2d(ch, 64, kernel_size=11, stride=4, padding=2)
    return model


class TinyAlexNet(nn.Module):
    """AlexNet's design (5 conv + ReLU, 3 max-pools, 3 dropout-FC layers) at 16-32 px.

    Written by hand: torchvision's AlexNet fixes its 11x11/4 stem (needs >= 63 px) and widths.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, widths: tuple[int, ...] = (24, 48, 64, 48, 48),
                 hidden: int = 256, dropout: float = 0.5) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = widths
        relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, c1, 3, padding=1), relu(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), relu(), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), relu(),
            nn.Conv2d(c3, c4, 3, padding=1), relu(),
            nn.Conv2d(c4, c5, 3, padding=1), relu(), nn.MaxPool2d(2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = _fc_head(c5 * 4, hidden, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _alexnet_tiny(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    return TinyAlexNet(nc, ch)


# --- DenseNet-121 ------------------------------------------------------------------------------

def _densenet_paper(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    return _stems.cifar_densenet(_timm("densenet121", nc, ch))


def _densenet_tiny(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    return _stems.cifar_densenet(DenseNet(growth_rate=12, block_config=(2, 4, 6, 4), num_classes=nc,
                                          in_chans=ch))


# --- MobileNetV2, EfficientNet-B0 (timm's EfficientNet builder) ---------------------------------

def _mobilenetv2_paper(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    return _timm("mobilenetv2_100", nc, ch, drop_path_rate=dpr)


def _mobilenetv2_tiny(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    model = _timm("mobilenetv2_035", nc, ch, depth_multiplier=0.5, drop_path_rate=dpr)
    return _stems.unstride(model, "conv_stem")


def _efficientnet_paper(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    return _timm("efficientnet_b0", nc, ch, drop_path_rate=dpr)


def _efficientnet_tiny(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    # TinyNet-E: EfficientNet-B0's MBConv+SE blocks at width 0.51, depth 0.6 (Han et al. 2020)
    return _stems.unstride(_timm("tinynet_e", nc, ch, drop_path_rate=dpr), "conv_stem")


# --- RepVGG-A1 ---------------------------------------------------------------------------------

def _repvgg_paper(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    return _timm("repvgg_a1", nc, ch, drop_path_rate=dpr)


def _repvgg_tiny(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    # RepVGG-A1's rep blocks (3x3 + 1x1 + identity branches) at depth 1 per stage, width 1/4;
    # the first stage keeps the resolution so 16 px input still ends on a 1x1 map.
    a1 = byob_cfgs["repvgg_a1"]
    blocks = tuple(dataclasses.replace(b, d=1, c=c, s=s)
                   for b, c, s in zip(a1.blocks, (16, 32, 64, 192), (1, 2, 2, 2)))
    cfg = dataclasses.replace(a1, blocks=blocks, stem_chs=16)
    return ByobNet(cfg, num_classes=nc, in_chans=ch, drop_path_rate=dpr)


# --- MLP-Mixer-S, Swin-T -----------------------------------------------------------------------

def _mixer_paper(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    return _timm("mixer_s16_224", nc, ch, img_size=img, drop_path_rate=dpr)


def _mixer_tiny(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    return MlpMixer(num_classes=nc, img_size=img, in_chans=ch, patch_size=tiny_patch(img), num_blocks=4,
                    embed_dim=96, drop_path_rate=dpr)


def _swin_paper(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    return _timm("swin_tiny_patch4_window7_224", nc, ch, img_size=img, drop_path_rate=dpr)


def _swin_tiny(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    return SwinTransformer(img_size=img, patch_size=2, in_chans=ch, num_classes=nc, embed_dim=32,
                           depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window_size=4, drop_path_rate=dpr)


# --- ConvNeXtV2-T ------------------------------------------------------------------------------

def _convnextv2_paper(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    return _stems.cifar_convnext(_timm("convnextv2_tiny", nc, ch, drop_path_rate=dpr))


def _convnextv2_tiny(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    model = ConvNeXt(in_chans=ch, num_classes=nc, depths=(1, 1, 2, 1), dims=(16, 32, 64, 128),
                     use_grn=True, ls_init_value=None, drop_path_rate=dpr)
    return _stems.cifar_convnext(model)


# --- MogaNet-S, UniRepLKNet-T, TransNeXt-T (written here from their papers) -----------------------

def _moganet_paper(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    return MogaNet(num_classes=nc, in_chans=ch, drop_path_rate=dpr, stem_strides=(1, 1))  # MogaNet-S, CIFAR stem


def _moganet_tiny(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    # stem (1, 2): stage 1 at half resolution; the full CIFAR stem made it 5x slower than tiny ConvNeXt
    return MogaNet(num_classes=nc, in_chans=ch, dims=(32, 64, 128, 192), depths=(1, 1, 2, 1),
                   ffn_ratios=(8, 8, 4, 4), drop_path_rate=dpr, stem_strides=(1, 2))


def _unireplknet_paper(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    return UniRepLKNet(num_classes=nc, in_chans=ch, drop_path_rate=dpr)  # UniRepLKNet-T


def _unireplknet_tiny(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    # UniRepLKNet-T's kernel plan per stage (3 / 13 / 13,3 alternating / 13) at one to three blocks
    return UniRepLKNet(num_classes=nc, in_chans=ch, dims=(24, 48, 96, 192), depths=(1, 1, 3, 1),
                       drop_path_rate=dpr, stem_stride=1)


def _transnext_paper(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    return TransNeXt(num_classes=nc, in_chans=ch, img_size=img, dims=(72, 144, 288, 576),
                     depths=(2, 2, 15, 2), num_heads=(3, 6, 12, 24), mlp_ratios=(8, 8, 4, 4),
                     drop_path_rate=dpr)


def _transnext_tiny(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
    return TransNeXt(num_classes=nc, in_chans=ch, img_size=img, dims=(24, 48, 96, 192), depths=(1, 1, 2, 1),
                     num_heads=(1, 2, 4, 8), mlp_ratios=(8, 8, 4, 4), drop_path_rate=dpr, stem_stride=2)


# --- MetaFormer S12 baselines (Yu et al. 2024) through timm's MetaFormer ----------------------------

S12 = {"depths": (2, 2, 6, 2), "dims": (64, 128, 320, 512)}
TINY_METAFORMER = {"depths": (1, 1, 2, 1), "dims": (32, 64, 128, 192)}
# token mixers, stage norms and head per model, as in the MetaFormer baselines paper
METAFORMERS: dict[str, dict[str, object]] = {
    "identityformer_s12": {"token_mixers": nn.Identity, "norm_layers": GroupNorm1NoBias, "use_mlp_head": False},
    "poolformerv2_s12": {"norm_layers": GroupNorm1NoBias, "use_mlp_head": False},  # Pooling is the default
    "convformer_s12": {"token_mixers": SepConv, "norm_layers": LayerNorm2dNoBias},
    "attentionformer_s12": {"token_mixers": Attention, "norm_layers": LayerNormNoBias},
    "caformer_s12": {"token_mixers": [SepConv, SepConv, Attention, Attention],
                     "norm_layers": [LayerNorm2dNoBias] * 2 + [LayerNormNoBias] * 2},
}


def _metaformer(key: str, tiny: bool) -> Factory:
    def factory(nc: int, img: int, ch: int, dpr: float) -> nn.Module:
        shape = TINY_METAFORMER if tiny else S12
        model = MetaFormer(in_chans=ch, num_classes=nc, drop_path_rate=dpr, **shape, **METAFORMERS[key])
        # tiny: 3x3/2 stem instead of 7x7/4 so 16-32 px keeps 2x2+ maps at the last stage
        return _stems.metaformer_stem(model, stride=2) if tiny else model

    return factory


# The paper and tiny factory of every backbone of bocb.backbones._catalogue, by its name
FACTORIES: dict[str, tuple[Factory, Factory]] = {
    "vgg13_bn": (_vgg13_paper, _vgg13_tiny),
    "resnet50": (_resnet50_paper, _resnet50_tiny),
    "deit_s": (_deit_paper, _deit_tiny),
    "convnext_t": (_convnext_paper, _convnext_tiny),
    "alexnet": (_alexnet_paper, _alexnet_tiny),
    "densenet121": (_densenet_paper, _densenet_tiny),
    "mobilenetv2": (_mobilenetv2_paper, _mobilenetv2_tiny),
    "efficientnet_b0": (_efficientnet_paper, _efficientnet_tiny),
    "repvgg_a1": (_repvgg_paper, _repvgg_tiny),
    "mlp_mixer_s": (_mixer_paper, _mixer_tiny),
    "swin_t": (_swin_paper, _swin_tiny),
    "convnextv2_t": (_convnextv2_paper, _convnextv2_tiny),
    "moganet_s": (_moganet_paper, _moganet_tiny),
    "unireplknet_t": (_unireplknet_paper, _unireplknet_tiny),
    "transnext_t": (_transnext_paper, _transnext_tiny),
    **{name: (_metaformer(name, tiny=False), _metaformer(name, tiny=True)) for name in METAFORMERS},
}
