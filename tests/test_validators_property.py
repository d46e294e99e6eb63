"""Property-based tests of the input validators: whatever a user, a shared run folder or a
browser sends, the answer is the value or one :class:`InputError`, never another exception.
Examples are derandomised, so the suite stays deterministic."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segrefine.errors import InputError

SETTINGS = settings(max_examples=60, derandomize=True, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip

# JSON values as a browser or a hand-edited config.json can hold them
numbers = st.one_of(st.integers(-10**15, 10**15), st.floats(allow_nan=True, allow_infinity=True))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12)  # fmt: skip
points = st.lists(st.one_of(st.lists(numbers, min_size=2, max_size=2), json_values), max_size=6)
strokes = st.lists(st.one_of(
    st.fixed_dictionaries({"label": json_values, "width": json_values, "points": points}),
    st.fixed_dictionaries({"label": st.integers(0, 300), "width": numbers,
                           "points": st.lists(st.lists(numbers, min_size=2, max_size=2),
                                              max_size=5)}),
    json_values), max_size=4)  # fmt: skip


@SETTINGS
@given(strokes)
def test_scribbles_are_drawn_or_refused_in_one_line(value):
    from segrefine.web.scribbles import rasterize_scribbles

    try:
        out = rasterize_scribbles(value, (40, 30))
    except InputError as err:
        assert "\n" not in str(err)
        return
    assert out.shape == (40, 30) and out.dtype == np.uint8


spec_fields = st.fixed_dictionaries(
    {"class_names": st.one_of(st.lists(st.text(max_size=5), max_size=4), json_values),
     "size": st.one_of(st.integers(-5, 10**7), json_values)},
    optional={"model": st.one_of(st.fixed_dictionaries(
        {"name": st.sampled_from(["unet", "fcn", "nope"]),
         "width": st.one_of(st.integers(-3, 10**7), json_values),
         "depth": st.one_of(st.integers(-3, 200), json_values)}), json_values),
        "classes": json_values, "binary_per_class": json_values, "train": json_values})


@SETTINGS
@given(spec_fields)
def test_a_shared_segmenter_config_is_a_spec_or_one_error(config):
    from segrefine.segmenting.segmenter import Segmenter, SegmenterSpec

    try:
        spec = SegmenterSpec.from_json(config, "config.json")
    except InputError as err:
        assert "config.json" in str(err)
        return
    # whatever passed is small enough to build at once
    assert Segmenter.from_spec(spec, "cpu").model is not None


refiner_fields = st.fixed_dictionaries(
    {"class_names": st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=3),
     "size": st.one_of(st.integers(-5, 10**6), json_values)},
    optional={"mode": st.one_of(st.sampled_from(["default", "paper", "bogus"]), json_values),
              "network": st.one_of(st.dictionaries(
                  st.sampled_from(["width", "depth", "features", "head_width", "band"]),
                  st.one_of(st.integers(-3, 10**7), json_values), max_size=5), json_values),
              "schedule": json_values, "inference": st.one_of(st.dictionaries(
                  st.sampled_from(["steps", "strength", "samples", "flip"]),
                  st.one_of(st.integers(-3, 10**9), json_values), max_size=4), json_values),
              "calibration": st.one_of(st.dictionaries(st.just("temperature"), st.one_of(
                  st.floats(allow_nan=True), json_values)), json_values)})


@SETTINGS
@given(refiner_fields)
def test_a_shared_refiner_config_is_a_spec_or_one_error(config):
    from segrefine.diffusion.refiner import Refiner, RefinerSpec

    try:
        spec = RefinerSpec.from_json(config, "config.json")
        refiner = Refiner.from_spec(spec, "cpu")
    except InputError as err:
        assert "\n" not in str(err)
        return
    assert refiner.num_classes == len(config["class_names"])


@SETTINGS
@given(st.binary(max_size=300), st.sampled_from(["a.png", "b.jpg", "c", "d.tif"]))
def test_an_upload_is_an_image_or_one_error(data, name):
    from segrefine.web.pipeline import decode_upload

    try:
        image = decode_upload(data, name)
    except InputError as err:
        assert name in str(err)
        return
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


@SETTINGS
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=12,
                max_size=12), st.sampled_from([(2, 2, 3), (3, 2, 2), (1, 3, 4), (12,)]))
def test_probability_maps_are_accepted_only_when_they_are_distributions(values, shape):
    from segrefine.diffusion.onehot import check_probs

    probs = np.asarray(values, np.float32).reshape(shape)
    try:
        check_probs(probs, 2, path="p.npy")
    except InputError as err:
        assert "p.npy" in str(err)
        return
    assert probs.shape[0] == 2 and np.isfinite(probs).all() and (probs >= 0).all()
    assert np.allclose(probs.sum(0), 1, atol=1e-2)



@pytest.mark.parametrize("points", [[], [[1, 2, 3], [4, 5, 6]], [1, 2]])
def test_a_stroke_without_x_y_pairs_is_refused(points):
    from segrefine.web.scribbles import rasterize_scribbles

    with pytest.raises(InputError, match="list of \\[x, y\\] pairs"):
        rasterize_scribbles([{"label": 0, "width": 1, "points": points}], (40, 30))
