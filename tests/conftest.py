"""Shared fixtures: small generated datasets in both layouts (no downloads, fixed seeds)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segrefine.data.io import VOC_PALETTE
from segrefine.data.synthetic import generate_scene, write_synthetic_dataset

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A tiny synthetic dataset in the folder layout (16 train, 8 val, 32 px)."""
    root = tmp_path_factory.mktemp("synthetic") / "data"
    return write_synthetic_dataset(root, n_train=16, n_val=8, size=32, seed=0)


def write_voc(root: Path, splits: dict[str, int], size: int = 40, seed: int = 0) -> Path:
    """Write a small PASCAL VOC-layout dataset from synthetic scenes.

    Synthetic class k becomes VOC class ``(3, 8, 12, 13, 17)[k-1]`` (bird, cat, dog, horse,
    sheep) and a void band (255) is drawn along the object boundaries, as VOC does. Images
    are landscape (size x 1.5 size) so the square crop has work to do.
    """
    voc_ids = np.array([0, 3, 8, 12, 13, 17], dtype=np.uint8)
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    n = 0
    for split, count in splits.items():
        ids = []
        for _ in range(count):
            image, mask = generate_scene(seed * 1000 + n, size=size)
            wide = np.concatenate([image, image[:, : size // 2]], axis=1)
            wmask = voc_ids[np.concatenate([mask, mask[:, : size // 2]], axis=1)]
            edge = np.zeros_like(wmask, dtype=bool)
            edge[:, 1:] |= wmask[:, 1:] != wmask[:, :-1]
            wmask = wmask.copy()
            wmask[edge] = 255
            sid = f"2007_{n:06d}"
            Image.fromarray(wide).save(root / "JPEGImages" / f"{sid}.jpg", quality=95)
            m = Image.fromarray(wmask, mode="P")
            m.putpalette(VOC_PALETTE)
            m.save(root / "SegmentationClass" / f"{sid}.png")
            ids.append(sid)
            n += 1
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


@pytest.fixture()
def voc_root(tmp_path) -> Path:
    return write_voc(tmp_path / "VOC2012", {"train": 6, "val": 3})


@pytest.fixture()
def run_cli(monkeypatch, capsys):
    """Run the console entry point in-process: returns (exit code, stdout, stderr)."""
    from segrefine.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["segrefine", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, synthetic_root) -> Path:
    """A tiny segmenter run (2 epochs, width 4) on the synthetic fixture; read-only for tests."""
    from segrefine.segmenting.train import TrainConfig, train_segmenter

    out = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = TrainConfig(data=str(synthetic_root), size=32, width=4, depth=2, epochs=2,
                      batch_size=4, seed=0)
    train_segmenter(cfg, out, device="cpu", progress=False)
    return out


@pytest.fixture(scope="session")
def trained_refiner(tmp_path_factory, synthetic_root):
    """A tiny default-mode refiner trained on degradations of the synthetic fixture (150
    steps, width 8): (run folder, best validation scores); read-only for tests."""
    from segrefine.diffusion import RefinerConfig, train_refiner

    out = tmp_path_factory.mktemp("refiner") / "run"
    cfg = RefinerConfig(data=str(synthetic_root), size=32, width=8, depth=2, features=8,
                        head_width=8, batch_size=8, lr=3e-3, warmup=20, iterations=150,
                        val_every=150, band=0)
    best = train_refiner(cfg, out, device="cpu", progress=False)
    return out, best


@pytest.fixture(scope="session")
def binary_refiner(tmp_path_factory, synthetic_root) -> Path:
    """A tiny refiner for one object class ("blob" vs background), 2 training steps: enough
    for comparing code paths, which must agree whatever the weights."""
    from refiner_helpers import tiny_config

    from segrefine.diffusion import train_refiner

    out = tmp_path_factory.mktemp("binary") / "run"
    cfg = tiny_config(synthetic_root, classes=["blob"], iterations=2, val_split=None)
    train_refiner(cfg, out, device="cpu", progress=False)
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory, trained_run, trained_refiner):
    """The web app on a free port, serving the tiny fixture runs (or SEGREFINE_WEB_RUNS)."""
    import os
    import shutil

    from web_helpers import running

    from segrefine.web import create_app

    runs = os.environ.get("SEGREFINE_WEB_RUNS")
    if runs is None:
        root = tmp_path_factory.mktemp("webruns")
        shutil.copytree(trained_run, root / "tiny_unet")
        shutil.copytree(trained_refiner[0], root / "tiny_refiner")
        (root / "not_a_run").mkdir()
        (root / "not_a_run" / "config.json").write_text('{"kind": "something else"}')
        runs = root
    with running(create_app(runs, max_megapixels=1.0)) as url:
        yield url


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    """A tiny random Stable Diffusion folder (test_attention.build_tiny_sd), one per module."""
    pytest.importorskip("transformers")
    from test_attention import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd") / "sd")


@pytest.fixture(scope="module")
def model(sd_folder):
    """That folder loaded through the real loading path, on the CPU."""
    from test_attention import RES

    from segrefine.attention import load_attention_model

    return load_attention_model(sd_folder, device="cpu", resolution=RES)
