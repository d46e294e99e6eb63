"""Tests of segrefine.metrics; every expected value is computed by hand in a comment."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from segrefine.metrics import (
    SegmentationScores,
    boundary_accuracy,
    boundary_fscore,
    boundary_iou,
    confusion_matrix,
    format_table,
    image_iou,
    iou_from_confusion,
    mba_radii,
    scored_classes,
)

VOID = 255


def square(shape: tuple[int, int], rows: slice, cols: slice, label: int = 1) -> np.ndarray:
    """A background (0) image with one filled rectangle of ``label``."""
    img = np.zeros(shape, dtype=np.uint8)
    img[rows, cols] = label
    return img


# ----------------------------------------------------------------------------- scored classes


def test_scored_classes_binary_task_scores_only_the_object():
    assert scored_classes(2) == [1]


def test_scored_classes_multiclass_task_scores_every_class():
    assert scored_classes(3) == [0, 1, 2]


# ----------------------------------------------------------------------------- confusion / IoU


def test_confusion_matrix_hand_made_3x3_with_void_pixel():
    target = np.array([[0, 0, 1], [1, 2, 2], [VOID, 2, 0]])
    pred = np.array([[0, 1, 1], [1, 2, 0], [2, 2, 0]])
    # (truth, pred) pairs: (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) void (2,2) (0,0)
    expected = np.array([[2, 1, 0], [0, 2, 0], [1, 0, 2]])
    cm = confusion_matrix(pred, target, num_classes=3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, expected)


def test_confusion_matrix_rejects_prediction_out_of_range():
    target = np.array([[0, 1]])
    pred = np.array([[0, 3]])
    with pytest.raises(ValueError, match="pred"):
        confusion_matrix(pred, target, num_classes=2)


def test_confusion_matrix_accepts_any_prediction_in_void_pixels():
    target = np.array([[0, VOID]])
    pred = np.array([[0, 7]])  # 7 is out of range, but the pixel is void
    np.testing.assert_array_equal(confusion_matrix(pred, target, 2), [[1, 0], [0, 0]])


def test_confusion_matrix_rejects_float_labels():
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 2), dtype=int), 2)


def test_iou_from_confusion_absent_class_is_nan():
    cm = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
    # class 0: 3 / (4 + 3 - 3) = 3/4; class 1: 2 / (2 + 3 - 2) = 2/3; class 2: union 0 -> NaN
    iou = iou_from_confusion(cm)
    np.testing.assert_allclose(iou[:2], [3 / 4, 2 / 3])
    assert np.isnan(iou[2])


def test_absent_class_is_excluded_from_miou():
    scores = SegmentationScores(3, class_names=["bg", "cat", "dog"])
    scores.update(np.array([[0, 0, 0, 0, 1]]), np.array([[0, 0, 0, 1, 1]]))
    summary = scores.summary()
    # bg: 3 / 4, cat: 1 / 2, dog absent -> None; mIoU = (75 + 50) / 2
    assert summary["per_class_iou"] == {"bg": 75.0, "cat": 50.0, "dog": None}
    assert summary["miou"] == pytest.approx(62.5)


# ----------------------------------------------------------------------------- image IoU


def test_image_iou_binary_hand_computed():
    target = np.array([[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    pred = np.array([[0, 1, 1], [1, 1, 1], [0, 0, 0]])
    # 5 true and 5 predicted object pixels, 4 shared -> union 6 -> IoU 4/6
    assert image_iou(pred, target, num_classes=2) == pytest.approx(2 / 3)


def test_image_iou_both_empty_scores_one():
    empty = np.zeros((4, 4), dtype=np.uint8)
    assert image_iou(empty, empty, num_classes=2) == 1.0


def test_image_iou_empty_truth_with_prediction_scores_zero():
    target = np.zeros((4, 4), dtype=np.uint8)
    pred = square((4, 4), slice(0, 1), slice(0, 1))
    assert image_iou(pred, target, num_classes=2) == 0.0


def test_image_iou_averages_over_present_classes_only():
    target = np.array([[0, 0, 1], [1, 1, 1]])
    pred = np.array([[0, 1, 1], [1, 1, 1]])
    # class 0: 1 / 2, class 1: 4 / 5, class 2 absent from both -> not averaged (mean 0.65,
    # not 0.433 as if it scored 0 nor 0.767 as if it scored 1)
    assert image_iou(pred, target, num_classes=3) == pytest.approx(0.65)


def test_image_iou_explicit_classes_restrict_the_average():
    target = np.array([[0, 0, 1], [1, 1, 1]])
    pred = np.array([[0, 1, 1], [1, 1, 1]])
    # only class 1 (4 / 5) of the requested {1, 2} is present
    assert image_iou(pred, target, num_classes=3, classes=[1, 2]) == pytest.approx(0.8)


def test_image_iou_ignores_void_pixels():
    target = np.array([[1, 1], [VOID, 0]])
    pred = np.array([[1, 1], [1, 0]])
    # the predicted object pixel in void counts neither way: 2 shared / 2 union
    assert image_iou(pred, target, num_classes=2) == 1.0


# ----------------------------------------------------------------------------- boundary IoU


def test_boundary_iou_identical_masks_is_one():
    mask = square((20, 20), slice(4, 12), slice(5, 15))
    assert boundary_iou(mask, mask, num_classes=2) == 1.0


def test_boundary_iou_hand_computed_shifted_square():
    # 10x10: d = max(1, round(0.02 * 14.14)) = 1, so a boundary is the outer 1-pixel ring.
    # truth: rows 3-6 x cols 2-5, pred: rows 3-6 x cols 3-6. A 4x4 ring has 16 - 4 = 12 pixels.
    # shared ring pixels: rows 3 and 6 at cols 3, 4, 5 = 6 (the side columns 2, 5 vs 3, 6
    # never coincide) -> union 12 + 12 - 6 = 18 -> Boundary IoU 6/18 = 1/3 (mask IoU is 12/20).
    target = square((10, 10), slice(3, 7), slice(2, 6))
    pred = square((10, 10), slice(3, 7), slice(3, 7))
    assert boundary_iou(pred, target, num_classes=2) == pytest.approx(1 / 3)


def test_boundary_iou_counts_image_frame_as_boundary():
    # 10x10, d = 1. truth: whole image -> boundary is the frame, 100 - 8*8 = 36 pixels.
    # pred: rows 0-8 -> boundary rows 0 and 8 + cols 0, 9 of rows 1-7 = 10 + 10 + 14 = 34.
    # shared: row 0 (10) + cols 0, 9 of rows 1-8 (16) = 26 -> 26 / (36 + 34 - 26) = 26/44.
    target = np.ones((10, 10), dtype=np.uint8)
    pred = target.copy()
    pred[9] = 0
    assert boundary_iou(pred, target, num_classes=2) == pytest.approx(26 / 44)


def test_boundary_iou_is_stricter_than_iou_for_shifted_large_object():
    # 100x100, d = 3; a 60x60 square shifted by 5 columns keeps mask IoU 55/65 ~ 0.85.
    target = square((100, 100), slice(20, 80), slice(20, 80))
    pred = square((100, 100), slice(20, 80), slice(25, 85))
    mask_iou = image_iou(pred, target, num_classes=2)
    assert mask_iou == pytest.approx(55 / 65)
    assert boundary_iou(pred, target, num_classes=2) < mask_iou


def test_boundary_iou_ignores_prediction_inside_void():
    # the truth's rightmost square column is void; the prediction covers it. With void cut out
    # of both masks the two objects are the same 4x3 block, so their boundaries agree.
    target = square((10, 10), slice(3, 7), slice(2, 6))
    target[3:7, 5] = VOID
    pred = square((10, 10), slice(3, 7), slice(2, 6))
    assert boundary_iou(pred, target, num_classes=2) == 1.0


def _random_blobs(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Two random masks touching the image frame, to exercise the zero-padding."""
    rng = np.random.default_rng(0)
    target = ndimage.binary_opening(rng.random(shape) < 0.6).astype(np.uint8)
    pred = ndimage.binary_closing(rng.random(shape) < 0.6).astype(np.uint8)
    return pred, target


