"""Refinement at the image's own resolution: what a refiner trained with ``native=True`` learns
and how it refines.

A refiner first corrects regions at its working size (short side at the training size, where
the whole object fits its view). A native refiner then refines again at doubling scales up to
the image's own size: each pass starts from the previous pass upsampled, whose boundaries are
right to within a pixel or two of the coarser scale and only blurry at this one, and the band
limit lets it move only the pixels along them. Large images are refined in overlapping tiles,
and only tiles that hold band pixels are computed, so the time grows with the boundaries'
length rather than the image's area, and the memory with the tile batch.

Training draws, beside the working-size crops, crops at a random scale between the working
size and the original size, with coarse inputs made the way the passes see them: the truth at
1/2 or 1/4 of the scale, mildly degraded, softened and upsampled -- or, for ``truth_share`` of
them, the truth itself, softened as a hard mask is, so that a boundary the image supports is
left alone ("do no harm").
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..data.datasets import resize_image, resize_mask
from ..data.io import VOID
from ..data.transforms import pad_to_multiple, resize_probs, to_tensor, working_size
from .degrade import DegradeConfig, degrade
from .networks import CONFIDENT, near_label_edge
from .onehot import probs_from_labels

# the errors left at a finer scale after a coarser pass: small shifts and blur, no lost regions
MILD = DegradeConfig(p_morph=0.5, max_radius=1, p_jitter=0.5, max_jitter=1.0, p_coarse=0.0,
                     p_delete=0.0, p_insert=0.0, p_swap=0.0, blur=(0.5, 1.5),
                     noise=0.5)  # fmt: skip
TILE, OVERLAP = 128, 16  # near the training crops (64 px): GroupNorm sees similar extents
# how far a finer pass may move a pixel from its start's boundary: a pass at twice the scale
# of one right to a pixel starts from boundaries right to two. The network's own band (6 px)
# let finer passes erase thin parts (poles, signs, fences; docs/benchmarks.md compares them)
FINER_BAND = 2


def local_coarse(mask: np.ndarray, num_classes: int, rng: np.random.Generator,
                 truth_share: float) -> np.ndarray:  # fmt: skip
    """The coarse input (C, H, W) for a crop of a native-scale mask, as a finer pass sees it."""
    clean = np.where(mask == VOID, 0, mask).astype(np.uint8)
    if rng.random() < truth_share:
        return probs_from_labels(clean, num_classes)
    f = int(rng.choice([2, 4]))
    h, w = mask.shape
    small = resize_mask(clean, (max(h // f, 2), max(w // f, 2)))
    coarse = torch.from_numpy(degrade(small, num_classes, rng, MILD))
    return resize_probs(coarse, (h, w)).numpy()


def draw_native_crops(images, masks, n: int, crop: int, size: int, num_classes: int,
                      rng: np.random.Generator, truth_share: float):  # fmt: skip
    """``n`` crops (normalised images, masks, coarse probs) at one random scale between each
    image's working size and its original size (the same relative position for the batch)."""
    t = rng.random()
    xs, ys, ps = [], [], []
    for i in rng.integers(len(images), size=n):
        image, mask = images[i], masks[i]
        # the working size's height, unchecked: a crop is bounded by the image's own size, so
        # a strip of a dataset trains (the aspect bound is for what inference allocates)
        h = max(1, round(mask.shape[0] * size / min(mask.shape)))
        s = (h / mask.shape[0]) ** (1 - t) if h < mask.shape[0] else 1.0
        shape = (max(crop, round(mask.shape[0] * s)), max(crop, round(mask.shape[1] * s)))
        im, m = resize_image(image, shape), resize_mask(mask, shape)
        top = int(rng.integers(0, shape[0] - crop + 1))
        left = int(rng.integers(0, shape[1] - crop + 1))
        im, m = im[top : top + crop, left : left + crop], m[top : top + crop, left : left + crop]
        if rng.random() < 0.5:
            im, m = im[:, ::-1], m[:, ::-1]
        xs.append(np.ascontiguousarray(im))
        ys.append(m.astype(np.int64))
        ps.append(local_coarse(m, num_classes, rng, truth_share))
    return (to_tensor(np.stack(xs)), torch.from_numpy(np.stack(ys)),
            torch.from_numpy(np.stack(ps)))  # fmt: skip


