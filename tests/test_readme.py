"""The README runs as written: its Python snippets on the test fixtures standing in for the
demo's outputs, and every `segrefine` command line it shows against the real CLI's options."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


@pytest.fixture()
def demo_out(tmp_path, monkeypatch, trained_run, trained_refiner, synthetic_root):
    """A working directory laid out like one after `make demo`, from the tiny fixtures."""
    shutil.copytree(trained_run, tmp_path / "demo_out" / "segmenter")
    shutil.copytree(trained_refiner[0], tmp_path / "demo_out" / "refiner")
    shutil.copytree(synthetic_root, tmp_path / "demo_out" / "data")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(snippet: str) -> dict:
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # our own README's code
    return namespace


def test_refine_another_models_masks_snippet_runs(demo_out, synthetic_root):
    (snippet,) = _blocks(_section("Refine another model's masks"), "python")
    scene = sorted((synthetic_root / "images" / "val").iterdir())[0]
    shutil.copy(scene, demo_out / "photo.png")
    truth = np.asarray(Image.open(synthetic_root / "masks" / "val" / f"{scene.stem}.png"))
    Image.fromarray(truth).save(demo_out / "mask.png")
    assert _run(snippet)["out"].labels.shape == truth.shape


def test_python_api_snippets_run(demo_out):
    first, second = _blocks(_section("Python API"), "python")
    ns = _run(first)
    assert ns["out"].labels.shape == ns["truth"].shape and len(ns["results"]) == 2
    ns = _run(second)
    assert (demo_out / "runs" / "api_refiner" / "model.safetensors").is_file()
    assert ns["segments"].shape == ns["mask"].shape and ns["coarse"].shape[0] == 5


def _command_lines() -> list[list[str]]:
    """Every `segrefine ...` line of the README's bash blocks, continuations joined."""
    lines = []
    for block in _blocks(README.read_text(), "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split(" #")[0]) if "segrefine" in line else []
            for i, word in enumerate(words):
                if word.endswith("segrefine") or word == "segrefine.cli":
                    lines.append(words[i + 1 :])
                    break
    return lines


def test_every_command_line_in_the_readme_uses_real_options():
    import typer.main

    from segrefine.cli import app

    group = typer.main.get_command(app)
    lines = _command_lines()
    assert len(lines) >= 8
    for words in lines:
        command = group.commands.get(words[0])
        assert command is not None, f"README: no command {words[0]!r}"
        known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        used = {w.split("=")[0] for w in words[1:] if w.startswith("--")}
        assert used <= known, f"README: segrefine {words[0]} has no {used - known}"
