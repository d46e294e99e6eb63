"""The README's snippets run as written (on the test fixtures standing in for the demo's
outputs)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_refine_another_models_masks_snippet_runs(tmp_path, monkeypatch, trained_refiner,
                                                  synthetic_root):  # fmt: skip
    (snippet,) = re.findall(r"```python\n(.*?)```", _section("Refine another model's masks"),
                            flags=re.S)  # fmt: skip
    shutil.copytree(trained_refiner[0], tmp_path / "demo_out" / "refiner")
    scene = sorted((synthetic_root / "images" / "val").iterdir())[0]
    shutil.copy(scene, tmp_path / "photo.png")
    truth = np.asarray(Image.open(synthetic_root / "masks" / "val" / f"{scene.stem}.png"))
    Image.fromarray(truth).save(tmp_path / "mask.png")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # our own README's code
    assert namespace["out"].labels.shape == truth.shape
