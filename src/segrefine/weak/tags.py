"""Pseudo-masks from image tags: class activation maps grown to image edges.

A classifier -- the U-Net's encoder with a 1x1 class layer and global average pooling, so its
per-position class scores *are* the class activation map (CAM, Zhou et al. 2016) -- learns from
the tags which classes an image shows (multi-label, binary cross-entropy; images with no tag
are negatives and teach it what no class looks like). Each tagged class's CAM, scaled to its
maximum, is then grown to image edges in one of two ways (``TagSettings.method``):

* ``grabcut`` (the default; saliency seeds grown with GrabCut, as Simonyan et al. did): the
  regions where the CAM is above ``box_threshold`` give boxes (each region's, widened by
  ``box_pad`` of its size on each side), and GrabCut cuts the object out of each box as the
  ``boxes`` source does, background outside them. The CAM only has to find the object, not
  its outline: on Weizmann train this makes pseudo-masks of per-image IoU 55.2 where the
  random walker makes 42.4 (docs/benchmarks.md);
* ``random-walker``: confident seeds above ``high``, background seeds where every tagged class
  scores below ``low``, grown by scikit-image's random walker; ``void`` where its top
  probability is under ``sure``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.datasets import preprocess, resize_image, resize_mask
from ..data.io import VOID
from ..data.transforms import pad_to_multiple, to_tensor, working_size
from ..models.unet import UNet
from .annotations import Box
from .boxes import pseudo_mask_from_boxes


class TagClassifier(nn.Module):
    """Image -> a score per tag class; :meth:`cam` gives the scores per position."""

    def __init__(self, num_tags: int, width: int = 16, depth: int = 4):
        super().__init__()
        unet = UNet(3, 2, width, depth)  # its encoder: the segmenters' own first half
        self.inc, self.downs = unet.inc, unet.downs
        self.classes = nn.Conv2d(width * 2**depth, num_tags, 1)

    def cam(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores per position (B, K, H / 2^depth, W / 2^depth), before pooling."""
        x = self.inc(x)
        for down in self.downs:
            x = down(F.max_pool2d(x, 2))
        return self.classes(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam(x).mean((2, 3))  # a linear layer after pooling = pooling after it


@dataclass
class TagSettings:
    size: int = 128
    epochs: int = 40
    batch_size: int = 16
    lr: float = 2e-3
    high: float = 0.45  # CAM share of its maximum above which a position seeds its class
    low: float = 0.05  # below this for every tagged class: a background seed (tuned on train)
    sure: float = 0.7  # the random walker's top probability under which a pixel is void
    seed: int = 0
    method: str = "grabcut"  # or "random-walker"
    box_threshold: float = 0.3  # CAM share of its maximum that a box must hold (tuned on train)
    box_pad: float = 0.1  # each box widened by this share of its size on each side
    min_region: float = 0.25  # a class's regions smaller than this share of its largest: noise

    def __post_init__(self):
        if self.method not in TAG_METHODS:
            raise ValueError(f"method must be one of {TAG_METHODS}, got {self.method!r}")


TAG_METHODS = ("grabcut", "random-walker")


def train_classifier(images: list[np.ndarray], tags: list[set[int]], num_tags: int,
                     settings: TagSettings, progress=None) -> TagClassifier:  # fmt: skip
    """Fit a :class:`TagClassifier` on ``images`` (any sizes; square-cropped to the working
    size) with their ``tags`` (class indices 0..num_tags-1; empty = a negative)."""
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    x = to_tensor(np.stack([preprocess(im, settings.size) for im in images]))
    y = torch.zeros(len(images), num_tags)
    for i, t in enumerate(tags):
        y[i, sorted(t)] = 1.0
    net = TagClassifier(num_tags)
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=1e-4)
    steps = settings.epochs * max(len(images) // settings.batch_size, 1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, settings.lr, total_steps=steps)
    net.train()
    for step in range(steps):
        idx = rng.choice(len(images), size=min(settings.batch_size, len(images)), replace=False)
        xb = x[idx]
        if rng.random() < 0.5:
            xb = xb.flip(-1)
        loss = F.binary_cross_entropy_with_logits(net(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None:
            progress(step, steps, loss.item())
    return net.eval()


@torch.no_grad()
def class_maps(net: TagClassifier, image: np.ndarray, size: int) -> np.ndarray:
    """The classifier's CAM of every tag class at ``image``'s working size (K, h, w), each
    scaled to [0, 1] by its maximum (negative scores are 0)."""
    h, w = working_size(image.shape[:2], size)
    x = to_tensor(resize_image(image, (h, w)))
    stride = 2 ** len(net.downs)
    x = pad_to_multiple(x, stride)  # as the segmenters pad, cropped back below
    cam = F.relu(net.cam(x))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    cam = cam[0, :, :h, :w]
    return (cam / cam.flatten(1).amax(1).clamp_min(1e-6)[:, None, None]).numpy()


def boxes_from_cams(cams: np.ndarray, tags: set[int], shape: tuple[int, int],
                    settings: TagSettings) -> list[Box]:  # fmt: skip
    """Boxes (image coordinates, ``shape`` = (H, W)) around each tagged class's CAM regions:
    connected regions above ``box_threshold``, those under ``min_region`` of the class's
    largest dropped, each widened by ``box_pad``. Tag ``k`` is box label ``k + 1``."""
    from scipy import ndimage

    H, W = shape
    h, w = cams.shape[1:]
    boxes = []
    for k in sorted(tags):
        regions, n = ndimage.label(cams[k] >= settings.box_threshold)
        if not n:
            continue
        sizes = ndimage.sum(np.ones_like(regions), regions, range(1, n + 1))
        for r, where in enumerate(ndimage.find_objects(regions)):
            if sizes[r] < settings.min_region * sizes.max():
                continue
            # the region's extent in image pixels, then widened on every side
            y0, y1 = where[0].start * H / h, where[0].stop * H / h
            x0, x1 = where[1].start * W / w, where[1].stop * W / w
            py, px = settings.box_pad * (y1 - y0), settings.box_pad * (x1 - x0)
            top, left = max(0, round(y0 - py)), max(0, round(x0 - px))
            bottom, right = min(H, round(y1 + py)), min(W, round(x1 + px))
            boxes.append(Box(k + 1, left, top, right - left, bottom - top))
    return boxes


def pseudo_mask_from_tags(image: np.ndarray, tags: set[int], cams: np.ndarray,
                          settings: TagSettings) -> np.ndarray:  # fmt: skip
    """A label map at ``image``'s size: tag ``k`` is class ``k + 1`` (0 = background), grown
    from the CAMs by ``settings.method``, ``void`` where unsure. An untagged image is all
    background; a tagged one whose CAMs find nothing is all void."""
    from skimage.segmentation import random_walker

    H, W = image.shape[:2]
    if not tags:
        return np.zeros((H, W), np.uint8)
    if settings.method == "grabcut":
        boxes = boxes_from_cams(cams, tags, (H, W), settings)
        if not boxes:
            return np.full((H, W), VOID, np.uint8)
        return pseudo_mask_from_boxes(image, boxes, "grabcut")
    order = sorted(tags)
    maps = cams[order]  # (T, h, w)
    h, w = maps.shape[1:]
    seeds = np.zeros((h, w), np.int32)  # 0 unknown, 1 background, 2.. the tagged classes
    best = maps.argmax(0)
    seeds[maps.max(0) < settings.low] = 1
    confident = maps.max(0) >= settings.high
    seeds[confident] = best[confident] + 2
    if (seeds == 1).sum() == 0 or (seeds >= 2).sum() == 0:
        return np.full((H, W), VOID, np.uint8)  # no contrast to grow from
    small = resize_image(image, (h, w)).astype(np.float64) / 255.0
    prob = random_walker(small, seeds, beta=90, mode="bf", channel_axis=-1,
                         return_full_prob=True)  # fmt: skip
    # prob's rows follow the seed values present: 1 is background, v >= 2 is tag order[v - 2]
    values = np.unique(seeds[seeds > 0])
    classes = np.asarray([0 if v == 1 else order[v - 2] + 1 for v in values], np.uint8)
    labels = classes[prob.argmax(0)]
    labels[prob.max(0) < settings.sure] = VOID
    return resize_mask(labels, (H, W))
