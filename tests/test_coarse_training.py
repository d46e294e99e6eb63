"""``train-refiner --coarse DIR``: a refiner learns the errors of the user's own model, through
its saved predictions, in any form the coarse-mask reader takes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from refiner_helpers import tiny_config
from scipy import ndimage

from segrefine.data.datasets import load_split
from segrefine.data.io import read_mask
from segrefine.diffusion import RefinerConfig, train_refiner
from segrefine.diffusion.coarse_views import coarse_priors, coarse_views, in_fold_note
from segrefine.errors import InputError


def _predictions(root, out, split, shift=0, form="ids"):
    """Masks 'a model' made: the truth moved by ``shift`` px, as class ids or 0/255 blobs."""
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted((root / "masks" / split).glob("*.png")):
        truth = np.roll(read_mask(path), shift, axis=1)
        if form == "soft":  # an object probability, as a matting tool would give it
            soft = ndimage.gaussian_filter((truth > 0).astype(float), 1.0)
            np.save(out / f"{path.stem}.npy", soft.astype(np.float32))
        else:
            Image.fromarray(truth).save(out / f"{path.stem}_mask.png")
    return out


def test_the_users_predictions_become_training_views(tmp_path, synthetic_root):
    train = load_split(synthetic_root, "train", None, size=32)
    folder = _predictions(synthetic_root, tmp_path / "coarse", "train", shift=2)
    priors = coarse_priors(folder, train, synthetic_root, "train", 32)
    assert priors.shape == (len(train.items), train.num_classes, 32, 32)
    expected = np.roll(train.items[0].mask, 0, axis=1)
    assert (priors[0].argmax(0) == expected).mean() > 0.8  # the prediction, not the truth
    assert (priors[0].argmax(0) != expected).any()
    views = coarse_views(priors, train)
    assert len(views["images"]) == 2 * len(train.items)
    assert np.array_equal(views["probs"][len(train.items)].numpy(), priors[0][..., ::-1])


def test_train_refiner_learns_from_coarse_masks_and_warns_when_they_are_in_fold(
    tmp_path, synthetic_root, capsys
):
    for split in ("train", "val"):
        _predictions(synthetic_root, tmp_path / "shifted", split, shift=3)
        _predictions(synthetic_root, tmp_path / "perfect", split, shift=0)
    cfg = tiny_config(synthetic_root, iterations=2, val_every=2, coarse=str(tmp_path / "shifted"))
    train_refiner(cfg, tmp_path / "run", device="cpu", progress=False)
    err = capsys.readouterr().err
    assert "--coarse masks: per-image IoU" in err and "warning" not in err
    cfg = tiny_config(synthetic_root, iterations=2, val_every=2, coarse=str(tmp_path / "perfect"))
    train_refiner(cfg, tmp_path / "run2", device="cpu", progress=False)
    assert "teach a refiner little" in capsys.readouterr().err


def test_a_missing_prediction_is_refused_before_the_run_folder_is_made(tmp_path, synthetic_root):
    folder = _predictions(synthetic_root, tmp_path / "coarse", "train", form="soft")
    next(folder.glob("*.npy")).unlink()
    cfg = tiny_config(synthetic_root, classes=["blob"], iterations=2, val_split=None,
                      coarse=str(folder))  # fmt: skip
    with pytest.raises(InputError, match="no mask for image"):
        train_refiner(cfg, tmp_path / "run", device="cpu", progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="--coarse"):
        RefinerConfig(data="x", coarse="c", segmenter="s")


def test_the_in_fold_note_speaks_only_for_near_perfect_or_far_better_masks():
    assert in_fold_note(98.5, None) and in_fold_note(92.0, 80.0)
    assert in_fold_note(85.0, 83.0) is None and in_fold_note(85.0, None) is None
    assert in_fold_note(60.0, 45.0) is None  # a weak model, on images unlike the others
