"""ONNX export and the onnxruntime backend: the same pipeline, the same masks.

Tiny networks of every segmenter architecture and both refiner modes are exported, and the
pipeline is run with each backend on a small image; labels, probabilities and uncertainty must
agree within the tolerances the issue sets (>= 99.9% of labels, probabilities within 1e-3).
"""

from __future__ import annotations

import json

import numpy as np

# not skipped without them: the dev extra installs them, and a CI that lacks them must fail
import onnxruntime  # noqa: F401
import onnxscript  # noqa: F401
import pytest
import torch

from segrefine import Segmenter
from segrefine.deploy import SIDECAR, export_onnx, use_backend
from segrefine.deploy.runtime import OrtConditionalDenoiser
from segrefine.errors import InputError
from segrefine.segmenting.segmenter import SegmenterSpec
from tests.refiner_helpers import tiny_refiner

ARCHITECTURES = ("unet", "fcn", "deeplabv3plus", "pspnet")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGREFINE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def image(h=45, w=70, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    im = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    im[h // 3 : 2 * h // 3, w // 4 : 3 * w // 4] = (220, 40, 40)  # an object with edges
    return im


def tiny_segmenter(name: str) -> Segmenter:
    torch.manual_seed(0)
    spec = SegmenterSpec(class_names=("a", "b", "c"), size=32,
                         model={"name": name, "width": 8, "depth": 2})  # fmt: skip
    seg = Segmenter.from_spec(spec, "cpu")
    for p in seg.model.parameters():  # untrained weights predict a flat map: make it vary
        p.data.normal_(0, 0.3)
    seg.prepare_inference()
    return seg


def agree(a: np.ndarray, b: np.ndarray, labels_axis: int = 0) -> None:
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 1e-3
    same = (a.argmax(labels_axis) == b.argmax(labels_axis)).mean()
    assert same >= 0.999


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_segmenter_backends_agree(name, cache):
    seg = tiny_segmenter(name)
    ims = [image(), image(37, 23, seed=1)]  # two working sizes, batch of one each
    torch_probs = seg.predict_batch(ims)
    use_backend(seg, "onnxruntime")  # exported into the cache
    ort_probs = seg.predict_batch(ims)
    for a, b in zip(torch_probs, ort_probs, strict=True):
        agree(a, b)
    use_backend(seg, "torch")  # and back
    np.testing.assert_array_equal(seg.predict_batch(ims)[0], torch_probs[0])
    (folder,) = (cache / "onnx").iterdir()
    stamp = (folder / "segmenter.onnx").stat().st_mtime_ns
    use_backend(tiny_segmenter(name), "onnxruntime")  # same weights: the cache's graphs
    assert [p.name for p in (cache / "onnx").iterdir()] == [folder.name]
    assert (folder / "segmenter.onnx").stat().st_mtime_ns == stamp


def trained_looking_refiner(**kw):
    ref = tiny_refiner(**kw)
    for p in ref.net.parameters():  # an untrained head adds nothing: make it correct
        p.data.normal_(0, 0.2)
    ref.prepare_inference()
    ref.bf16 = False
    return ref


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A banded default-mode refiner and its graphs, exported once for the tests below."""
    ref = trained_looking_refiner(band=2)
    return ref, export_onnx(ref, tmp_path_factory.mktemp("onnx") / "graphs", source="test")


def test_default_refiner_backends_agree(exported):
    ref, folder = exported
    im = image()
    probs = tiny_segmenter("unet").predict(im)
    a = ref.refine(im, probs, samples=3, steps=2, seed=3)
    use_backend(ref, "onnxruntime", folder=folder)
    try:
        b = ref.refine(im, probs, samples=3, steps=2, seed=3)
        assert ref.inference_module.__class__.__name__ == "OrtConditionalDenoiser"
    finally:
        use_backend(ref, "torch")
    agree(a.probs, b.probs)
    assert (a.labels == b.labels).mean() >= 0.999
    assert np.abs(a.uncertainty - b.uncertainty).max() <= 1e-3


def test_unbanded_head_agrees(exported):
    # a refiner trained without a band runs the same graph with a band of ones
    ref, folder = exported
    net = ref.inference_module
    ort = OrtConditionalDenoiser(folder, 1, band=0)
    probs = torch.softmax(torch.randn(1, 3, 16, 24), 1)
    image_t = torch.randn(1, 3, 16, 24)
    with torch.no_grad():
        features = net.encode(image_t, probs)
        x, t = torch.randn(2, 3, 16, 24), torch.full((2,), 200)
        want = net.head(features, x, t, (torch.log(probs.clamp_min(1e-4)), None))
    assert ort.prior_terms(probs)[1] is None
    got = ort.head(ort.encode(image_t, probs), x, t, ort.prior_terms(probs))
    assert torch.allclose(want, got, atol=1e-4)


def test_export_folder_and_sidecar(exported, tmp_path):
    ref, out = exported
    assert sorted(p.name for p in out.iterdir()) == ["encoder.onnx", "head.onnx", SIDECAR]
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]  # none left
    side = json.loads((out / SIDECAR).read_text())
    assert side["kind"] == "refiner" and side["refiner"]["band"] == 2
    assert side["graphs"]["head"]["inputs"] == ["features", "x_t", "t", "log_prior", "band"]
    assert len(side["refiner"]["schedule"]["alphas_cumprod"]) == 1000
    with pytest.raises(InputError, match="not empty"):
        export_onnx(ref, out)


def test_stale_export_refused(exported):
    _, folder = exported
    other = trained_looking_refiner(band=2)
    with torch.no_grad():
        other.net.out.bias += 1  # other weights than the export's
    with pytest.raises(InputError, match="other weights"):
        use_backend(other, "onnxruntime", folder=folder)


def test_paper_refiner_backends_agree():
    # the paper mode's DDPM U-Net (diffusers UNet2DModel) exports too
    ref = tiny_refiner(mode="paper")
    ref.prepare_inference()
    ref.bf16 = False
    im, probs = image(), tiny_segmenter("fcn").predict(image())
    a = ref.refine(im, probs, samples=2, steps=2, seed=1)
    use_backend(ref, "onnxruntime")
    b = ref.refine(im, probs, samples=2, steps=2, seed=1)
    assert (a.labels == b.labels).mean() >= 0.999


def test_unknown_backend():
    with pytest.raises(InputError, match="unknown backend"):
        use_backend(tiny_segmenter("fcn"), "tensorrt")


def test_numpy_reference_matches_pipeline(exported):
    # docs/onnx_reference.py, fed the draws torch's generator makes, gives the pipeline's
    # numbers at working size: the sidecar and the docs say all there is to know
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "docs" / "onnx_reference.py"
    spec = importlib.util.spec_from_file_location("onnx_reference", path)
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    ref, folder = exported
    numpy_ref = reference.Refiner(folder)
    ref.temperature = numpy_ref.r["temperature"] = 1.5  # the calibration step too
    im = image(32, 48)
    probs = tiny_segmenter("unet").predict(im)
    k, steps, seed = 3, 2, 5
    gen = torch.Generator().manual_seed(seed)  # the order the default sampler draws in
    u = torch.rand((k, 1, 32, 48), generator=gen).numpy()
    noise = torch.randn((k, 3, 32, 48), generator=gen).numpy()
    x = torch.from_numpy(((im / 255.0 - 0.5) / 0.25).transpose(2, 0, 1)[None]).float()
    try:
        want, unc = ref.refine_tensors(x, torch.from_numpy(probs)[None], steps=steps,
                                       samples=k, seed=seed, flip=False)  # fmt: skip
    finally:
        ref.temperature = 1.0
    got, got_unc = numpy_ref.refine(im, probs, samples=k, steps=steps, u=u, noise=noise)
    assert np.abs(got - probs).max() > 0.05  # the head did change the prior
    assert np.abs(want[0].numpy() - got).max() <= 1e-3
    assert np.abs(unc[0].numpy() - got_unc).max() <= 1e-3
    other, _ = numpy_ref.refine(im, probs, samples=k, steps=steps, u=u, noise=noise[::-1])
    assert np.abs(want[0].numpy() - other).max() > 1e-2  # the comparison can fail


def test_graph_calls_reach_forward_hooks():
    # the web app cancels a job from a hook on every network call: onnxruntime's too
    seg = use_backend(tiny_segmenter("fcn"), "onnxruntime")
    calls = []
    handle = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, args: calls.append(type(module).__name__)
    )
    try:
        seg.predict(image())
    finally:
        handle.remove()
    assert "_Graph" in calls
