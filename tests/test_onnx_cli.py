"""--backend onnxruntime on the commands and the web app: one pipeline, two runtimes.

The tiny fixture runs are exported once (into a cache shared by this module's tests); the CLI
with each backend must write the same label maps, and the web app's model cache must hand
out models whose networks onnxruntime runs.
"""

from __future__ import annotations

import numpy as np

# not skipped without them: the dev extra installs them, and a CI that lacks them must fail
import onnxruntime  # noqa: F401
import onnxscript  # noqa: F401
import pytest
from PIL import Image


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp("onnx_cache")
        mp.setenv("SEGREFINE_CACHE", str(folder))
        yield folder


def test_refine_backends_write_the_same_masks(run_cli, tmp_path, synthetic_root, trained_run,
                                              trained_refiner):  # fmt: skip
    images = synthetic_root / "images" / "val"
    outs = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / backend
        code, _, err = run_cli("refine", "--images", images, "--out", out, "--segmenter",
                               trained_run, "--refiner", trained_refiner[0], "--device", "cpu",
                               "--backend", backend, "-q")  # fmt: skip
        assert code == 0, err
        outs[backend] = out
    names = sorted(p.name for p in outs["torch"].glob("*.png") if "uncertainty" not in p.stem)
    assert names and names == sorted(p.name for p in outs["onnxruntime"].glob("*.png")
                                     if not p.stem.endswith("_uncertainty"))  # fmt: skip
    same = [np.mean(np.asarray(Image.open(outs["torch"] / n)) ==
                    np.asarray(Image.open(outs["onnxruntime"] / n))) for n in names]  # fmt: skip
    assert min(same) >= 0.999


def test_bad_backend_is_one_line(run_cli, tmp_path, trained_run):
    code, _, err = run_cli("predict", "--segmenter", trained_run, "--images", tmp_path,
                           "--out", tmp_path / "o", "--backend", "tflite")  # fmt: skip
    assert code == 2 and "--backend" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_web_model_cache_uses_the_backend(trained_run):
    from segrefine.deploy.runtime import OrtSegmenterNet
    from segrefine.web.runs import ModelCache, scan_runs

    index = scan_runs(trained_run.parent)
    name = next(n for n in index.segmenters if not n.startswith("zoo:"))  # the zoo's listed too
    model = ModelCache(index, backend="onnxruntime").get("segmenter", name)
    assert isinstance(model.inference_module, OrtSegmenterNet)
