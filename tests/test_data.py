"""Readers, class selection, the protocol and augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA
from PIL import Image

from segrefine.data import (
    VOC_CLASSES,
    crop_square,
    load_split,
    make_tasks,
    open_dataset,
    read_image,
    read_mask,
    resize_mask,
)
from segrefine.data.synthetic import SYNTHETIC_CLASSES
from segrefine.data.transforms import AugmentConfig, augment_batch, from_tensor, to_tensor
from segrefine.errors import InputError


def test_voc_layout_is_detected_and_indexed(voc_root):
    index = open_dataset(voc_root, "train")
    assert index.layout == "voc"
    assert index.class_names == VOC_CLASSES
    assert len(index.samples) == 6
    assert all(s.mask is not None and s.image.suffix == ".jpg" for s in index.samples)


def test_voc_palette_masks_read_as_class_ids(voc_root):
    samples = open_dataset(voc_root, "train").samples
    ids = set(np.unique(np.stack([read_mask(s.mask) for s in samples])).tolist())
    assert ids <= {0, 3, 8, 12, 13, 17, 255}
    assert 255 in ids  # the void band survives reading


def test_folder_layout_reads_classes_txt(synthetic_root):
    index = open_dataset(synthetic_root, "val")
    assert index.layout == "folder"
    assert index.class_names == SYNTHETIC_CLASSES
    assert len(index.samples) == 8


def test_all_classes_keep_ids_and_protocol_size(synthetic_root):
    data = load_split(synthetic_root, "train", size=24)
    assert data.class_names == SYNTHETIC_CLASSES
    assert data.items[0].image.shape == (24, 24, 3)
    assert data.items[0].mask.shape == (24, 24)
    assert max(int(it.mask.max()) for it in data.items) < len(SYNTHETIC_CLASSES)


def test_one_class_makes_a_binary_task_and_keeps_void(voc_root):
    data = load_split(voc_root, "train", classes=["horse"], size=32)
    assert data.class_names == ("background", "horse")
    values = set(np.unique(np.stack([it.mask for it in data.items])).tolist())
    assert values <= {0, 1, 255}
    assert 1 in values and 255 in values


def test_several_classes_are_renumbered_in_the_given_order(voc_root):
    (task,) = make_tasks(VOC_CLASSES, ["sheep", "bird"])
    assert task.class_names == ("background", "sheep", "bird")
    mask = np.array([[0, 3, 17, 13, 255]], dtype=np.uint8)
    assert task.remap(mask).tolist() == [[0, 2, 1, 0, 255]]


def test_binary_per_class_uses_only_images_showing_the_class(voc_root):
    data = load_split(voc_root, "train", classes=["bird", "horse"], binary_per_class=True,
                      size=32)
    assert {t.name for t in data.tasks} == {"bird", "horse"}
    raw = {s.id: read_mask(s.mask) for s in open_dataset(voc_root, "train").samples}
    for item in data.items:
        cls, sid = item.id.split("/")
        assert (raw[sid] == VOC_CLASSES.index(cls)).any()
        assert set(np.unique(item.mask).tolist()) <= {0, 1, 255}
    with_bird = sum((m == 3).any() for m in raw.values())
    assert sum(it.task == "bird" for it in data.items) == with_bird


def test_unknown_class_is_an_input_error_listing_the_known_ones():
    with pytest.raises(InputError, match="unknown classes.*horse"):
        make_tasks(VOC_CLASSES, ["unicorn"])


def test_crop_square_removes_left_and_right_edges_of_a_landscape():
    a = np.arange(4 * 8).reshape(4, 8)
    assert crop_square(a).tolist() == a[:, 2:6].tolist()
    assert crop_square(a.T).shape == (4, 4)


def test_mask_resize_is_nearest_neighbour():
    mask = np.zeros((10, 10), np.uint8)
    mask[:, 5:] = 13
    mask[0, 0] = 255
    assert set(np.unique(resize_mask(mask, 7)).tolist()) <= {0, 13, 255}


def test_grayscale_and_rgba_images_are_converted(tmp_path):
    Image.fromarray(np.full((5, 6), 200, np.uint8), mode="L").save(tmp_path / "g.png")
    Image.fromarray(np.full((5, 6, 4), 100, np.uint8), mode="RGBA").save(tmp_path / "a.png")
    assert read_image(tmp_path / "g.png").shape == (5, 6, 3)
    assert read_image(tmp_path / "a.png")[0, 0].tolist() == [100, 100, 100]


def test_to_tensor_round_trips():
    img = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    assert np.array_equal(from_tensor(to_tensor(img)), img)


def _batch():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    mask = torch.from_numpy(rng.integers(0, 3, (4, 32, 32))).long()
    return to_tensor(img), mask


def test_augmentation_is_a_function_of_its_generator():
    x, y = _batch()
    a = augment_batch(x, y, np.random.default_rng(7))
    b = augment_batch(x, y, np.random.default_rng(7))
    c = augment_batch(x, y, np.random.default_rng(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_flip_only_mirrors_image_and_mask_together():
    x, y = _batch()
    cfg = AugmentConfig(flip=True, scale=(1.0, 1.0), max_shift=0.0, color_jitter=0.0)
    ax, ay = augment_batch(x, y, np.random.default_rng(3), cfg)
    for i in range(len(x)):
        flipped = torch.equal(ay[i], y[i].flip(-1))
        assert flipped or torch.equal(ay[i], y[i])
        assert torch.allclose(ax[i], x[i].flip(-1) if flipped else x[i], atol=1e-5)


def test_zooming_out_pads_the_mask_with_void():
    x, y = _batch()
    cfg = AugmentConfig(flip=False, scale=(0.6, 0.6), max_shift=0.0, color_jitter=0.0)
    _, ay = augment_batch(x, y, np.random.default_rng(0), cfg)
    assert (ay[:, 0, :] == 255).all() and (ay[:, 16, 16] != 255).all()


weizmann = SHARED_DATA / "weizmann_horse_voc"


@pytest.mark.skipif(not weizmann.is_dir(), reason=f"real data not present at {weizmann}")
def test_reads_the_real_weizmann_horse_voc_split():
    index = open_dataset(weizmann, "val")
    assert index.layout == "voc" and len(index.samples) == 50
    data = load_split(weizmann, "val", classes=["horse"], size=128)
    assert len(data.items) == 50
    masks = np.stack([it.mask for it in data.items])
    assert set(np.unique(masks).tolist()) <= {0, 1, 255}
    # horses fill a real share of the frame, neither nothing nor everything
    assert 0.1 < (masks == 1).mean() < 0.7
