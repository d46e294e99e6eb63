"""Images and maps that used to get past the checks (issue 31): an extreme aspect ratio, a
truncated JPEG that ``Image.verify`` passes, a header that lies about the size, decompression
bombs in PNG chunks, degenerate ``.npy`` maps; and the output folder's own hygiene (stale
temporaries, failed writes that name their file, nothing written before every input is
checked)."""

from __future__ import annotations

import io
import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from segrefine.data.coarse import interpret_array, read_coarse
from segrefine.data.io import (
    read_image,
    remove_stale_temporaries,
    write_image,
    write_label_png,
    write_npy,
)
from segrefine.data.transforms import MAX_ASPECT, working_size
from segrefine.errors import InputError


def _one_line(code: int, err: str, names: str | Path) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("segrefine: error:") and str(names) in lines[0], err
    return lines[0]


def _scene(path: Path, shape=(24, 36)) -> None:
    rng = np.random.default_rng(len(path.name))
    Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(path)


def _images(tmp_path: Path, names=("img0.png",)) -> Path:
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    for name in names:
        _scene(folder / name)
    return folder


def _masks_for(images: Path, tmp_path: Path) -> Path:
    """Object masks (class ids 0 and 1) for every image, as refine --masks reads them."""
    masks = tmp_path / "masks"
    masks.mkdir(exist_ok=True)
    for path in images.iterdir():
        h, w = Image.open(path).size[::-1]
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4 : h // 2, w // 4 : w // 2] = 1  # class ids: read without a note
        Image.fromarray(mask).save(masks / f"{path.stem}.png")
    return masks


@pytest.fixture()
def commands(trained_run, binary_refiner, tmp_path):
    """The two commands that write per-image outputs, as argument lists for ``run_cli``."""

    def predict(images: Path, out: Path) -> list:
        return ["predict", "--segmenter", trained_run, "--images", images, "--out", out,
                "--save-probs", "--device", "cpu", "-q"]  # fmt: skip

    def refine(images: Path, out: Path) -> list:
        masks = _masks_for(images, tmp_path)
        return ["refine", "--refiner", binary_refiner, "--masks", masks, "--images", images,
                "--out", out, "--steps", "1", "--device", "cpu", "-q"]  # fmt: skip

    return {"predict": predict, "refine": refine}


# -- item 1: the working size is bounded ----------------------------------------------------


def test_the_working_size_is_bounded_by_the_aspect_ratio():
    assert working_size((300, 3000), 128) == (128, 1280)  # a 10:1 panorama is fine
    for shape in [(1, 1000), (1000, 1), (1, 11)]:
        with pytest.raises(InputError, match=r"aspect ratio .* at most 10:1") as caught:
            working_size(shape, 128)
        assert "\n" not in str(caught.value)
    assert MAX_ASPECT == 10


def test_the_segmenter_refuses_an_extreme_image_before_any_work(trained_run):
    from segrefine.segmenting.segmenter import Segmenter

    seg = Segmenter.load(trained_run, "cpu")
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="1000x1"):
        seg.predict(np.zeros((1, 1000, 3), np.uint8))
    assert time.perf_counter() - t0 < 1


@pytest.mark.parametrize("command", ["predict", "refine"])
def test_a_1_by_1000_image_is_one_line_and_nothing_is_written(run_cli, tmp_path, commands,
                                                              command):  # fmt: skip
    images = _images(tmp_path, ["a.png"])
    Image.fromarray(np.zeros((1000, 1, 3), np.uint8)).save(images / "b.png")
    out = tmp_path / "out"
    t0 = time.perf_counter()
    code, _, err = run_cli(*commands[command](images, out))
    line = _one_line(code, err, images / "b.png")
    assert "1x1000" in line and time.perf_counter() - t0 < 20
    assert not out.exists()


# -- item 11: every input checked in full before the first write ---------------------------


def _truncated_jpeg(path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 36, 3), np.uint8)).save(
        buf, "JPEG")  # fmt: skip
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])


@pytest.mark.parametrize("command", ["predict", "refine"])
def test_a_truncated_jpeg_after_a_good_image_stops_before_any_output(
    run_cli, tmp_path, commands, command
):
    images = _images(tmp_path, ["a.png"])
    _truncated_jpeg(images / "b.jpg")
    Image.open(images / "b.jpg").verify()  # what the old check relied on: it passes
    out = tmp_path / "out"
    code, _, err = run_cli(*commands[command](images, out))
    assert "truncated" in _one_line(code, err, images / "b.jpg")
    assert not out.exists()


def test_refine_refuses_two_images_of_one_name_before_any_output(run_cli, tmp_path,
                                                                 commands):  # fmt: skip
    images = _images(tmp_path, ["a.png", "a.jpg"])
    code, _, err = run_cli(*commands["refine"](images, tmp_path / "out"))
    assert "would both write 'a' outputs" in _one_line(code, err, images)
    assert not (tmp_path / "out").exists()


def test_a_wrong_size_map_after_a_good_one_stops_refine_before_any_output(
    run_cli, tmp_path, commands
):
    images = _images(tmp_path, ["a.png", "b.png"])
    args = commands["refine"](images, tmp_path / "out")
    Image.fromarray(np.eye(30, dtype=np.uint8)).save(tmp_path / "masks" / "b.png")
    code, _, err = run_cli(*args)
    assert "label mask is 30x30" in _one_line(code, err, tmp_path / "masks" / "b.png")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["predict", "refine"])
