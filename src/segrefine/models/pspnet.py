"""PSPNet-style segmenter (Zhao et al., 2017) on the small residual backbone.

Backbone (dilated to output stride 8) -> pyramid pooling module (bins 1, 2, 3, 6), concatenated
with the backbone map -> 3x3 conv head -> 1x1 classifier -> bilinear upsample to input size.
The paper's auxiliary loss head is left out: this backbone is shallow enough to train without.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ConvBNReLU, PooledBranch, ResNetBackbone, init_weights, upsample_to

PSP_BINS = (1, 2, 3, 6)


class PyramidPooling(nn.Module):
    """Concatenate ``x`` with one pooled, 1x1-reduced, upsampled branch per bin size.

    Each branch has ``in_ch // len(bins)`` channels (as in the paper), so the output has
    about ``2 * in_ch`` channels and the input's spatial size.
    """

    def __init__(self, in_ch: int, bins: tuple[int, ...] = PSP_BINS):
        super().__init__()
        branch_ch = max(in_ch // len(bins), 2)
        self.branches = nn.ModuleList(PooledBranch(in_ch, branch_ch, b) for b in bins)
        self.out_channels = in_ch + branch_ch * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x] + [branch(x) for branch in self.branches], dim=1)


class PSPNet(nn.Module):
    """PSPNet with a ``depth``-stage residual backbone of base width ``width``.

    Maps ``B x in_channels x H x W`` to logits ``B x num_classes x H x W`` for any
    ``H, W >= 2**min(depth, 3)``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        width: int = 16,
        depth: int = 4,
        output_stride: int = 8,
        bins: tuple[int, ...] = PSP_BINS,
    ):
        super().__init__()
        self.backbone = ResNetBackbone(in_channels, width, depth, output_stride)
        top = self.backbone.channels[-1]
        self.ppm = PyramidPooling(top, bins)
        # The paper reduces 4096 concatenated channels to 512 (1/8); ours is narrow, so 1/4.
        head_ch = max(self.ppm.out_channels // 4, 8)
        self.head = ConvBNReLU(self.ppm.out_channels, head_ch, 3)
        self.classifier = nn.Conv2d(head_ch, num_classes, 1)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        feats = self.backbone(x)[-1]
        out = self.classifier(self.head(self.ppm(feats)))
        return upsample_to(out, size)
