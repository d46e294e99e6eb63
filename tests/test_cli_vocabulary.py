"""One option vocabulary: every command names a shared idea the same way, the old names work
for one release without being shown, and --help renders as plain text."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import typer

from segrefine.cli import app
from segrefine.cli.renamed import RenamedOptions

COMMANDS = typer.main.get_command(app).commands
ROOT = Path(__file__).resolve().parents[1]

# An option is matched to a shared idea by what its help says it takes; each idea has one name.
IDEAS = (
    (r"segmenter's run folder", r"--(other-)?segmenter"),
    (r"refiner's run folder", r"--refiner"),
    (r"stable diffusion folder", r"--attention-model"),
    (r"folder of images, (or )?one image", r"--images"),
    (r"label (masks|maps) or <id>\.npy|predicted <id>\.png label maps", r"--masks"),
    (r"^(dataset|bsds500) root", r"--data"),
    (r"^auto \(cuda", r"--device"),
    (r"^cpu threads", r"--threads"),
)
# names that mean one of those ideas in other tools; the vocabulary has one name for each
SYNONYMS = {"--output", "--output-dir", "--out-dir", "-o", "--image", "--input", "--inputs",
            "--img", "--probs", "--pred", "--predictions", "--mask", "--gpu", "--cuda",
            "--num-threads", "--jobs", "-j", "--silent", "--dataset", "--root", "--data-root",
            "--run-dir", "--sd-model", "--other"}  # fmt: skip
# evaluate writes with --json, serve listens, calibrate writes into the --refiner run itself
WRITES_NOTHING = {"evaluate", "serve", "zoo", "calibrate"}
# a positional argument names no file or folder: `zoo NAME` is a name to look up
POSITIONAL = {("zoo", "name")}
# what no --help may show: escapes for rich markup, Python types as metavars, a run as --model
DEBRIS = ("\\", "list[", "[/", "[bold", "[dim", "--model <path>")


def _visible(name: str) -> dict[str, object]:
    return {opt: p for p in COMMANDS[name].params if not p.hidden
            for opt in (*p.opts, *p.secondary_opts)}  # fmt: skip


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_for_a_shared_idea_has_the_shared_name(name):
    for opt, param in _visible(name).items():
        assert opt not in SYNONYMS, f"{name} {opt}: the vocabulary's name for it is another"
        if opt.startswith("--"):
            for says, called in IDEAS:
                if re.search(says, " ".join(param.help.lower().split())):
                    assert re.fullmatch(called, opt), f"{name} {opt} takes what {called} takes"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_names_its_inputs_takes_q_and_writes_to_out(name):
    for p in COMMANDS[name].params:
        assert p.param_type_name == "option" or (name, p.name) in POSITIONAL, f"{name} {p.name}"
    options = _visible(name)
    assert options.get("-q") is not None and options.get("-q") is options.get("--quiet"), name
    assert ("--out" in options) == (name not in WRITES_NOTHING), name


@pytest.mark.parametrize("name", ["", *sorted(COMMANDS)])
def test_help_renders_as_plain_text(run_cli, name):
    code, out, err = run_cli(*name.split(), "--help")
    assert code == 0 and out.startswith("Usage: segrefine"), err
    for debris in DEBRIS:
        assert debris not in out, f"segrefine {name} --help shows {debris!r}"


def test_evaluate_help_names_every_metric_it_prints(run_cli):
    from segrefine.metrics import SegmentationScores, format_table

    scores = SegmentationScores(2, ("background", "object"))
    truth = np.zeros((8, 8), np.uint8)
    truth[2:6, 2:6] = 1
    scores.update(truth, truth)
    printed = [line.split("|")[0].strip() for line in format_table(scores.summary()).splitlines()]
    metrics = [m for m in printed[2:] if m and not m.startswith(("-", "IoU ", "images"))]
    assert "mBA" in metrics
    _, out, _ = run_cli("evaluate", "--help")
    said = " ".join(out.split()).lower()
    for metric in metrics:
        assert metric.lower() in said, f"evaluate --help does not name {metric}"


def test_train_segmenter_help_says_how_images_are_sized(run_cli):
    _, out, _ = run_cli("train-segmenter", "--help")
    said = " ".join(out.split())
    assert "square crops" in said and "aspect ratio kept" in said  # training vs prediction


RENAMED = [(name, old, new) for name, cmd in sorted(COMMANDS.items())
           if isinstance(cmd, RenamedOptions) for old, new in cmd.renamed.items()]  # fmt: skip
REQUIRED = {"predict": ["--images", "i", "--out", "o"], "evaluate": ["--data", "d"],
            "refine": ["--refiner", "r", "--images", "i", "--out", "o"], "attention-segment":
            ["--classes", "a", "--images", "i", "--out", "o"],
            "benchmark": ["--data", "d", "--segmenter", "s", "--refiner", "r", "--out", "o"]}


def test_the_old_names_kept_for_one_release():
    assert {(n, o) for n, o, _ in RENAMED} == {
        ("predict", "--model"), ("refine", "--probs"), ("evaluate", "--pred"),
        ("benchmark", "--other"), ("attention-segment", "--model")}  # fmt: skip


@pytest.mark.parametrize("name, old, new", RENAMED)
def test_an_old_name_still_works_with_a_note_but_is_not_shown(run_cli, capsys, name, old, new):
    command = COMMANDS[name]
    assert old not in _visible(name) and new in _visible(name)
    param = _visible(name)[new]
    for args, given in (([old, "x"], "x"), ([f"{old}=y"], "y")):
        value = command.make_context(name, [*REQUIRED[name], *args]).params[param.name]
        assert Path(given) in (value if param.multiple else [value])
        assert f"'{name} {old}' is now '{name} {new}'" in capsys.readouterr().err
    _, out, _ = run_cli(name, "--help")
    assert not re.search(rf"{old}\b(?!-)", out), f"{name} --help shows {old}"


def test_cluster_still_takes_its_images_as_an_argument(capsys):
    command = COMMANDS["cluster"]
    ctx = command.make_context("cluster", ["--out", "o", "-q", "photos"])
    assert ctx.params["images"] == Path("photos") and ctx.params["out"] == Path("o")
    assert "'cluster photos' is now 'cluster --images photos'" in capsys.readouterr().err
    ctx = command.make_context("cluster", ["--images", "photos", "--out", "o"])
    assert ctx.params["images"] == Path("photos") and capsys.readouterr().err == ""


def test_an_option_value_is_never_taken_for_an_old_name():
    command = COMMANDS["refine"]
    args = ["--images", "--probs", "--out", "o", "--", "--probs"]
    assert command.current_names(args) == args


def test_the_docs_show_only_the_current_names():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text().replace("\\\n", " ")
        for name, old, new in RENAMED:
            for line in re.findall(rf"segrefine {name} [^\n`]*", text):
                assert not re.search(rf"\s{old}(\s|=|$)", line), f"{doc.name}: {line} ({new})"
        assert not re.search(r"segrefine cluster [^-\s]", text), f"{doc.name}: cluster --images"