def test_stale_temporaries_in_the_output_folder_are_cleared_and_nothing_else(
    run_cli, tmp_path, commands, command
):
    images = _images(tmp_path, ["a.png"])
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".a.png.k3j_9x2q.tmp"  # what a kill -9 during atomic_path leaves
    stale.write_bytes(b"half a png")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    theirs = [out / "notes.tmp", out / ".cache.tmp", out / ".a.png.draft.tmp"]
    for path in theirs:
        path.write_text("the user's own")
    code, _, err = run_cli(*commands[command](images, out))
    assert code == 0, err
    assert not stale.exists() and all(path.exists() for path in theirs)
    assert (out / "a.png").is_file()


def test_a_temporary_newer_than_this_process_is_left_to_its_writer(tmp_path):
    (tmp_path / ".x.npy.abcd1234.tmp").write_bytes(b"being written")
    (tmp_path / ".export.abcd1234.tmp").mkdir()  # a folder of that form is not ours to remove
    assert remove_stale_temporaries(tmp_path, older_than=time.time() - 60) == 0
    assert remove_stale_temporaries(tmp_path) == 1


# -- item 12: degenerate arrays ------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 0, 0), (0, 4, 4), (2, 4, 0), (0, 0), (5, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_a_zero_size_map_is_one_line(tmp_path, shape, dtype):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros(shape, dtype))
    with pytest.raises(InputError, match="x.npy: .*no pixels|x.npy: .*shape") as caught:
        read_coarse(path, 2)
    assert "\n" not in str(caught.value)
    with pytest.raises(InputError):
        interpret_array(np.zeros(shape, dtype), None)


@pytest.mark.parametrize("channels", [1, 33])
def test_a_map_of_one_channel_or_too_many_for_a_class_agnostic_refiner_is_one_line(channels):
    with pytest.raises(InputError, match="needs 2 to 32 classes"):
        interpret_array(np.full((channels, 4, 4), 1 / channels, np.float32), None)


def test_a_zero_size_map_through_refine_is_one_line(run_cli, tmp_path, commands):
    images = _images(tmp_path, ["a.png"])
    args = commands["refine"](images, tmp_path / "out")
    (tmp_path / "masks" / "a.png").unlink()
    np.save(tmp_path / "masks" / "a.npy", np.zeros((2, 0, 0), np.float32))
    code, _, err = run_cli(*args)
    _one_line(code, err, tmp_path / "masks" / "a.npy")


# -- item 15: a header that lies about the size; Pillow's own warnings ----------------------


def _lying_jpeg(path: Path, side: int) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buf, "JPEG")  # fmt: skip
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", side, side)  # height, width
    path.write_bytes(bytes(data))


def test_a_jpeg_whose_header_claims_more_pixels_than_its_data_holds_is_refused(tmp_path):
    _lying_jpeg(tmp_path / "lying.jpg", 3000)
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="lying.jpg: .*data for"):
        read_image(tmp_path / "lying.jpg")
    assert time.perf_counter() - t0 < 1


def test_pillows_bomb_warning_becomes_one_clean_line(tmp_path, monkeypatch, capsys, recwarn):
    _scene(tmp_path / "big.png", (40, 40))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1600 px: over it, under twice it
    assert read_image(tmp_path / "big.png").shape == (40, 40, 3)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("segrefine: warning: ") and "big.png" in err
    assert "DecompressionBombWarning" not in err and not [w for w in recwarn]


# -- item 16: messages that say what happened ----------------------------------------------


@pytest.mark.parametrize("chunk", [b"iCCP", b"zTXt"])
def test_a_png_chunk_bomb_says_what_it_is(tmp_path, chunk):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buf, "PNG")
    png = buf.getvalue()
    body = b"name\0\0" + zlib.compress(b"\0" * (PngImagePlugin.MAX_TEXT_CHUNK + 10), 9)
    crc = struct.pack(">I", zlib.crc32(chunk + body) & 0xFFFFFFFF)
    (tmp_path / "bomb.png").write_bytes(png[:33] + struct.pack(">I", len(body)) + chunk + body
                                        + crc + png[33:])  # fmt: skip
    with pytest.raises(InputError, match="bomb.png: .*text or ICC-profile chunk"):
        read_image(tmp_path / "bomb.png")


def _disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("write", [
    lambda p: write_label_png(p / "x.png", np.zeros((4, 4), np.uint8)),
    lambda p: write_npy(p / "x.npy", np.zeros(3)),
    lambda p: write_image(p / "x_uncertainty.png", np.zeros((4, 4), np.uint8)),
])  # fmt: skip
def test_a_failed_write_names_its_file(tmp_path, monkeypatch, write):
    monkeypatch.setattr("segrefine.data.io.os.fsync", _disk_full)
    with pytest.raises(OSError) as caught:
        write(tmp_path)
    named = Path(caught.value.filename)
    assert named.parent == tmp_path and named.name.startswith("x") and named.suffix != ".tmp"
    assert "No space left on device" in str(caught.value)
    assert not list(tmp_path.iterdir())  # and no temporary left behind


def test_a_failed_write_in_predict_is_one_line_naming_the_file(run_cli, tmp_path, commands,
                                                               monkeypatch):  # fmt: skip
    images = _images(tmp_path, ["a.png"])
    monkeypatch.setattr("segrefine.data.io.os.fsync", _disk_full)
    code, _, err = run_cli(*commands["predict"](images, tmp_path / "out"))
    assert "No space left" in _one_line(code, err, tmp_path / "out" / "a.png")
