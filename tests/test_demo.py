"""The demo end to end, at a toy scale (the real one is `make demo`)."""

from __future__ import annotations

import json

from segrefine.demo import run_demo


def test_demo_trains_segmenter_and_refiner_and_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    report = run_demo(out, epochs=1, n_train=16, n_val=8, refiner_iterations=2, device="cpu",
                      progress=False)
    text = report.read_text()
    assert "U-Net + refiner" in text and "denoiser evaluations" in text
    results = json.loads((out / "benchmark" / "results.json").read_text())
    assert results["num_images"] == 8
    assert (out / "figure.png").exists() and (out / "benchmark" / "improved.png").exists()
