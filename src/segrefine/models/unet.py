"""The classic U-Net (Ronneberger et al., 2015), with BatchNorm and 'same' padding.

Two deviations from the paper, both standard today: padded convs so the output has the input's
size (the paper used valid convs and overlap-tiling), and BatchNorm after every conv so it
trains from scratch on small data without careful init.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBNReLU, init_weights


class DoubleConv(nn.Sequential):
    """Two 3x3 conv + BatchNorm + ReLU units: the U-Net's unit at every level."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(ConvBNReLU(in_ch, out_ch), ConvBNReLU(out_ch, out_ch))


class Up(nn.Module):
    """2x2 up-convolution halving channels, concat with the skip, then a DoubleConv."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, out_ch, 2, stride=2)
        self.conv = DoubleConv(2 * out_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        # Max-pooling floors odd sizes, so the upsampled map can be a pixel short: pad it.
        dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        if dh or dw:
            x = F.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """U-Net with ``depth`` max-pool downsamplings; level ``i`` has ``width * 2**i`` channels.

    Maps ``B x in_channels x H x W`` to logits ``B x num_classes x H x W`` for any
    ``H, W >= 2**depth``; the paper's network is ``width=64, depth=4``.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 2, width: int = 16, depth: int = 4):
        super().__init__()
        chans = [width * 2**i for i in range(depth + 1)]
        self.inc = DoubleConv(in_channels, chans[0])
        self.downs = nn.ModuleList(DoubleConv(chans[i], chans[i + 1]) for i in range(depth))
        self.ups = nn.ModuleList(Up(chans[i + 1], chans[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(chans[0], num_classes, 1)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inc(x)
        skips = []
        for down in self.downs:
            skips.append(x)
            x = down(F.max_pool2d(x, 2))
        for up, skip in zip(self.ups, reversed(skips), strict=True):
            x = up(x, skip)
        return self.head(x)
