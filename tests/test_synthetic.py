"""Tests for the synthetic scene generator and its on-disk dataset writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from segrefine.data import synthetic
from segrefine.data.synthetic import SYNTHETIC_CLASSES, generate_scene, write_synthetic_dataset

N_SCENES = 60
WORM = SYNTHETIC_CLASSES.index("worm")


@pytest.fixture(scope="module")
def scenes() -> list[tuple[np.ndarray, np.ndarray]]:
    # One shared batch keeps the whole module well under the time budget.
    return [generate_scene(seed) for seed in range(N_SCENES)]


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


# --------------------------------------------------------------------------- generate_scene


def test_classes_start_with_background() -> None:
    assert SYNTHETIC_CLASSES[0] == "background"
    assert 4 <= len(SYNTHETIC_CLASSES) <= 5
    assert len(set(SYNTHETIC_CLASSES)) == len(SYNTHETIC_CLASSES)


def test_same_seed_same_scene_and_no_global_rng_use() -> None:
    np.random.seed(1)
    image_a, mask_a = generate_scene(7)
    np.random.seed(2)  # a different global state must not matter
    image_b, mask_b = generate_scene(7)
    np.testing.assert_array_equal(image_a, image_b)
    np.testing.assert_array_equal(mask_a, mask_b)


def test_different_seeds_differ(scenes) -> None:
    (image_a, _), (image_b, _) = scenes[0], scenes[1]
    assert not np.array_equal(image_a, image_b)
    images = {image.tobytes() for image, _ in scenes}
    assert len(images) == len(scenes)


@pytest.mark.parametrize("size", [32, 128, 97])
def test_shapes_dtypes_and_label_range(size: int) -> None:
    image, mask = generate_scene(3, size=size)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert mask.shape == (size, size) and mask.dtype == np.uint8
    assert mask.max() < len(SYNTHETIC_CLASSES)


def test_every_class_appears_and_some_scenes_are_empty(scenes) -> None:
    present = set()
    for _, mask in scenes:
        present.update(np.unique(mask).tolist())
    assert present == set(range(len(SYNTHETIC_CLASSES)))
    n_empty = sum(not mask.any() for _, mask in scenes)
    # ~10% of scenes are empty by design: some, but far from all.
    assert 1 <= n_empty <= N_SCENES // 4


def test_objects_overlap_touch_the_border_and_worms_are_thin(scenes) -> None:
    touching = 0
    for _, mask in scenes:
        # Two different object classes 4-adjacent means one object is painted against/over
        # another; same-class overlaps are invisible in the mask, so this undercounts.
        for a, b in ((mask[:, :-1], mask[:, 1:]), (mask[:-1, :], mask[1:, :])):
            if np.any((a > 0) & (b > 0) & (a != b)):
                touching += 1
                break
    assert touching >= 3

    border = np.concatenate([np.concatenate([m[0], m[-1], m[:, 0], m[:, -1]]) for _, m in scenes])
    assert (border > 0).any(), "no object is ever cut by the frame"

    # Distance of each worm pixel to the nearest non-worm pixel: a stroke w px wide has depths
    # up to about w / 2 (worms are 5-8 px wide; the mean depth measures 2.3). Where worms cross
    # or touch they are locally wider (a crossing measured 11 px deep), so the tail is bounded by
    # a percentile (measured 6.4), not the max.
    depths = np.concatenate(
        [ndimage.distance_transform_edt(mask == WORM)[mask == WORM] for _, mask in scenes]
    )
    assert depths.size > 0
    assert depths.mean() <= 3.0, "worms must stay a few pixels wide"
    assert np.percentile(depths, 99) <= 8.0, "worms must stay a few pixels wide"


def test_colour_alone_does_not_separate_objects_from_background(scenes) -> None:
    half = N_SCENES // 2
    fit, held_out = scenes[:half], scenes[half:]

    def pixels(batch):
        images = np.stack([image for image, _ in batch]).reshape(-1, 3).astype(np.int64)
        labels = np.stack([mask for _, mask in batch]).reshape(-1) > 0
        return images, labels

    x_fit, y_fit = pixels(fit)
    x_test, y_test = pixels(held_out)

    # 1) Over all scenes the mean colours differ by less than 0.3 of the per-channel pixel spread
    #    (about 55 grey levels; measured 0.08-0.13 here, 0.21 at worst on other batches of 60,
    #    since each scene's palette is a large random effect). For two Gaussians a mean shift of
    #    0.3 sigma lets the best threshold on a channel reach a balanced accuracy of only
    #    Phi(0.15) = 0.56, where 0.5 is chance.
    x_all, y_all = np.concatenate([x_fit, x_test]), np.concatenate([y_fit, y_test])
    spread = x_all.std(axis=0)
    diff = np.abs(x_all[y_all].mean(axis=0) - x_all[~y_all].mean(axis=0))
    assert np.all(diff < 0.3 * spread), (diff, spread)

    # 2) Stronger: the best per-pixel colour classifier there is at this resolution (a Bayes
    #    rule on 8x8x8 colour histograms, fit on one half of the scenes) stays close to chance
    #    on the other half (0.5 is chance; measured 0.55). Balanced accuracy ignores the
    #    background's majority.
    def bins(x: np.ndarray) -> np.ndarray:
        q = x // 32
        return q[:, 0] * 64 + q[:, 1] * 8 + q[:, 2]

    fit_bins = bins(x_fit)
    p_obj = np.bincount(fit_bins[y_fit], minlength=512) + 1.0
    p_bg = np.bincount(fit_bins[~y_fit], minlength=512) + 1.0
    test_bins = bins(x_test)
    predicted = (p_obj / p_obj.sum())[test_bins] > (p_bg / p_bg.sum())[test_bins]
    balanced = 0.5 * (predicted[y_test].mean() + (~predicted[~y_test]).mean())
    assert balanced < 0.62, balanced


@pytest.mark.parametrize(("seed", "size"), [(-1, 128), (0, 8), (1.5, 128), (0, True)])
def test_rejects_bad_arguments(seed, size) -> None:
    with pytest.raises(ValueError):
        generate_scene(seed, size=size)


# ------------------------------------------------------------------------ write_synthetic_dataset


def _names(root: Path, kind: str, split: str) -> list[str]:
    return sorted(p.name for p in (root / kind / split).iterdir())


def test_writes_the_generic_layout(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path / "ds", n_train=4, n_val=2, size=32, seed=5)
    assert root == tmp_path / "ds"
    assert (root / "classes.txt").read_text().splitlines() == list(SYNTHETIC_CLASSES)
    for split, n in (("train", 4), ("val", 2)):
        expected = [f"{split}_{i:04d}.png" for i in range(n)]
        assert _names(root, "images", split) == expected
        assert _names(root, "masks", split) == expected
    with Image.open(root / "images" / "train" / "train_0000.png") as img:
        assert img.mode == "RGB" and img.size == (32, 32)
    with Image.open(root / "masks" / "val" / "val_0001.png") as img:
        assert img.mode == "L" and img.size == (32, 32)
        assert np.asarray(img).max() < len(SYNTHETIC_CLASSES)
    params = json.loads((root / "synthetic.json").read_text())
    assert (params["n_train"], params["n_val"], params["size"], params["seed"]) == (4, 2, 32, 5)
    # No temporary sibling is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_pixels_on_disk_match_generate_scene(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path / "ds", n_train=1, n_val=1, size=32, seed=0)
    image, mask = generate_scene(synthetic._scene_seed(0, "val", 0), 32)
    np.testing.assert_array_equal(_read(root / "images" / "val" / "val_0000.png"), image)
    np.testing.assert_array_equal(_read(root / "masks" / "val" / "val_0000.png"), mask)


def test_second_call_is_a_no_op(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_synthetic_dataset(tmp_path / "ds", n_train=2, n_val=1, size=32)
    stamp = (root / "synthetic.json").stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a complete dataset")

    monkeypatch.setattr(synthetic, "generate_scene", fail)
    assert write_synthetic_dataset(root, n_train=2, n_val=1, size=32) == root
    assert (root / "synthetic.json").stat().st_mtime_ns == stamp


def test_val_is_independent_of_n_train_and_disjoint_from_train(tmp_path: Path) -> None:
    small = write_synthetic_dataset(tmp_path / "a", n_train=2, n_val=3, size=32, seed=1)
    large = write_synthetic_dataset(tmp_path / "b", n_train=5, n_val=3, size=32, seed=1)
    for name in _names(small, "images", "val"):
        for kind in ("images", "masks"):
            np.testing.assert_array_equal(
                _read(small / kind / "val" / name), _read(large / kind / "val" / name)
            )
    train = {_read(p).tobytes() for p in (large / "images" / "train").iterdir()}
    val = {_read(p).tobytes() for p in (large / "images" / "val").iterdir()}
    assert not train & val
    other_seed = write_synthetic_dataset(tmp_path / "c", n_train=0, n_val=1, size=32, seed=2)
    assert not np.array_equal(
        _read(other_seed / "images" / "val" / "val_0000.png"),
        _read(small / "images" / "val" / "val_0000.png"),
    )


def test_changed_parameters_replace_the_old_dataset(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path / "ds", n_train=3, n_val=1, size=32)
    write_synthetic_dataset(root, n_train=1, n_val=1, size=32)
    assert _names(root, "images", "train") == ["train_0000.png"]
    assert json.loads((root / "synthetic.json").read_text())["n_train"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_crash_leaves_no_partial_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = synthetic.generate_scene

    def flaky(seed: int, size: int = 128):
        calls.append(seed)
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        return real(seed, size)

    monkeypatch.setattr(synthetic, "generate_scene", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_synthetic_dataset(tmp_path / "ds", n_train=4, n_val=1, size=32)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_foreign_folder(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("not a dataset")
    with pytest.raises(FileExistsError):
        write_synthetic_dataset(root, n_train=1, n_val=1, size=32)
    assert (root / "notes.txt").read_text() == "not a dataset"
    # An existing empty folder is fine.
    empty = tmp_path / "empty"
    empty.mkdir()
    write_synthetic_dataset(empty, n_train=1, n_val=0, size=32)
    assert (empty / "classes.txt").is_file()
