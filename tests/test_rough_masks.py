"""Rough masks (a threshold's clutter, a mask made small and upsampled) are refined into the
image's shapes, never into tiles or steps on a grid (issue 29, item 4).

The refiner here is the real machinery (working-size pass, band, finer passes in tiles) around
a stand-in network that knows the answer, so what is left of a rough mask's errors is what the
machinery keeps, not what a network failed to learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from segrefine.data.transforms import MEAN, STD
from segrefine.diffusion import Refiner, RefinerConfig
from segrefine.diffusion.native import block_size, effective_size
from segrefine.diffusion.networks import grow_band, uncertain_band
from segrefine.diffusion.onehot import probs_from_labels


class Oracle(torch.nn.Module):
    """A denoiser that knows the answer: its correction pushes every pixel towards the object
    the image shows (red = object) and, like the real head, it may correct only inside the
    band of the prior's boundaries (``prior_terms``) unless told there is none."""

    def __init__(self, band: int):
        super().__init__()
        self.band = band

    def encode(self, image, probs):
        red = image[:, :1] * STD + MEAN  # the object's share of each pixel, 0..1
        for _ in range(2):  # as sure as a network is: over a pixel or two at an edge
            red = F.avg_pool2d(F.pad(red, (1, 1, 1, 1), mode="replicate"), 3, 1)
        return 16 * (torch.cat([1 - red, red], 1) - 0.5)

    def prior_terms(self, probs):
        return torch.log(probs.clamp_min(1e-4)), uncertain_band(probs, self.band)

    def head(self, features, x_t, t, prior):
        log_prior, band = prior
        logits = log_prior + (features if band is None else features * band)
        return logits.repeat_interleave(x_t.shape[0] // features.shape[0], 0)


def oracle_refiner() -> Refiner:
    """A native refiner working at 32 px: one working pixel is ``side / 32`` image pixels."""
    cfg = RefinerConfig(data="unused", size=32, width=8, depth=2, features=8, head_width=8,
                        band=2, native=True)  # fmt: skip
    ref = Refiner.from_spec(cfg.spec(("bg", "object")), "cpu")
    ref.net = Oracle(band=2)
    return ref


def ellipses(side: int, shapes) -> np.ndarray:
    yy, xx = np.mgrid[:side, :side] / side
    out = np.zeros((side, side), bool)
    for cy, cx, ry, rx in shapes:
        out |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    return out


def scene(side: int) -> tuple[np.ndarray, np.ndarray]:
    """An image of two ellipses (red on green) and its truth: every boundary is curved."""
    truth = ellipses(side, [(0.35, 0.33, 0.22, 0.17), (0.7, 0.72, 0.13, 0.2)])
    image = np.zeros((side, side, 3), np.uint8)
    image[..., 0] = np.where(truth, 255, 0)
    image[..., 1] = 90
    return image, truth.astype(np.uint8)


def grid_share(labels: np.ndarray, grid: int) -> float:
    """The share of label changes between neighbours that lie on a ``grid``-px grid line
    (between pixels ``grid * k - 1`` and ``grid * k``): 1 / ``grid`` by chance."""
    across, down = labels[:, 1:] != labels[:, :-1], labels[1:] != labels[:-1]
    on = across[:, np.arange(1, labels.shape[1]) % grid == 0].sum()
    on += down[np.arange(1, labels.shape[0]) % grid == 0].sum()
    return float(on) / max(int(across.sum() + down.sum()), 1)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("grid", [8, 16])
def test_a_thresholds_clutter_is_removed_whole_not_down_to_grid_aligned_tiles(grid):
    """False regions wider than the band: the network removes them, and none may survive as a
    tile cut by the band's edge (on the working-pixel grid, ``grid`` px, once upsampled)."""
    image, truth = scene(32 * grid)
    clutter = ellipses(32 * grid, [(0.18, 0.75, 0.12, 0.15), (0.85, 0.22, 0.11, 0.14),
                                   (0.45, 0.82, 0.1, 0.09)])  # fmt: skip
    rough = (truth | clutter).astype(np.uint8)
    out = oracle_refiner().refine(image, labels=rough).labels
    assert grid_share(truth, grid) < 1.25 / grid  # the scene itself: chance
    assert grid_share(out, grid) < 1.25 / grid
    assert iou(out, truth) > 0.98


@pytest.mark.parametrize("grid", [8, 16])
def test_a_mask_made_at_a_quarter_size_refines_into_curves_not_its_steps(grid):
    """The truth made at 1/4 size and upsampled by nearest neighbour, as a user has it: its
    4-px steps (half of them on 8-px grid lines) must not come back."""
    image, truth = scene(32 * grid)
    quarter = np.kron(truth[2::4, 2::4], np.ones((4, 4), np.uint8))
    assert grid_share(quarter, grid) > 3 / grid
    out = oracle_refiner().refine(image, labels=quarter).labels
    assert grid_share(out, grid) < 1.25 / grid
    assert iou(out, truth) > 0.99 > iou(quarter, truth)


def test_changes_out_of_reach_of_every_boundary_stay_forbidden():
    """The band still protects what it protects: a region the network would change that no
    change inside the band leads to keeps the prior's label."""
    image, truth = scene(256)
    image[200:215, 15:30, 0] = 255  # the network calls this object, in a sure background
    out = oracle_refiner().refine(image, labels=truth).labels  # far from every boundary
    assert not out[200:215, 15:30].any()
    assert iou(out, truth) > 0.98


def test_the_band_grows_by_the_changed_regions_it_cuts_and_by_nothing_else():
    band = torch.zeros(1, 1, 12, 12, dtype=torch.bool)
    band[..., :, 2:4] = True
    changed = torch.zeros_like(band)
    changed[..., 3:8, 3:10] = True  # crosses the band's edge: grown whole
    changed[..., 10:12, 8:12] = True  # touches no change inside the band: not grown
    above = torch.arange(12)[:, None] < 10
    assert torch.equal(grow_band(band, changed), band | (changed & above))


@pytest.mark.parametrize("size", [(40, 60), (37, 61)])
def test_a_mask_upsampled_by_nearest_neighbour_counts_as_made_small(size):
    small = ellipses(64, [(0.5, 0.5, 0.35, 0.4)])[: size[0], : size[1]].astype(np.uint8)
    for f in (2, 4, 8):
        up = np.array(Image.fromarray(small).resize((size[1] * f, size[0] * f), Image.NEAREST))
        assert block_size(torch.from_numpy(up)) == f
        assert effective_size(probs_from_labels(up, 2)) == size
        drawn = ellipses(64 * f, [(0.5, 0.5, 0.35, 0.4)]).astype(np.uint8)
        assert block_size(torch.from_numpy(drawn)) == 1  # drawn at its size: trusted
    odd = (round(size[1] * 4.05), round(size[0] * 4.05))  # blocks of 4 and some of 5
    up = np.array(Image.fromarray(small).resize(odd, Image.NEAREST))
    assert block_size(torch.from_numpy(up)) == 4
    box = np.zeros((200, 300), np.uint8)
    box[50:150, 40:250] = 1
    assert block_size(torch.from_numpy(box)) == 1  # a rectangle could be drawn at any size
