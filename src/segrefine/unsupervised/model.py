"""The clustering network and its loss terms (Kim, Kanezaki & Tanaka, IEEE TIP 2020).

A small fully convolutional network maps every pixel to a D-dimensional response; a pixel's
cluster is the argmax of its response. The clusters are the axes of the response space, and the
final BatchNorm keeps all axes in use, so training on the image itself (targets = the network's
own argmax) groups similar pixels without any labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ClusterNet", "continuity_loss", "similarity_loss", "scribble_loss"]


class ClusterNet(nn.Module):
    """``n_conv`` blocks of 3x3 conv -> ReLU -> BatchNorm, then 1x1 conv -> BatchNorm.

    Input (B, C_in, H, W) -> response (B, channels, H, W) at the same size. ``channels`` is D,
    the largest number of clusters the network can express.
    """

    def __init__(
        self, in_channels: int = 3, channels: int = 100, n_conv: int = 2, width: int | None = None
    ):
        super().__init__()
        width = width or channels
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(n_conv):
            layers += [
                nn.Conv2d(c, width, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.BatchNorm2d(width),
            ]
            c = width
        layers += [nn.Conv2d(c, channels, 1), nn.BatchNorm2d(channels)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def similarity_loss(
    response: torch.Tensor, target: torch.Tensor | None = None, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of the response (B, D, H, W) towards ``target`` (B, H, W).

    With no target, the target is the response's own argmax (the paper's feature-similarity
    term). ``weight`` (B, H, W) weights pixels; the result is the weighted mean.
    """
    if target is None:
        target = response.argmax(dim=1)
    ce = F.cross_entropy(response, target, reduction="none")
    if weight is None:
        return ce.mean()
    return (ce * weight).sum() / weight.sum().clamp_min(1e-12)


def continuity_loss(response: torch.Tensor) -> torch.Tensor:
    """Spatial continuity: mean |vertical difference| + mean |horizontal difference|."""
    dy = response[:, :, 1:, :] - response[:, :, :-1, :]
    dx = response[:, :, :, 1:] - response[:, :, :, :-1]
    zero = response.new_zeros(())
    return (dy.abs().mean() if dy.numel() else zero) + (dx.abs().mean() if dx.numel() else zero)


def scribble_loss(
    response: torch.Tensor, scribbles: torch.Tensor, ignore: int = -1
) -> torch.Tensor:
    """Cross-entropy towards the scribble labels (B, H, W) on scribbled pixels only."""
    mask = scribbles != ignore
    if not bool(mask.any()):
        return response.new_zeros(())
    return F.cross_entropy(response.permute(0, 2, 3, 1)[mask], scribbles[mask])
