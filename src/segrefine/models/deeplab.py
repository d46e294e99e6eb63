"""DeepLabv3+-style segmenter (Chen et al., 2018) on a small residual backbone.

Backbone (stride, then dilation, to output stride 8) -> ASPP (1x1 + three atrous 3x3 + image
pooling) -> decoder that fuses the stride-4 backbone features -> bilinear upsample to input.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ConvBNReLU, PooledBranch, ResNetBackbone, init_weights, upsample_to

# The paper uses rates (6, 12, 18) at output stride 16 on 513px crops, i.e. on 33x33 maps: the
# largest 3x3 atrous kernel spans about the whole map, the others ~1/3 and ~2/3 of it. Our
# 128px inputs at output stride 8 give 16x16 maps, about half as wide, so we halve the rates
# to keep the same fields of view relative to the map (larger rates would mostly sample padding).
ASPP_RATES = (3, 6, 9)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: parallel 1x1, atrous 3x3 and image-pooling branches,
    concatenated and projected to ``out_ch`` by a 1x1 conv. Keeps the spatial size."""

    def __init__(self, in_ch: int, out_ch: int, rates: tuple[int, ...] = ASPP_RATES):
        super().__init__()
        atrous = [ConvBNReLU(in_ch, out_ch, 3, dilation=r) for r in rates]
        self.branches = nn.ModuleList([ConvBNReLU(in_ch, out_ch, 1), *atrous])
        # Image-level features; GroupNorm inside (BatchNorm on a 1x1 map breaks at batch 1).
        self.pool = PooledBranch(in_ch, out_ch, bins=1)
        self.project = ConvBNReLU((len(rates) + 2) * out_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches] + [self.pool(x)]
        return self.project(torch.cat(outs, dim=1))


class DeepLabV3Plus(nn.Module):
    """DeepLabv3+ with a ``depth``-stage residual backbone of base width ``width``.

    Maps ``B x in_channels x H x W`` to logits ``B x num_classes x H x W`` for any
    ``H, W >= 2**min(depth, 3)``. Needs ``depth >= 2`` (the decoder uses stage 2, stride 4).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        width: int = 16,
        depth: int = 4,
        output_stride: int = 8,
        rates: tuple[int, ...] = ASPP_RATES,
    ):
        super().__init__()
        if depth < 2:
            raise ValueError(f"deeplabv3plus needs depth >= 2 (stride-4 features), got {depth}")
        self.backbone = ResNetBackbone(in_channels, width, depth, output_stride)
        top = self.backbone.channels[-1]
        # The paper's ratios, scaled down: ASPP 256 ch on a 2048-ch backbone (we use half of
        # the top width, since ours is narrow), low-level projection 48 ch (~1/5 of ASPP).
        aspp_ch = max(top // 2, 8)
        low_ch = max(aspp_ch // 4, 4)
        self.aspp = ASPP(top, aspp_ch, rates)
        self.low_proj = ConvBNReLU(self.backbone.channels[1], low_ch, 1)
        self.decoder = nn.Sequential(
            ConvBNReLU(aspp_ch + low_ch, aspp_ch), ConvBNReLU(aspp_ch, aspp_ch)
        )
        self.classifier = nn.Conv2d(aspp_ch, num_classes, 1)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        feats = self.backbone(x)
        low = self.low_proj(feats[1])
        high = upsample_to(self.aspp(feats[-1]), low)
        out = self.classifier(self.decoder(torch.cat([high, low], dim=1)))
        return upsample_to(out, size)
