"""Building blocks shared by the segmenters: conv units, residual backbone, pooled branches.

Everything here is plain ``torch.nn`` so the models train from scratch with no downloads.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Sequential):
    """``kernel x kernel`` conv (no bias, BatchNorm follows) -> BatchNorm -> ReLU.

    Padding keeps the spatial size (divided by ``stride``) for any dilation.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 3,
        stride: int = 1,
        dilation: int = 1,
    ):
        padding = dilation * (kernel - 1) // 2
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


def fuse_for_inference(module: nn.Module) -> nn.Module:
    """A copy of ``module`` for inference only: each :class:`ConvBNReLU`'s BatchNorm (its
    running statistics) folded into the convolution before it, one pass over the map fewer
    (the same numbers to rounding). The original keeps its layout, for training and saving."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fast = copy.deepcopy(module).eval()
    for m in fast.modules():
        if isinstance(m, ConvBNReLU) and isinstance(m[1], nn.BatchNorm2d):
            m[0], m[1] = fuse_conv_bn_eval(m[0], m[1]), nn.Identity()
    return fast


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs plus a shortcut, output ``out_ch`` at ``stride``."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = ConvBNReLU(in_ch, out_ch, 3, stride, dilation)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            # 1x1 projection so the residual sum has matching shape (ResNet "option B").
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.conv1(x)))
        return F.relu(out + self.shortcut(x))


class ResNetBackbone(nn.Module):
    """Small ResNet-18-like encoder returning one feature map per stage.

    A full-resolution 3x3 stem (``width`` channels) is followed by ``depth`` stages of
    ``blocks`` basic blocks; stage ``i`` has ``width * 2**i`` channels and nominal stride
    ``2**(i+1)``. Once the stride reaches ``output_stride`` later stages keep the resolution
    and dilate instead (DeepLab's atrous trick), so the last map has stride
    ``min(2**depth, output_stride)``. ``forward`` returns the list of stage outputs.
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        depth: int,
        output_stride: int = 8,
        blocks: int = 2,
    ):
        super().__init__()
        # A stride-1 stem (not ResNet's 7x7/2 + maxpool) because our inputs are only ~128px.
        self.stem = ConvBNReLU(in_channels, width, 3)
        self.channels = [width * 2**i for i in range(depth)]
        self.strides: list[int] = []
        stages, in_ch, stride, dilation = [], width, 1, 1
        for out_ch in self.channels:
            if stride * 2 <= output_stride:
                stride, step = stride * 2, 2
            else:
                dilation, step = dilation * 2, 1
            layers = [BasicBlock(in_ch, out_ch, step, dilation)]
            layers += [BasicBlock(out_ch, out_ch, 1, dilation) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            self.strides.append(stride)
            in_ch = out_ch
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def _num_groups(channels: int) -> int:
    """Largest group count in (8, 4, 2) leaving >= 2 channels per group, else 1."""
    for groups in (8, 4, 2):
        if channels % groups == 0 and channels // groups >= 2:
            return groups
    return 1


class PooledBranch(nn.Module):
    """Average-pool to ``bins x bins``, 1x1 conv + GroupNorm + ReLU, upsample back.

    GroupNorm rather than BatchNorm because a 1x1 pooled map with batch size 1 gives
    BatchNorm a single value per channel (an error in train mode, noisy statistics otherwise).
    """

    def __init__(self, in_ch: int, out_ch: int, bins: int):
        super().__init__()
        self.bins = bins
        self.conv = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.norm = nn.GroupNorm(_num_groups(out_ch), out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm(self.conv(adaptive_avg_pool(x, self.bins))))
        return upsample_to(y, x)


def adaptive_avg_pool(x: torch.Tensor, bins: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, bins)`` from running sums: bin i of n rows spans
    [floor(i n / bins), ceil((i + 1) n / bins)), as PyTorch's. Why not the built-in: exported
    to ONNX with a dynamic input size, it becomes a gather of the example size's indices (wrong
    for any other size); these index sums follow the size (tests/test_onnx.py)."""
    for dim in (-2, -1):
        n = x.shape[dim]
        i = torch.arange(bins, device=x.device)
        start, end = (i * n) // bins, ((i + 1) * n + bins - 1) // bins
        sums = F.pad(x.cumsum(dim), (0, 0, 1, 0) if dim == -2 else (1, 0))
        total = sums.index_select(dim, end) - sums.index_select(dim, start)
        shape = (-1, 1) if dim == -2 else (-1,)
        x = total / (end - start).to(x.dtype).view(shape)
    return x


def upsample_to(x: torch.Tensor, ref: torch.Tensor | tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize ``x`` to the spatial size of ``ref`` (a tensor or an ``(H, W)``)."""
    size = tuple(ref.shape[-2:]) if isinstance(ref, torch.Tensor) else tuple(ref)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def init_weights(model: nn.Module) -> None:
    """He-normal init for convs (suits ReLU nets trained from scratch); norms to identity."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
