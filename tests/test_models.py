"""Tests for segrefine.models: shape contract, trainability, determinism, registry errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segrefine.models import (
    SEGMENTERS,
    available_segmenters,
    build_segmenter,
    count_parameters,
)

NAMES = available_segmenters()
TINY = {"width": 4, "depth": 3}  # keeps every test well under a second on one core


@pytest.fixture(autouse=True)
def _one_thread():
    # The test machine is shared; one thread also keeps timings stable.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_registry_names():
    assert NAMES == sorted(["unet", "fcn", "deeplabv3plus", "pspnet"])
    assert set(SEGMENTERS) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("num_classes", "height", "width"), [(2, 64, 64), (5, 96, 64)])
def test_output_shape(name, num_classes, height, width):
    model = build_segmenter(name, in_channels=3, num_classes=num_classes, width=4, depth=4)
    out = model(torch.randn(2, 3, height, width))
    assert out.shape == (2, num_classes, height, width)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("name", NAMES)
def test_odd_size_and_channels(name):
    # Sizes that are not multiples of 2**depth, and a single-channel (grey) input.
    model = build_segmenter(name, in_channels=1, num_classes=3, **TINY)
    out = model(torch.randn(2, 1, 37, 50))
    assert out.shape == (2, 3, 37, 50)


@pytest.mark.parametrize("name", NAMES)
def test_training_steps_reduce_loss(name):
    torch.manual_seed(0)
    model = build_segmenter(name, num_classes=3, **TINY)
    x = torch.randn(2, 3, 32, 32)
    y = torch.randint(0, 3, (2, 32, 32))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(5):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", NAMES)
def test_eval_batch_of_one(name):
    model = build_segmenter(name, num_classes=2, **TINY).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 2, 32, 32)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_weights_and_outputs(name):
    x = torch.randn(1, 3, 32, 32)
    models = []
    for _ in range(2):
        torch.manual_seed(123)
        models.append(build_segmenter(name, **TINY).eval())
    a, b = (m.state_dict() for m in models)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        assert torch.equal(models[0](x), models[1](x))
    torch.manual_seed(124)
    other = build_segmenter(name, **TINY).state_dict()
    assert not all(torch.equal(a[k], other[k]) for k in a)


@pytest.mark.parametrize("name", NAMES)
def test_width_changes_parameter_count(name):
    small = count_parameters(build_segmenter(name, width=4, depth=3))
    large = count_parameters(build_segmenter(name, width=8, depth=3))
    assert 0 < small < large


def test_unet_size_matches_paper_scale():
    # The paper's U-Net (width 64) has ~31 M parameters; width 16 is 1/16 of that.
    n = count_parameters(build_segmenter("unet", width=16, depth=4))
    assert 0.5e6 < n < 2e6


def test_unknown_name_lists_known():
    with pytest.raises(ValueError) as info:
        build_segmenter("segformer")
    message = str(info.value)
    assert "segformer" in message
    assert all(name in message for name in NAMES)


@pytest.mark.parametrize(("kwargs", "word"), [({"width": 0}, "width"), ({"depth": 1}, "depth")])
def test_bad_sizes_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        build_segmenter("deeplabv3plus", **kwargs)


def test_config_is_recorded_and_rebuilds():
    model = build_segmenter("PSPNet", in_channels=1, num_classes=4, width=4, depth=2)
    config = model.segmenter_config
    assert config == {"name": "pspnet", "in_channels": 1, "num_classes": 4, "width": 4, "depth": 2}
    clone = build_segmenter(**config)
    clone.load_state_dict(model.state_dict())


def test_count_parameters_trainable_only():
    model = build_segmenter("fcn", **TINY)
    total = count_parameters(model)
    for p in model.stages[0].parameters():
        p.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) < total
    assert count_parameters(model) == total
