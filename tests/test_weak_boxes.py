"""Pseudo-masks from boxes: GrabCut inside each box, a dataset root train-segmenter takes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segrefine.data.io import VOID
from segrefine.errors import InputError
from segrefine.weak import Box, boxes_from_mask, pseudo_mask_from_boxes, read_boxes


def _square_scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A flat-coloured square on a contrasting, mildly noisy background, and its mask."""
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal((40, 90, 200), 12, (96, 96, 3)), 0, 255)
    image[30:70, 24:60] = np.clip(rng.normal((230, 200, 30), 12, (40, 36, 3)), 0, 255)
    mask = np.zeros((96, 96), np.uint8)
    mask[30:70, 24:60] = 1
    return image.astype(np.uint8), mask


def test_grabcut_in_a_loose_box_recovers_the_square():
    image, mask = _square_scene()
    pseudo = pseudo_mask_from_boxes(image, [Box(1, 14, 20, 58, 60)], void_ring=0)
    fg, truth = pseudo == 1, mask == 1
    assert (fg & truth).sum() / (fg | truth).sum() > 0.9  # the box alone scores 0.41
    assert (pseudo[:20] == 0).all() and (pseudo[:, 72:] == 0).all()  # outside: background


def test_baselines_and_the_void_ring():
    image, _ = _square_scene()
    box = Box(1, 10, 20, 40, 30)
    assert (pseudo_mask_from_boxes(image, [box], "box", void_ring=0)[20:50, 10:50] == 1).all()
    ellipse = pseudo_mask_from_boxes(image, [box], "ellipse", void_ring=0)
    assert ellipse[35, 30] == 1 and ellipse[20, 10] == 0  # the centre in, a corner out
    ringed = pseudo_mask_from_boxes(image, [box], "box", void_ring=2)
    assert (ringed[19:21, 30] == VOID).all() and ringed[35, 30] == 1 and ringed[5, 5] == 0


def test_a_smaller_box_inside_a_larger_one_keeps_its_class():
    image = np.zeros((60, 60, 3), np.uint8)
    out = pseudo_mask_from_boxes(image, [Box(2, 20, 20, 10, 10), Box(1, 0, 0, 60, 60)], "box",
                                 void_ring=0)  # fmt: skip
    assert out[25, 25] == 2 and out[5, 5] == 1


def test_boxes_are_simulated_per_connected_component():
    mask = np.zeros((100, 100), np.uint8)
    mask[10:20, 10:30] = 1
    mask[50:90, 60:70] = 1
    mask[0, 99] = 2  # one pixel: under the minimum component size
    mask[95:, :] = VOID
    boxes = sorted(boxes_from_mask(mask), key=lambda b: b.y)
    assert boxes == [Box(1, 10, 10, 20, 10), Box(1, 60, 50, 10, 40)]


@pytest.mark.parametrize("content, message", [
    ("not json", "not valid JSON"),
    ('{"img": [{"class": "dog", "x": 1, "y": 1, "w": 5, "h": 5}]}',
     r"img\[0\]: unknown class 'dog'"),
    ('{"img": [{"class": "cat", "x": 30, "y": 1, "w": 5, "h": 5}]}', "outside the 32x24 image"),
    ('{"img": [{"class": "cat", "x": 1, "y": 1, "w": -5, "h": 5}]}', "is not positive"),
    ('{"img": [{"class": "cat", "x": 1, "y": 1, "w": 5}]}', "needs class, x, y, w and h"),
    ('{"img": [{"class": "cat", "x": NaN, "y": 1, "w": 5, "h": 5}]}', "must be numbers"),
    ('{"other": []}', "an image the split does not have: 'other'"),
])  # fmt: skip
def test_bad_boxes_files_are_one_line_naming_the_file_and_entry(tmp_path, content, message):
    path = tmp_path / "boxes.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as err:
        read_boxes(path, ("background", "cat"), {"img": (24, 32)})
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_pseudo_mask_dataset_trains_a_segmenter(run_cli, tmp_path, synthetic_root):
    out = tmp_path / "pseudo"
    code, stdout, err = run_cli("pseudo-masks", "--data", synthetic_root, "--simulate-from-masks",
                                "--out", out, "-q")  # fmt: skip
    assert code == 0, err
    assert "pseudo-masks vs the real masks" in stdout
    report = json.loads((out / "pseudo.json").read_text())
    assert report["num_images"] == 16 and 0 < report["quality"]["miou"] <= 100
    masks = sorted((out / "masks" / "train").iterdir())
    assert len(masks) == 16 and set(np.unique(np.asarray(Image.open(masks[0])))) <= {
        0, 1, 2, 3, 4, VOID}
    real_val = np.asarray(Image.open(synthetic_root / "masks" / "val" / "val_0000.png"))
    assert np.array_equal(np.asarray(Image.open(out / "masks" / "val" / "val_0000.png")),
                          real_val)  # validated against the truth  # fmt: skip
    boxes = json.loads((out / "boxes.json").read_text())  # re-usable as a boxes file
    code, _, err = run_cli("pseudo-masks", "--data", synthetic_root, "--boxes",
                           out / "boxes.json", "--method", "box", "--out", tmp_path / "again",
                           "-q")  # fmt: skip
    assert code == 0, err and len(boxes) == 16
    code, _, err = run_cli("train-segmenter", "--data", out, "--out", tmp_path / "run",
                           "--epochs", "1", "--size", "32", "--width", "4", "--depth", "2",
                           "--batch-size", "4", "--device", "cpu", "-q")  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli("pseudo-masks", "--data", synthetic_root, "--simulate-from-masks",
                           "--out", out, "-q")  # fmt: skip
    assert code == 2 and "not empty" in err