def _small_objects(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping rectangles far from the frame (the score works on a crop around them)."""
    return square(shape, slice(10, 17), slice(12, 20)), square(shape, slice(12, 18), slice(9, 19))


@pytest.mark.parametrize("make_masks", [_random_blobs, _small_objects], ids=["blobs", "small"])
def test_boundary_iou_matches_reference_zero_padded_erosion(make_masks):
    # Reference (Cheng et al.): pad with one ring of zeros, erode d times with a 3x3 square,
    # crop, subtract. 30x40 image: diagonal 50, ratio 0.04 -> d = 2.
    pred, target = make_masks((30, 40))

    def ref_boundary(mask: np.ndarray, d: int) -> np.ndarray:
        padded = np.pad(mask.astype(bool), 1)
        eroded = ndimage.binary_erosion(padded, np.ones((3, 3)), iterations=d)[1:-1, 1:-1]
        return mask.astype(bool) & ~eroded

    bp, bg = ref_boundary(pred, 2), ref_boundary(target, 2)
    expected = (bp & bg).sum() / (bp | bg).sum()
    got = boundary_iou(pred, target, num_classes=2, dilation_ratio=0.04)
    assert got == pytest.approx(expected)


# ----------------------------------------------------------------------------- boundary F


def test_boundary_fscore_identical_is_one():
    mask = square((20, 20), slice(4, 12), slice(5, 15))
    assert boundary_fscore(mask, mask, num_classes=2) == 1.0


def test_boundary_fscore_shift_within_tolerance_is_one():
    # 10x10: t = max(1, round(0.0075 * 14.14)) = 1; a one-column shift moves every contour
    # pixel by at most 1 from a contour pixel of the other mask -> P = R = 1.
    target = square((10, 10), slice(3, 7), slice(2, 6))
    pred = square((10, 10), slice(3, 7), slice(3, 7))
    assert boundary_fscore(pred, target, num_classes=2) == 1.0


def test_boundary_fscore_far_shift_is_below_half():
    # 10x10, t = 1. truth rows 2-5 x cols 1-4, pred shifted 4 columns to cols 5-8; each contour
    # is a 12-pixel ring. Only pred column 5 (4 pixels) lies within 1 of truth column 4, and
    # symmetrically: P = R = 4/12 -> F = 1/3.
    target = square((10, 10), slice(2, 6), slice(1, 5))
    pred = square((10, 10), slice(2, 6), slice(5, 9))
    f = boundary_fscore(pred, target, num_classes=2)
    assert f == pytest.approx(1 / 3)
    assert f < 0.5


def test_boundary_fscore_does_not_count_image_frame():
    # truth fills the image -> no contour; pred misses the last row -> contour is row 8.
    # One contour empty and the other not -> 0.0; both filling the image -> 1.0.
    target = np.ones((10, 10), dtype=np.uint8)
    pred = target.copy()
    pred[9] = 0
    assert boundary_fscore(pred, target, num_classes=2) == 0.0
    assert boundary_fscore(target, target, num_classes=2) == 1.0


# ----------------------------------------------------------------------------- accumulator


def test_segmentation_scores_summary_keys_and_percent_scaling():
    scores = SegmentationScores(num_classes=2)
    # image A: a perfect 2x2 object in 4x4 -> 1, 1, 1
    a = square((4, 4), slice(0, 2), slice(0, 2))
    assert scores.update(a, a) == {"image_iou": 1.0, "boundary_iou": 1.0, "boundary_f": 1.0,
                                   "mba": 1.0}  # fmt: skip
    # image B: empty truth, one false-positive pixel -> 0, 0, 0
    b_target = np.zeros((4, 4), dtype=np.uint8)
    b_pred = square((4, 4), slice(3, 4), slice(3, 4))
    assert scores.update(b_pred, b_target) == {
        "image_iou": 0.0,
        "boundary_iou": 0.0,
        "boundary_f": 0.0,
        "mba": None,  # a truth without a boundary has no band
    }
    summary = scores.summary()
    assert set(summary) == {
        "mean_image_iou",
        "miou",
        "per_class_iou",
        "boundary_iou",
        "boundary_f",
        "mba",
        "pixel_accuracy",
        "num_images",
    }
    assert summary["mba"] == pytest.approx(100.0)  # image B has no boundary: left out
    assert summary["num_images"] == 2
    assert summary["mean_image_iou"] == pytest.approx(50.0)
    assert summary["boundary_iou"] == pytest.approx(50.0)
    assert summary["boundary_f"] == pytest.approx(50.0)
    # accumulated cm: (0,0) = 12 + 15 = 27, (0,1) = 1, (1,1) = 4
    # class_0: 27/28, class_1: 4/5; pixel accuracy 31/32
    assert summary["per_class_iou"]["class_0"] == pytest.approx(100 * 27 / 28)
    assert summary["per_class_iou"]["class_1"] == pytest.approx(80.0)
    assert summary["miou"] == pytest.approx(100 * (27 / 28 + 4 / 5) / 2)
    assert summary["pixel_accuracy"] == pytest.approx(100 * 31 / 32)
    assert scores.per_image == [
        {"image_iou": 1.0, "boundary_iou": 1.0, "boundary_f": 1.0, "mba": 1.0},
        {"image_iou": 0.0, "boundary_iou": 0.0, "boundary_f": 0.0, "mba": None},
    ]


def test_segmentation_scores_summary_without_images_raises():
    with pytest.raises(ValueError, match="no images"):
        SegmentationScores(2).summary()


def test_segmentation_scores_rejects_wrong_number_of_class_names():
    with pytest.raises(ValueError, match="class names"):
        SegmentationScores(3, class_names=["bg", "cat"])


def test_format_table_lists_metrics_and_per_class_rows():
    summary = {
        "mean_image_iou": 50.0,
        "miou": 62.5,
        "per_class_iou": {"bg": 75.0, "cat": 50.0, "dog": None},
        "boundary_iou": 12.3456,
        "boundary_f": math.nan,
        "pixel_accuracy": 80.0,
        "num_images": 2,
    }
    lines = format_table(summary).splitlines()
    rows = {line.split("|")[0].strip(): line.split("|")[1].strip() for line in lines if "|" in line}
    assert rows["images"] == "2"
    assert rows["mIoU"] == "62.50"
    assert rows["boundary IoU"] == "12.35"
    assert rows["boundary F"] == "n/a"
    assert rows["IoU cat"] == "50.00"
    assert rows["IoU dog"] == "n/a"


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    "score",
    [
        lambda p, t: confusion_matrix(p, t, 2),
        lambda p, t: image_iou(p, t, 2),
        lambda p, t: boundary_iou(p, t, 2),
        lambda p, t: boundary_fscore(p, t, 2),
        lambda p, t: SegmentationScores(2).update(p, t),
    ],
    ids=["confusion_matrix", "image_iou", "boundary_iou", "boundary_fscore", "update"],
)
def test_shape_mismatch_raises_naming_both_shapes(score):
    pred = np.zeros((3, 3), dtype=np.uint8)
    target = np.zeros((3, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(3, 4\)"):
        score(pred, target)


# ----------------------------------------------------------------------------- mBA


def test_mba_radii_follow_cascadepsp():
    assert mba_radii(128, 128) == [1, 1, 1, 1, 1]  # below 600 px a side every radius is 1
    assert mba_radii(1000, 1000) == [1, 2, 3, 4, 5]  # R = 6.67: 1 + int(5.67 / 5 * i)
    assert mba_radii(3000, 3000) == [1, 4, 8, 12, 16]  # R = 20


def test_mba_is_one_for_a_perfect_mask_and_needs_a_boundary():
    target = square((12, 12), slice(3, 9), slice(3, 9))
    assert boundary_accuracy(target, target) == 1.0
    # the band at r = 1: the square's 20 edge pixels and the 24 pixels beside its sides (its
    # diagonal neighbours are sqrt(2) away); predicting nothing gets the outer 24 right
    assert boundary_accuracy(np.zeros((12, 12), np.uint8), target) == pytest.approx(24 / 44)
    assert boundary_accuracy(np.zeros((5, 5), np.uint8), np.zeros((5, 5), np.uint8)) is None


def test_mba_scores_a_one_pixel_shift_by_hand():
    # truth: columns 0-4 class 0, 5-9 class 1 (a vertical edge); at r = 1 the band is columns
    # 4 and 5. A prediction shifted right by one column gets column 5 wrong: accuracy 1/2.
    target = np.zeros((6, 10), np.uint8)
    target[:, 5:] = 1
    pred = np.zeros((6, 10), np.uint8)
    pred[:, 6:] = 1
    assert boundary_accuracy(pred, target) == pytest.approx(0.5)
    # at r = 2 the band is columns 3-6: one of four columns wrong
    assert boundary_accuracy(pred, target, radii=[2]) == pytest.approx(0.75)
    assert boundary_accuracy(pred, target, radii=[1, 2]) == pytest.approx(0.625)


def test_mba_handles_several_classes_and_void():
    # three vertical stripes 0 | 1 | 2; bands at r = 1 around both edges
    target = np.repeat(np.array([[0] * 4 + [1] * 4 + [2] * 4]), 5, axis=0).astype(np.uint8)
    pred = target.copy()
    pred[:, 8] = 1  # the second edge moves right by one column: column 8 wrong
    # band: columns 3, 4 (first edge) and 7, 8 (second edge) -> 1 wrong column of 4
    assert boundary_accuracy(pred, target) == pytest.approx(0.75)
    # void truth neither makes a boundary nor is scored: a void stripe between two classes
    voided = np.repeat(np.array([[0] * 4 + [255] * 4 + [1] * 4]), 5, axis=0).astype(np.uint8)
    assert boundary_accuracy(np.zeros_like(voided), voided) is None  # 4 px apart, r = 1
    assert boundary_accuracy(np.zeros_like(voided), voided, radii=[5]) == pytest.approx(0.5)
