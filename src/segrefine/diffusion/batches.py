"""What a refiner trains and validates on: training batches drawn from a seed, and the coarse
inputs validation refines."""

from __future__ import annotations

import sys

import numpy as np
import torch

from ..data.io import VOID
from ..data.transforms import augment_batch, to_tensor
from ..segmenting.segmenter import Segmenter
from .config import degradations
from .degrade import degrade
from .native import draw_native_crops
from .onehot import probs_from_labels


class BatchSource:
    """Draws training batches (image, mask, coarse probs) for one step from its seed.

    With ``coarse`` (modes that learn from coarse masks) the probabilities come from the
    out-of-fold ``views`` for a share of the batch and from degradations of the truth for the
    rest; without it they are None.
    """

    def __init__(self, cfg, images, masks, num_classes, views=None, coarse: bool = True,
                 native=None):  # fmt: skip
        self.cfg, self.images, self.masks = cfg, images, masks
        self.c, self.views, self.coarse = num_classes, views, coarse
        self.native = native  # (images, masks) at their original sizes, for native refiners
        self.how = degradations(cfg)  # the error kinds the coarse masks from the truth get

    def draw(self, step: int):
        """The batch of training step ``step``: working-size crops and, for a native refiner,
        ``native_share`` of it drawn at finer scales (:mod:`segrefine.diffusion.native`).
        A class-agnostic refiner sees half of each batch with object and rest swapped."""
        x, y, probs = self._draw_all(step)
        if getattr(self.cfg, "class_agnostic", False):
            # "object" is only the side the user's mask calls 1: trained on objects alone
            # (mostly smaller than the rest) it learned to shrink whatever side is 1, so
            # each item is shown either way round and neither side is favoured
            rng = np.random.default_rng([self.cfg.seed, step, 2])
            swap = torch.from_numpy(rng.random(len(y)) < 0.5)
            y[swap] = torch.where(y[swap] == VOID, VOID, 1 - y[swap])
            probs[swap] = probs[swap].flip(1)
        return x, y, probs

    def _draw_all(self, step: int):
        cfg = self.cfg
        if self.native is None:
            return self._draw(step, cfg.batch_size)
        rng = np.random.default_rng([cfg.seed, step, 1])
        n = int(rng.binomial(cfg.batch_size, cfg.native_share))
        if n == 0:  # a batch may draw no finer-scale crop (1 in 65536 at the default share)
            return self._draw(step, cfg.batch_size)
        fine = draw_native_crops(*self.native, n, cfg.crop or 64, cfg.size, self.c, rng,
                                 cfg.truth_share)  # fmt: skip
        if n == cfg.batch_size:
            return fine
        x, y, probs = self._draw(step, cfg.batch_size - n)
        # near-perfect inputs at the working size too: a refiner that has only ever seen wrong
        # masks "corrects" right ones
        for i in np.flatnonzero(rng.random(len(y)) < cfg.truth_share):
            clean = torch.where(y[i] == VOID, 0, y[i]).numpy().astype(np.uint8)
            probs[i] = torch.from_numpy(probs_from_labels(clean, self.c))
        return torch.cat([x, fine[0]]), torch.cat([y, fine[1]]), torch.cat([probs, fine[2]])

    def _draw(self, step: int, b: int):
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, step])
        n_oof = 0
        if self.views is not None and self.coarse:
            n_oof = int(rng.binomial(b, cfg.oof_fraction))
        size = self.images.shape[1]
        rows = cols = slice(None)
        if cfg.crop and cfg.crop < size:
            # one random window for the whole batch: the band-limited correction is local, so
            # small crops teach it as well as whole images at a fraction of the cost. It is
            # cut before the degradations, which then cost less too
            top, left = rng.integers(0, size - cfg.crop + 1, size=2)
            rows, cols = slice(top, top + cfg.crop), slice(left, left + cfg.crop)
        window = (..., rows, cols)
        idx = rng.integers(len(self.images), size=max(b - n_oof, 0))
        x = y = probs = None
        if len(idx):
            x, y = augment_batch(to_tensor(self.images[idx].numpy()), self.masks[idx], rng)
            x, y = x[window], y[window]
            if self.coarse:
                probs = torch.from_numpy(np.stack([degrade(m.numpy(), self.c, rng, self.how)
                                                   for m in y]))  # fmt: skip
        if n_oof:
            j = rng.integers(len(self.views["images"]), size=n_oof)
            vx = to_tensor(self.views["images"][j].numpy()[:, rows, cols])
            vy = self.views["masks"][j][window].long()
            vp = self.views["probs"][j][window].float()
            flip = torch.from_numpy(rng.random(n_oof) < 0.5)
            vx[flip], vy[flip], vp[flip] = vx[flip].flip(-1), vy[flip].flip(-1), vp[flip].flip(-1)
            if x is None:
                x, y, probs = vx, vy, vp
            else:
                x, y, probs = torch.cat([x, vx]), torch.cat([y, vy]), torch.cat([probs, vp])
        return x, y, probs


def validation_priors(cfg, val, device) -> np.ndarray:
    """The coarse inputs validation refines: the segmenter's predictions when one is given,
    the ``--coarse`` folder's when it holds them all, else fixed degradations of the truth."""
    if cfg.segmenter:
        seg = Segmenter.load(cfg.segmenter, device)
        return np.stack(seg.predict_batch([it.image for it in val.items]))
    if getattr(cfg, "coarse", None):  # the user's model's predictions, when it made them
        from .coarse_views import coarse_priors

        found = coarse_priors(cfg.coarse, val, cfg.data, cfg.val_split, cfg.size, True)
        if found is not None:
            return found.astype(np.float32)
        print(f"segrefine: note: {cfg.coarse} lacks predictions for some '{cfg.val_split}' "
              "images: validation refines degradations of the truth instead", file=sys.stderr)
    how = degradations(cfg)
    return np.stack([degrade(it.mask, val.num_classes, np.random.default_rng([cfg.seed, 7, i]), how)
                     for i, it in enumerate(val.items)])  # fmt: skip
