"""FCN-8s-style segmenter (Long, Shelhamer & Darrell, 2015), small and with BatchNorm.

A VGG-like backbone; score maps from the last three stages are fused coarse-to-fine by
upsampling and addition ("skip architecture"), then bilinearly upsampled to the input size.
Deviations: BatchNorm (so it trains from scratch; the paper fine-tuned ImageNet VGG), 3x3
instead of 7x7 for the "fc6" conv (the last map is only ~8x8 for 128px inputs), and fixed
bilinear upsampling instead of deconvolutions initialised to bilinear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBNReLU, init_weights, upsample_to


class FCN(nn.Module):
    """FCN with ``depth`` VGG stages (two 3x3 convs, then 2x2 max-pool), ``width * 2**i`` chans.

    Maps ``B x in_channels x H x W`` to logits ``B x num_classes x H x W`` for any
    ``H, W >= 2**depth``. Fuses the last ``min(3, depth)`` stages (8s-style at depth 5,
    where the stages have strides 8, 16, 32; at depth 4 they are 4, 8, 16).
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 2, width: int = 16, depth: int = 4):
        super().__init__()
        chans = [width * 2**i for i in range(depth)]
        ins = [in_channels, *chans[:-1]]
        self.stages = nn.ModuleList(
            nn.Sequential(ConvBNReLU(i, o), ConvBNReLU(o, o))
            for i, o in zip(ins, chans, strict=True)
        )
        # "fc6"/"fc7": the classifier of VGG turned convolutional, on the coarsest map.
        top = 2 * chans[-1]
        self.fc = nn.Sequential(ConvBNReLU(chans[-1], top, 3), ConvBNReLU(top, top, 1))
        self.num_fused = min(3, depth)
        fused_chans = [top, *reversed(chans[-self.num_fused : -1])]  # coarse -> fine
        self.scores = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in fused_chans)
        init_weights(self)
        for score in self.scores[1:]:
            # Near-zero, like the paper's zero-initialised skip scores: the finer stages start
            # as small corrections to the coarse prediction instead of adding noise to it.
            nn.init.normal_(score.weight, std=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        feats = []
        for stage in self.stages:
            x = F.max_pool2d(stage(x), 2)
            feats.append(x)
        # Coarsest score (fc7), then finer pooled stages in order, each added after upsampling.
        sources = [self.fc(feats[-1]), *reversed(feats[-self.num_fused : -1])]
        out = self.scores[0](sources[0])
        for score, feat in zip(self.scores[1:], sources[1:], strict=True):
            out = upsample_to(out, feat) + score(feat)
        return upsample_to(out, size)
