"""One image's refinement at working size around segrefine's two ONNX graphs, in NumPy.

A reference for other runtimes (C++, onnxruntime-web): it needs only the folder that
`segrefine export --run RUN --onnx DIR` writes for a default-mode refiner (encoder.onnx,
head.onnx, onnx.json), NumPy, SciPy and onnxruntime -- no PyTorch, no segrefine.
tests/test_onnx.py checks that it gives segrefine's own numbers when fed the same random draws.

    python docs/onnx_reference.py DIR/refiner IMAGE.png     # a 0.5/0.5 prior: a smoke test
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from scipy import ndimage


class Refiner:
    def __init__(self, folder: str | Path):
        folder = Path(folder)
        self.side = json.loads((folder / "onnx.json").read_text())
        self.r = self.side["refiner"]
        if self.r["mode"] != "default":
            raise ValueError("this reference covers the default mode's encoder + head")
        self.encoder = ort.InferenceSession(str(folder / "encoder.onnx"))
        self.head = ort.InferenceSession(str(folder / "head.onnx"))
        self.alphas = np.array(self.r["schedule"]["alphas_cumprod"], dtype=np.float64)

    def timesteps(self, steps: int, strength: float) -> tuple[list[int], int]:
        """The DDIM timesteps visited, first ``round(strength T) - 1``, and their spacing."""
        total = self.r["schedule"]["num_train_timesteps"]
        t0 = int(np.clip(round(strength * total) - 1, 0, total - 1))
        steps = min(steps, t0 + 1)
        spacing = total // min(total, -(-total * steps // (t0 + 1)))  # T // ceil(T s / (t0+1))
        return [t0 - i * spacing for i in range(steps)], spacing

    def band(self, probs: np.ndarray) -> np.ndarray:
        """(1, 1, H, W) 1.0 where the head may change the prior: near a boundary of its argmax
        (a (2 band + 1)-square window holds two labels) or its top probability < confident."""
        labels, radius = probs[0].argmax(0), self.r["band"]
        size = 2 * radius + 1
        edge = ndimage.maximum_filter(labels, size) != ndimage.minimum_filter(labels, size)
        unsure = probs[0].max(0) < self.r["confident"]
        return (edge | unsure)[None, None].astype(np.float32)

    def refine(self, image: np.ndarray, probs: np.ndarray, samples: int | None = None,
               steps: int | None = None, strength: float | None = None, u=None, noise=None,
               seed: int = 0):  # fmt: skip
        """``image`` (H, W, 3) uint8 and ``probs`` (C, H, W) at working size (H, W multiples of
        the stride). Returns (probabilities (C, H, W), uncertainty (H, W)). ``u`` (K, 1, H, W)
        uniform and ``noise`` (K, C, H, W) normal draws are made from ``seed`` when not given."""
        inf = self.r["inference"]
        k = samples or inf["samples"]
        steps, strength = steps or inf["steps"], strength or inf["strength"]
        norm = self.side["normalise"]
        x = ((image / 255.0 - norm["mean"]) / norm["std"]).transpose(2, 0, 1)[None]
        p = probs[None].astype(np.float32)
        features = self.encoder.run(None, {"image": x.astype(np.float32), "probs": p})[0]
        log_prior = np.log(np.maximum(p, 1e-4)).astype(np.float32)
        band = self.band(p) if self.r["band"] > 0 else np.ones_like(p[:, :1])
        rng = np.random.default_rng(seed)
        c, h, w = probs.shape
        u = rng.random((k, 1, h, w)) if u is None else u
        noise = rng.standard_normal((k, c, h, w)) if noise is None else noise
        # the start: one label per pixel drawn from the prior (+1 / -1 channels), noised to t0
        cdf = np.cumsum(np.repeat(p, k, 0), 1)
        reached = (u * cdf[:, -1:] <= cdf).astype(np.float64)
        y = np.diff(reached, axis=1, prepend=0) * 2 - 1
        ts, spacing = self.timesteps(steps, strength)
        a = self.alphas[ts[0]]
        x_t = np.sqrt(a) * y + np.sqrt(1 - a) * noise
        for i, t in enumerate(ts):
            last = i + 1 == len(ts)  # the last prediction is made without the band
            feeds = {"features": features, "x_t": x_t.astype(np.float32),
                     "t": np.full(k, t, np.int64), "log_prior": log_prior,
                     "band": np.ones_like(band) if last else band}  # fmt: skip
            logits = self.head.run(None, feeds)[0].astype(np.float64)
            q = np.exp(logits - logits.max(1, keepdims=True))
            q /= q.sum(1, keepdims=True)
            if not last:  # a DDIM step (eta 0) with the clean prediction 2 q - 1
                x0, a_t = q * 2 - 1, self.alphas[t]
                a_prev = self.alphas[t - spacing] if t - spacing >= 0 else 1.0
                eps = (x_t - np.sqrt(a_t) * x0) / np.sqrt(1 - a_t)
                x_t = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps
        prior = np.repeat(p, k, 0).astype(np.float64)
        if self.r["band"] > 0:  # a change leaves the band whole where the head is sure of it
            sure = (q.argmax(1) != prior.argmax(1)) & (q.max(1) >= self.r["grow_sure"])
            grown = np.repeat(band[:, 0] > 0, k, 0)
            for j in range(k):
                ids, _ = ndimage.label(sure[j], structure=np.ones((3, 3)))
                hit = np.unique(ids[grown[j] & sure[j]])
                grown[j] |= np.isin(ids, hit[hit > 0])
            q = np.where(grown[:, None], q, prior)
        kept = (q == prior).all(1, keepdims=True)  # pixels no sample changed keep the prior
        temperature = self.r["temperature"]
        if temperature != 1.0:
            z = np.log(np.maximum(q, 1e-12)) / temperature
            z = np.exp(z - z.max(1, keepdims=True))
            q = np.where(kept, q, z / z.sum(1, keepdims=True))
        mean = q.mean(0)
        entropy = -(mean * np.log(np.maximum(mean, 1e-8))).sum(0) / np.log(c)
        return mean.astype(np.float32), np.clip(entropy, 0, 1).astype(np.float32)


if __name__ == "__main__":
    from PIL import Image

    ref = Refiner(sys.argv[1])
    stride = ref.side["stride"]
    img = np.asarray(Image.open(sys.argv[2]).convert("RGB"))
    img = img[: img.shape[0] // stride * stride, : img.shape[1] // stride * stride]
    flat = np.full((len(ref.side["class_names"]), *img.shape[:2]), 0.5, np.float32)
    probs, uncertainty = ref.refine(img, flat / flat.sum(0))
    print("labels", np.bincount(probs.argmax(0).ravel()), "mean uncertainty",
          float(uncertainty.mean()))  # fmt: skip
