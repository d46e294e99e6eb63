"""DenseCRF, the comparison refiner (skipped where the optional extra is not installed)."""

from __future__ import annotations

import numpy as np
import pytest

from segrefine import crf


@pytest.mark.skipif(not crf.available(), reason="pydensecrf2 (segrefine[crf]) not installed")
def test_dense_crf_snaps_a_blurry_mask_to_the_image_edge():
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, 32:] = 255  # a vertical edge at x = 32
    truth = np.zeros((64, 64), int)
    truth[:, 32:] = 1
    x = np.arange(64)
    p1 = 1 / (1 + np.exp(-(x - 26) / 6.0))  # the prior's boundary is 6 px off, and soft
    probs = np.stack([1 - p1, p1])[:, None, :].repeat(64, axis=1).astype(np.float32)
    out = crf.dense_crf(image, probs)
    assert out.shape == probs.shape
    np.testing.assert_allclose(out.sum(0), 1, atol=1e-4)
    before = (probs.argmax(0) == truth).mean()
    after = (out.argmax(0) == truth).mean()
    assert after > before + 0.05


@pytest.mark.skipif(not crf.available(), reason="pydensecrf2 (segrefine[crf]) not installed")
def test_dense_crf_takes_images_as_the_benchmark_reads_them(tmp_path):
    from PIL import Image

    from segrefine.data.datasets import preprocess
    from segrefine.data.io import read_image

    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(tmp_path / "x.jpg")
    image = preprocess(read_image(tmp_path / "x.jpg"), 32)  # read-only, as Pillow gives it
    assert not image.flags.writeable
    out = crf.dense_crf(image, np.full((2, 32, 32), 0.5, np.float32))
    assert out.shape == (2, 32, 32)
