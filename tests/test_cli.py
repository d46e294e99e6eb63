"""The commands behave alike: the same shared options where they apply, one-line errors
(the option names themselves: test_cli_vocabulary.py)."""

from __future__ import annotations

import click
import pytest
import typer

from segrefine.cli import app

COMMANDS = typer.main.get_command(app).commands
NETWORK = {"train-segmenter", "predict", "train-refiner", "refine", "benchmark", "demo", "serve",
           "cluster", "cluster-benchmark", "attention-segment", "pseudo-masks",
           "calibrate"}  # fmt: skip


def _options(name: str) -> dict[str, click.Parameter]:
    return {p.name: p for p in COMMANDS[name].params}


def test_every_command_is_walked():
    assert set(COMMANDS) == NETWORK | {"evaluate", "export", "zoo"}


@pytest.mark.parametrize("name", sorted(NETWORK))
def test_commands_that_run_a_network_share_threads_and_device(name):
    options = _options(name)
    assert "threads" in options, name
    if name.startswith("cluster"):  # clustering trains a small network per image on the CPU
        assert "device" not in options
    else:
        assert options["device"].default == "auto", name
    assert "quiet" in options and "-q" in options["quiet"].opts, name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_options_are_named_alike(name):
    for param in COMMANDS[name].params:
        for opt in param.opts:
            assert opt == opt.lower() and "_" not in opt, f"{name}: {opt}"


@pytest.mark.parametrize("command, bad", [("predict", ["--threads", "0"]),
                                          ("refine", ["--device", "tpu"])])  # fmt: skip
def test_a_bad_shared_option_is_one_line_and_exit_2(run_cli, tmp_path, command, bad):
    run = "--segmenter" if command == "predict" else "--refiner"
    code, _, err = run_cli(command, run, tmp_path, "--images", tmp_path, "--out",
                           tmp_path / "o", *bad)  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert bad[0] in err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_shows_flags_as_flags(run_cli, name):
    code, out, _ = run_cli(name, "--help")
    assert code == 0 and f"{name} [OPTIONS]" in out
    assert "<bool>" not in out, f"{name}: a flag is shown as taking a value"
    for param in COMMANDS[name].params:
        assert param.help, f"{name}: {param.name} has no help"


@pytest.mark.parametrize("folders, expected", [(["demo_out"], "demo_out"),
                                               (["runs", "demo_out"], "runs"), ([], "None")])
def test_serve_finds_the_demos_runs_or_opens_on_the_zoo(run_cli, tmp_path, monkeypatch,
                                                         folders, expected):  # fmt: skip
    import segrefine.web

    served = {}
    monkeypatch.setattr(
        segrefine.web, "serve", lambda runs, *a, **k: served.setdefault("runs", runs)
    )
    monkeypatch.chdir(tmp_path)
    for name in folders:
        (tmp_path / name).mkdir()
    code, _, err = run_cli("serve", "--device", "cpu")
    assert code == 0 and str(served["runs"]) == expected, err


def test_q_leaves_only_errors_where_the_result_is_a_file(run_cli, tmp_path, synthetic_root,
                                                         trained_run):  # fmt: skip
    import json

    code, out, err = run_cli("export", "--run", trained_run, "--out", tmp_path / "shared", "-q")
    assert code == 0 and out == err == "" and (tmp_path / "shared" / "config.json").is_file()
    code, _, err = run_cli("predict", "--segmenter", trained_run, "--images", synthetic_root,
                           "--out", tmp_path / "pred", "--device", "cpu", "-q")  # fmt: skip
    assert code == 0, err
    code, out, err = run_cli("evaluate", "--masks", tmp_path / "pred", "--data", synthetic_root,
                             "--json", tmp_path / "m.json", "-q")  # fmt: skip
    assert code == 0 and out == err == "", err
    assert "mba" in json.loads((tmp_path / "m.json").read_text())


def test_serve_q_keeps_its_status_lines_to_itself(run_cli, tmp_path, monkeypatch):
    import segrefine.web

    monkeypatch.setattr(segrefine.web, "serve", lambda *a, **k: None)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert run_cli("serve", "--device", "cpu")[2].startswith("serving the runs in runs/")
    assert run_cli("serve", "--device", "cpu", "-q") == (0, "", "")


@pytest.mark.parametrize("name", ["*", "*.example.org", "a b", ""])
def test_serve_refuses_a_host_pattern(run_cli, monkeypatch, name):
    import segrefine.web

    monkeypatch.setattr(segrefine.web, "serve", lambda *a, **k: pytest.fail("served"))
    code, _, err = run_cli("serve", "--allow-host", name, "--device", "cpu")
    assert code == 2 and "--allow-host" in err and "no wildcards" in err
