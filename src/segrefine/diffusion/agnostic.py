"""A class-agnostic refiner on label maps of any classes: each class against the rest.

The refiner itself knows two sides, "object" and the rest. Each class present in an image's
argmax is refined as the object (all of them batched together); its probability is replaced
by the refined object probability and the map renormalised, so where two refined classes
overlap the more confident wins. Classes absent from the argmax keep their probabilities.
Two classes take one pass (class 1 is the object).

Each task is refined both ways round -- as given, and with its two sides swapped -- and the
two object probabilities averaged, so the result does not depend on which side is called the
object. Trained with the sides swapped half the time, a network still learned to grow
whichever side is 1 (a horse given as 1 grew, and so did its background given as 1;
docs/benchmarks.md): averaging the two ways cancels any such bias exactly, for twice the work.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ..data.io import VOID
from .onehot import prior_for_image


def class_priors(images, given) -> list[np.ndarray]:
    """Each image's coarse input (a :class:`~segrefine.data.coarse.Coarse`) as (C, H, W)
    probabilities at its size, C from the input: the maps' own classes, or a mask's largest
    id + 1 (at least two)."""
    priors = []
    for im, c in zip(images, given, strict=True):
        if c.probs is not None:
            n = c.probs.shape[0]
        else:
            n = max(2, int(c.labels[c.labels != VOID].max(initial=0)) + 1)
        priors.append(prior_for_image(im.shape[:2], n, c.probs, c.labels))
    return priors


def one_vs_rest(priors: list[np.ndarray]) -> tuple[list[tuple[int, int]], list[np.ndarray]]:
    """The binary tasks: (image, class) pairs and their (2, H, W) object-vs-rest inputs."""
    owners = [(i, k) for i, p in enumerate(priors)
              for k in ([1] if len(p) == 2 else np.unique(p.argmax(0)).tolist())]  # fmt: skip
    return owners, [np.stack([1 - priors[i][k], priors[i][k]]) for i, k in owners]


def both_ways(binary: list[np.ndarray]) -> list[np.ndarray]:
    """The binary tasks as given, then each with its sides swapped (same order)."""
    return binary + [np.ascontiguousarray(b[::-1]) for b in binary]


def merge_ways(refined: list) -> list[SimpleNamespace]:
    """Results of :func:`both_ways`' tasks -> one per task: the mean of the two ways'
    probabilities (the swapped one swapped back), their denoiser evaluations and where both
    ways were sure (uncertainty 0: a hard mask's pixels that neither way could change)."""
    n = len(refined) // 2
    return [SimpleNamespace(probs=(a.probs + b.probs[::-1]) / 2, nfe=a.nfe + b.nfe,
                            sure=(a.uncertainty == 0) & (b.uncertainty == 0))
            for a, b in zip(refined[:n], refined[n:], strict=True)]  # fmt: skip


def recombine(priors, owners, refined, hard=None
              ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]:  # fmt: skip
    """Per image: labels, probabilities, uncertainty (normalised entropy) and denoiser
    evaluations, from the refined binary tasks (results with ``.probs``, ``.nfe`` and
    ``.sure``). For an image that ``hard`` marks as a mask, the uncertainty is 0 (the mask's
    own) where every one of its tasks was sure."""
    out = []
    for i, p in enumerate(priors):
        q, nfe = p.copy(), 0
        sure = np.full(p.shape[1:], bool(hard and hard[i]))
        for (j, k), r in zip(owners, refined, strict=True):
            if j == i:
                q[k], nfe = r.probs[1], nfe + r.nfe
                sure &= r.sure
        if len(q) == 2:
            q[0] = 1 - q[1]
        q /= np.clip(q.sum(0, keepdims=True), 1e-8, None)
        entropy = -(q * np.log(np.clip(q, 1e-8, None))).sum(0) / np.log(len(q))
        entropy[sure] = 0.0
        out.append((q.argmax(0).astype(np.uint8), q, np.clip(entropy, 0, 1).astype(np.float32),
                    nfe))  # fmt: skip
    return out