def test_a_bad_boxes_file_leaves_nothing_behind(run_cli, tmp_path, synthetic_root):
    (tmp_path / "boxes.json").write_text('{"train_0000": [{"class": "nope", "x": 0, "y": 0, '
                                         '"w": 4, "h": 4}]}')  # fmt: skip
    code, _, err = run_cli("pseudo-masks", "--data", synthetic_root, "--boxes",
                           tmp_path / "boxes.json", "--out", tmp_path / "pseudo")  # fmt: skip
    assert code == 2 and "train_0000[0]: unknown class 'nope'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boxes.json"]


def _squares_root(root, n: int, seed: int = 0):
    """Flat squares of one class on varied flat backgrounds: what a segmenter learns easily
    and a box-as-mask pseudo-mask gets wrong (the box is drawn 40% larger)."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("val", 4)):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i in range(count):
            image = np.empty((40, 40, 3), np.uint8)
            image[:] = rng.integers(0, 120, 3)
            mask = np.zeros((40, 40), np.uint8)
            y, x, s = *rng.integers(6, 20, 2), int(rng.integers(10, 14))
            image[y : y + s, x : x + s] = (240, 220, 40)
            mask[y : y + s, x : x + s] = 1
            Image.fromarray(image).save(root / "images" / split / f"{split}{i:02d}.png")
            Image.fromarray(mask).save(root / "masks" / split / f"{split}{i:02d}.png")
    (root / "classes.txt").write_text("background\nsquare\n")
    return root


def test_a_round_cleans_up_deliberately_noisy_pseudo_masks(tmp_path):
    """Pseudo-masks with a quarter of their pixels flipped at random: segmenters trained on
    the other fold learn the consistent part (yellow is square) and re-make them cleaner."""
    from segrefine.data.datasets import load_split
    from segrefine.segmenting.train import TrainConfig
    from segrefine.weak import pseudo_mask_quality
    from segrefine.weak.rounds import allowed_classes, one_round

    root = _squares_root(tmp_path / "pseudo", 24)
    truth = load_split(root, "train", None, False, size=None)
    rng = np.random.default_rng(1)
    noisy = []
    for it in truth.items:
        flip = rng.random(it.mask.shape) < 0.25
        noisy.append(np.where(flip, 1 - it.mask, it.mask).astype(np.uint8))
        Image.fromarray(noisy[-1]).save(root / "masks" / "train" / f"{it.id}.png")
    allowed = {it.id: allowed_classes(it.mask.shape, 2, tags={1}) for it in truth.items}
    cfg = TrainConfig(data=str(root), size=40, width=8, depth=2, epochs=30, batch_size=4,
                      augment=False, seed=0)  # fmt: skip
    cleaner = one_round(root, "train", truth.items, allowed, cfg)
    masks = [it.mask for it in truth.items]
    before = pseudo_mask_quality(noisy, masks, truth.class_names)["mean_image_iou"]
    after = pseudo_mask_quality(cleaner, masks, truth.class_names)["mean_image_iou"]
    assert after > before + 20, (before, after)


def test_rounds_rewrite_the_pseudo_masks_and_report_each_round(tmp_path):
    from segrefine.weak import write_pseudo_dataset

    data = _squares_root(tmp_path / "data", 8)
    report = write_pseudo_dataset(data, tmp_path / "pseudo", simulate=True, method="box",
                                  rounds=2, round_epochs=1, progress=False,
                                  round_settings={"size": 40, "width": 4, "depth": 2,
                                                  "batch_size": 4})  # fmt: skip
    assert report["rounds"] == 2 and len(report["quality_by_round"]) == 3
    assert report["quality_by_round"][-1] == report["quality"]
    with pytest.raises(InputError, match="--rounds"):
        write_pseudo_dataset(data, tmp_path / "x", simulate=True, rounds=11)