def pass_sizes(shape: tuple[int, int], size: int) -> list[tuple[int, int]]:
    """The sizes of the passes after the working-size one: doubling, ending at ``shape``."""
    h0, _ = working_size(shape, size)
    n = max(0, math.ceil(math.log2(shape[0] / h0) - 0.25))  # a last step under 1.19x is skipped
    sizes = [(round(shape[0] * 2**-k), round(shape[1] * 2**-k)) for k in range(n - 1, -1, -1)]
    return [s for s in sizes if s[0] > h0]


def _tiles(length: int) -> list[int]:
    if length <= TILE:
        return [0]
    step = TILE - OVERLAP
    return sorted(set(list(range(0, length - TILE, step)) + [length - TILE]))


def refine_pass(refiner, image: np.ndarray, probs: torch.Tensor, settings: dict, seed: int,
                band: int, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """One pass at ``image``'s size from ``probs`` (C, H, W) at that size: the refined
    probabilities and their uncertainty. Tiles without band pixels keep ``probs``."""
    h, w = image.shape[:2]
    acc, unc, weight = torch.zeros_like(probs), torch.zeros(h, w), torch.zeros(h, w)
    ramp = torch.minimum(torch.arange(TILE) + 1, torch.arange(TILE).flip(0) + 1).float()
    window = torch.minimum(ramp[:, None], ramp[None, :]).clamp(max=OVERLAP)  # tent at seams
    # a tile is computed when it holds band pixels (as the network finds them on the tile:
    # a boundary near a tile's edge is inside the overlapping neighbour too), that is when
    # its labels are not all one or a pixel is unsure -- no morphology needed to know that
    sure, labels = probs.max(0)
    boxes = [(top, left) for top in _tiles(h) for left in _tiles(w)
             if _holds_band(sure[top : top + TILE, left : left + TILE],
                            labels[top : top + TILE, left : left + TILE])]  # fmt: skip
    del sure, labels
    for k in range(0, len(boxes), batch_size):
        chunk = boxes[k : k + batch_size]
        xt = to_tensor(np.stack([image[t : t + TILE, c : c + TILE] for t, c in chunk]))
        pt = torch.stack([probs[:, t : t + TILE, c : c + TILE] for t, c in chunk])
        th, tw = xt.shape[-2:]
        mean, u = refiner.refine_tensors(pad_to_multiple(xt, refiner.stride),
                                         pad_to_multiple(pt, refiner.stride),
                                         seed=seed + k, **settings)  # fmt: skip
        win = window[:th, :tw]
        for (t, c), m, uu in zip(chunk, mean[..., :th, :tw], u[..., :th, :tw], strict=True):
            acc[:, t : t + th, c : c + tw] += m * win
            unc[t : t + th, c : c + tw] += uu * win
            weight[t : t + th, c : c + tw] += win
    # a finer pass places boundaries; which region a pixel belongs to was decided at the
    # working size, with the whole object in view: only pixels near a boundary may change
    done = (weight > 0) & _near_boundary(probs, band)
    del window
    weight.clamp_min_(1e-8)
    out = torch.where(done, acc.div_(weight), probs)
    del acc
    return out, unc.div_(weight).mul_(done)


def _holds_band(top: torch.Tensor, labels: torch.Tensor) -> bool:
    """Whether :func:`uncertain_band` of a tile whose top probabilities and labels these are
    marks any pixel (any radius): every pixel's window lies inside the replicate-padded
    tile, so an edge is found exactly when the tile holds two labels."""
    return bool((top < CONFIDENT).any()) or bool(labels.amin() != labels.amax())


def _near_boundary(probs: torch.Tensor, radius: int) -> torch.Tensor:
    """(H, W): pixels within ``radius`` of a boundary of ``probs``' argmax, by tiles."""
    h, w = probs.shape[-2:]
    out = torch.zeros(h, w, dtype=torch.bool)
    for top in range(0, h, TILE):
        for left in range(0, w, TILE):
            # the window reaches ``radius`` beyond the tile so its edge sees its neighbours
            t0, l0 = max(top - radius, 0), max(left - radius, 0)
            win = probs[:, t0 : top + TILE + radius, l0 : left + TILE + radius]
            edge = near_label_edge(labels_of(win), radius)
            out[top : top + TILE, left : left + TILE] = edge[
                top - t0 : top - t0 + TILE, left - l0 : left - l0 + TILE
            ]
    return out


def _apply(prior: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    # in place after the sum: at 20 MP each temporary of C maps is C x 80 MB
    p = torch.add(prior, delta).clamp_min_(0)
    return p.div_(p.sum(0, keepdim=True).clamp_min_(1e-8))


def labels_of(probs: torch.Tensor) -> torch.Tensor:
    """``probs.argmax(0)``: ``max`` finds the same labels ~30x faster on a CPU."""
    return probs.max(0).indices


def effective_size(probs: torch.Tensor | np.ndarray, tolerance: float = 0.05,
                   window: int = 512) -> tuple[int, int]:  # fmt: skip
    """The resolution (h, w) at which probability maps (C, H, W) were predicted.

    A segmenter's maps saved at the image's size were usually predicted smaller and upsampled
    (a U-Net at its working size, DeepLab at 1/8): such a map is reproduced by its own 1/f
    version, upsampled, to within ``tolerance`` near its boundaries, while a map with detail
    at every pixel (a hard mask, even softened by ``probs_from_labels``) is not. Returns
    (H, W) / f for the largest such f of 1.5 ... 8, or (H, W). Looks at the ``window``-px
    squares holding most boundary pixels (at most four), so the cost does not grow with H, W.
    A map made of f x f blocks (a small mask upsampled by nearest neighbour) counts as
    predicted at (H, W) / f whatever the test above finds (:func:`block_size`).
    """
    p = torch.as_tensor(np.asarray(probs, dtype=np.float32) if isinstance(probs, np.ndarray)
                        else probs.float())  # fmt: skip
    h, w = p.shape[-2:]
    labels = labels_of(p)
    block = block_size(labels)
    if block > 1:
        return max(1, round(h / block)), max(1, round(w / block))
    crops = [p[:, t : t + window, c : c + window] for t, c in _busiest(labels, window)]
    nears = [_near_boundary(crop, 2) for crop in crops]
    best = 1.0
    for f in (1.5, 2, 3, 4, 6, 8):
        errors = []
        for crop, near in zip(crops, nears, strict=True):
            ch, cw = crop.shape[-2:]
            small = F.interpolate(
                crop[None],
                size=(max(2, round(ch / f)), max(2, round(cw / f))),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
            back = F.interpolate(small, size=(ch, cw), mode="bilinear", align_corners=False)[0]
            errors.append((back - crop).abs().amax(0)[near])
        err = torch.cat(errors)
        if not len(err) or float(err.mean()) > tolerance:
            break
        best = f
    return max(1, round(h / best)), max(1, round(w / best))


def block_size(labels: torch.Tensor, evidence: int = 8) -> int:
    """The side f of the blocks a label map (H, W) is made of: a mask made at (H, W) / f and
    upsampled by nearest neighbour changes label only between its blocks, so the columns
    (and rows) where any label changes lie f or more apart; a mask drawn at its own size has
    changes in neighbouring columns wherever a boundary is curved or slanted. 1 when either
    axis has fewer than ``evidence`` such columns (a rectangle could be drawn at any size).

    Why: such a mask's boundaries are steps of f pixels; taken for one drawn at full size it
    got no finer pass, and the steps came back in the result, on the block grid (issue 29).
    """
    sides = []
    for changes in ((labels[1:] != labels[:-1]).any(1), (labels[:, 1:] != labels[:, :-1]).any(0)):
        at = changes.nonzero().flatten()
        if len(at) < evidence:
            return 1
        sides.append(int((at[1:] - at[:-1]).min()))
    return max(1, min(sides))


def _busiest(labels: torch.Tensor, window: int, n: int = 4) -> list[tuple[int, int]]:
    """Top-left corners of up to ``n`` ``window``-px squares with the most label changes."""
    edge = torch.zeros(labels.shape, dtype=torch.float32)
    edge[1:] += (labels[1:] != labels[:-1]).float()
    edge[:, 1:] += (labels[:, 1:] != labels[:, :-1]).float()
    corners = [(t, c) for t in _starts(labels.shape[0], window)
               for c in _starts(labels.shape[1], window)]  # fmt: skip
    counts = [float(edge[t : t + window, c : c + window].sum()) for t, c in corners]
    order = sorted(range(len(corners)), key=lambda i: -counts[i])[:n]
    return [corners[i] for i in order if counts[i] > 0] or corners[:1]


def _starts(length: int, window: int) -> list[int]:
    return list(range(0, max(1, length - window + 1), window)) or [0]


def _thick_changes(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """(1, h, w) weights: 1 where ``after``'s labels differ from ``before``'s in a change at
    least two pixels thick (an opening by a 2 x 2 square), grown by a pixel; 0 elsewhere."""
    changed = (labels_of(before) != labels_of(after)).float()[None, None]
    opened = -F.max_pool2d(-F.pad(changed, (0, 1, 0, 1), mode="replicate"), 2, 1)  # erode
    opened = F.max_pool2d(F.pad(opened, (1, 0, 1, 0), mode="replicate"), 2, 1)  # dilate
    return F.max_pool2d(opened, 3, 1, 1)[0]


def refine_native(refiner, image: np.ndarray, prior: torch.Tensor, first_input: torch.Tensor,
                  first: torch.Tensor, uncertainty: torch.Tensor, settings: dict, seed: int,
                  detail: tuple[int, int] | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Carry the working-size pass up to ``image``'s own size.

    ``prior`` is the coarse input at the image's size, ``first_input`` the same at working
    size and ``first`` the working-size pass's result. What a pass changed (its output minus
    its input) is what is carried to the next scale, added to the coarse input resized there:
    detail the input already has at full resolution survives, and a pass that changes nothing
    changes nothing at any scale. Two rules keep a good input intact ("do no harm"):

    * finer passes run only at scales above ``detail``, the resolution the input was
      predicted at (None: the image's own): a mask drawn at full size gets none;
    * when the input has detail finer than the working size, only the working pass's
      changes of label at least two working pixels thick are carried (regions it added or
      removed); thinner ones are boundary placement, which the input does at a finer scale.

    Returns probabilities and uncertainty at the image's size.
    """
    delta = first - first_input
    detail = detail or tuple(image.shape[:2])
    full = tuple(image.shape[:2])
    block = block_size(labels_of(prior))
    if block > 1:  # a small mask upsampled by nearest neighbour: start from it as from the
        # small mask itself, upsampled smoothly, not from its steps (which no pass could undo)
        small = (max(2, round(full[0] / block)), max(2, round(full[1] / block)))
        prior = resize_probs(resize_probs(prior, small), full)
    if detail[0] > 1.19 * first.shape[-2]:
        delta = delta * _thick_changes(first_input, first)
    sizes = [s for s in pass_sizes(image.shape[:2], refiner.size) if s[0] > 1.19 * detail[0]]
    for k, shape in enumerate(sizes):
        start = _apply(resize_probs(prior, shape), _resize(delta, shape))
        out, fresh = refine_pass(refiner, resize_image(image, shape), start, settings,
                                 seed + 1000 * (k + 1), FINER_BAND)  # fmt: skip
        uncertainty = torch.where(fresh > 0, fresh, _resize(uncertainty[None], shape)[0])
        del fresh
        if shape == full:  # the last pass: its output is the result (start + its change)
            return out, uncertainty
        delta = _resize(delta, shape).add_(out.sub_(start))
        del start, out
    return _apply(prior, _resize(delta, full)), _resize(uncertainty[None], full)[0]


def _resize(t: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (C, h, w) values that are not probabilities (no renormalising)."""
    if tuple(t.shape[-2:]) == tuple(shape):
        return t
    return F.interpolate(t[None], size=tuple(shape), mode="bilinear", align_corners=False)[0]


def input_detail(image_hw, input_hw, input_size: int | None) -> tuple[int, int] | None:
    """The resolution a coarse input was predicted at, when known: ``input_size`` (a short
    side), else the input's own size when it is smaller than its image; None = find it."""
    if input_size is not None:
        return working_size(tuple(image_hw), input_size)
    return tuple(input_hw) if tuple(input_hw) != tuple(image_hw) else None
