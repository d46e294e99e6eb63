"""The refiner's denoising networks, one per mode.

``default`` mode (:class:`ConditionalDenoiser`) splits the work DDP-style: a U-Net *encoder*
reads the conditions (image + the segmenter's probabilities) once per image, and a light
time-conditioned *head* maps (encoder features, noisy label map, t) to clean-label logits. A
refinement with K samples x S steps therefore costs one encoder pass plus K*S head passes
(each lighter than a full head: the features' share of its first convolution is per image).
The head adds its output to the segmenter's log-probabilities and starts at zero, so an
untrained refiner returns the segmenter's own prediction and training only learns corrections:
the most data-efficient starting point we know on a CPU budget.

``paper`` mode (:func:`paper_denoiser`) is a plain DDPM U-Net (diffusers ``UNet2DModel``) over
image and label channels jointly, predicting the noise of all of them, as in the paper.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from ..models import build_segmenter


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of integer timesteps (B,), as in the DDPM paper."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class FiLMConv(nn.Module):
    """3x3 conv -> GroupNorm -> per-channel scale and shift from the time embedding -> SiLU."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm = nn.GroupNorm(min(8, out_ch), out_ch)
        self.film = nn.Linear(emb_dim, 2 * out_ch)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.finish(self.conv(x), emb)

    def finish(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Everything after the convolution, for a convolution computed elsewhere."""
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = torch.addcmul(shift, self.norm(h), 1 + scale)
        return nn.functional.silu(h, inplace=not torch.is_grad_enabled())


CONFIDENT = 0.95  # a prior's top probability above which a pixel is sure (outside the band)


def uncertain_band(probs: torch.Tensor, radius: int, confident: float = CONFIDENT) -> torch.Tensor:
    """(B, 1, H, W) mask of the pixels a banded refiner may change: within ``radius`` pixels of
    a boundary of the prior's argmax, or where the prior's top probability is below
    ``confident``. Everywhere else the prior is kept as it is (SegRefiner's idea: refine only
    where the coarse mask is likely wrong, so confident correct regions cannot be damaged)."""
    top, labels = probs.max(1, keepdim=True)  # one pass for both (argmax alone is slower)
    near_edge = near_label_edge(labels, radius)
    unsure = top < confident
    return (near_edge | unsure).float()


def near_label_edge(labels: torch.Tensor, radius: int) -> torch.Tensor:
    """(..., H, W) bool: whether the (2 ``radius`` + 1)-square window around each pixel, cut at
    the map's edges, holds two labels -- the max and min filters of ``labels`` differ.

    A window holds two labels exactly when it holds two differing neighbours, so this counts
    the label changes between neighbours in each window with running sums (cumsum): the same
    mask as the filters, ~5x faster on a CPU, the cost not growing with ``radius``.
    """
    if radius < 1:
        return torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    r = radius
    across = nn.functional.pad((labels[..., 1:] != labels[..., :-1]).int(), (0, 1))
    down = nn.functional.pad((labels[..., 1:, :] != labels[..., :-1, :]).int(), (0, 0, 0, 1))
    # a change between columns b and b + 1 is inside a window [j - r, j + r] when
    # j - r <= b <= j + r - 1; likewise between rows
    across = _rows(_run_sum(across, r, r - 1), r, r)
    down = _rows(_run_sum(down, r, r), r, r - 1)
    return (across > 0) | (down > 0)


def _run_sum(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """Sums of ``x`` along its last axis over [i - before, i + after] (zeros outside)."""
    w = before + after + 1
    c = nn.functional.pad(x, (before + 1, after)).cumsum(-1, dtype=torch.int32)
    return c[..., w:] - c[..., :-w]


def _rows(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    return _run_sum(x.transpose(-1, -2), before, after).transpose(-1, -2)


def grow_band(band: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) bool: ``band`` plus every region of ``changed`` (8-connected) that holds a
    pixel inside the band; ``changed`` marks where the network's labels differ from the
    prior's and it is sure of them.

    Why: the band says where a correction may *start*, not where a region ends. Cut at the
    band's edge, a region the network moves (a threshold's clutter, a box's corner) kept the
    prior's label beyond that edge, and the edge became a label boundary no image has: the
    outline of the band's square windows, on the working-pixel grid once upsampled -- square
    tiles of object across a rough mask's background (issue 29). A change that no change
    inside the band reaches stays forbidden, as before.
    """
    seeds, regions = (band & changed).cpu().numpy(), changed.cpu().numpy()
    grown = np.zeros_like(regions)
    for i in range(len(regions)):  # one connected-component pass per map: ~1 ms at 128 px
        ids, _ = ndimage.label(regions[i, 0], structure=np.ones((3, 3)))
        hit = np.unique(ids[seeds[i, 0]])
        grown[i, 0] = np.isin(ids, hit[hit > 0])
    return band | torch.from_numpy(grown).to(band.device)


def pointwise_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution as one batched matrix product: the same result, several times faster
    than ``conv(x)`` on a CPU for the few channels of the refiner's head."""
    b, c, h, w = x.shape
    weight = conv.weight.flatten(1).expand(b, -1, -1)
    bias = conv.bias.view(1, -1, 1).expand(b, -1, 1)
    return torch.baddbmm(bias, weight, x.flatten(2)).view(b, -1, h, w)


class ConditionalDenoiser(nn.Module):
    """Predicts clean label logits from a noisy label map, given image and prior probabilities.

    ``encode(image, probs)`` and ``prior_terms(probs)`` once per image, then
    ``head(features, x_t, t, prior)`` per step, for one or several samples per image.

    The head's first convolution reads the encoder's features and the noisy labels
    concatenated; being linear, it is computed as two convolutions added up: the features'
    part once per image (in ``encode``) and the labels' part per sample. K samples of an image
    then share every per-image computation (same weights and result as the concatenated
    convolution, to rounding).
    """

    def __init__(
        self,
        num_classes: int,
        width: int = 16,
        depth: int = 4,
        features: int = 32,
        head_width: int = 32,
        emb_dim: int = 64,
        band: int = 0,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.band = band
        self.emb_dim = emb_dim
        self.encoder = build_segmenter("unet", 3 + num_classes, features, width, depth)
        self.time_mlp = nn.Sequential(
            nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.block1 = FiLMConv(features + num_classes, head_width, emb_dim)
        self.block2 = FiLMConv(head_width, head_width, emb_dim)
        self.out = nn.Conv2d(head_width, num_classes, 1)
        # how much the head trusts the prior's log-probabilities (learned, starts at 1)
        self.prior_scale = nn.Parameter(torch.ones(()))
        nn.init.zeros_(self.out.weight)  # start as the identity refiner: output = prior
        nn.init.zeros_(self.out.bias)

    def encode(self, image: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """Per-image condition (B, head_width, H, W): the encoder's features of the normalised
        image and prior probabilities, through the features' part of the head's first conv."""
        features = self.encoder(torch.cat([image, probs * 2 - 1], dim=1))
        conv = self.block1.conv
        weight = conv.weight[:, : features.shape[1]]
        features = features.contiguous(memory_format=torch.channels_last)  # see head()
        return nn.functional.conv2d(features, weight, conv.bias, padding=conv.padding)

    def prior_terms(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What the head needs from the prior, computed once per image: its log-probabilities
        and the band of pixels the correction may touch (None when unrestricted)."""
        band = uncertain_band(probs, self.band) if self.band > 0 else None
        return torch.log(probs.clamp_min(1e-4)), band

    def head(
        self,
        features: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        prior: tuple[torch.Tensor, torch.Tensor | None],
    ) -> torch.Tensor:
        """Clean-label logits (B*K, C, H, W) for noisy labels ``x_t`` (B*K, C, H, W) at
        timesteps ``t`` (B*K,): K samples per image, consecutive, sharing the image's
        ``features`` (B, ...) from :meth:`encode` and ``prior`` from :meth:`prior_terms`."""
        log_prior, band = prior
        b, k = features.shape[0], x_t.shape[0] // features.shape[0]
        emb = self.time_mlp(timestep_embedding(t, self.emb_dim))
        conv = self.block1.conv
        # channels-last inputs make the head's small convolutions faster on a CPU (the
        # per-sample work that grows with K); the results are the same numbers
        x_t = x_t.contiguous(memory_format=torch.channels_last)
        h = nn.functional.conv2d(x_t, conv.weight[:, -x_t.shape[1] :], None, padding=conv.padding)
        h = (h.unflatten(0, (b, k)) + features.unsqueeze(1)).flatten(0, 1)
        h = self.block2(self.block1.finish(h, emb), emb)
        correction = pointwise_conv(self.out, h).unflatten(0, (b, k))
        anchor = (self.prior_scale * log_prior).unsqueeze(1)  # per image, shared by samples
        if band is None:
            return (anchor + correction).flatten(0, 1)
        return torch.addcmul(anchor, correction, band.unsqueeze(1)).flatten(0, 1)

    def forward(self, x_t, t, image, probs):
        return self.head(self.encode(image, probs), x_t, t, self.prior_terms(probs))


def paper_denoiser(num_classes: int, width: int = 32, depth: int = 4) -> nn.Module:
    """The paper mode's DDPM U-Net: (image + label channels, t) -> noise of all channels."""
    from diffusers import UNet2DModel

    channels = 3 + num_classes
    widths = tuple(width * min(2**i, 4) for i in range(depth))
    return UNet2DModel(
        in_channels=channels, out_channels=channels, block_out_channels=widths,
        layers_per_block=1, down_block_types=("DownBlock2D",) * depth,
        up_block_types=("UpBlock2D",) * depth, norm_num_groups=min(8, width),
        add_attention=False,
    )  # fmt: skip
