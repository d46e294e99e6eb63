"""Video refinement (issue 33): flow and warping, the consistency score, streaming, the CLI."""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest
from refiner_helpers import tiny_refiner
from scipy import ndimage

from segrefine.data import read_mask
from segrefine.data.io import VOID
from segrefine.errors import InputError
from segrefine.video import (
    Frames,
    Motion,
    TemporalConsistency,
    flow_to_previous,
    pair_consistency,
    refine_video,
    warp,
)


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    g = ndimage.gaussian_filter(rng.random((h, w)), 2.5)
    g = ((g - g.mean()) / g.std() * 50 + 128).clip(0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def _clip(n: int, h: int = 40, w: int = 56, step: int = 2):
    """``n`` frames of a textured square moving right by ``step`` px a frame over a textured
    background, and its true masks (0/1)."""
    background, square = _texture(h, w, 1), _texture(h, w, 2)
    frames, masks = [], []
    for t in range(n):
        mask = np.zeros((h, w), np.uint8)
        mask[12:28, 8 + step * t : 24 + step * t] = 1
        frames.append(np.where(mask[..., None] == 1, square, background))
        masks.append(mask)
    return frames, masks


def test_flow_recovers_a_shift_and_warp_undoes_it():
    big = _texture(120, 160)
    previous, current = big[10:110, 10:150], big[13:113, 15:155]  # content moves (-5, -3)
    motion = flow_to_previous(previous, current)
    assert np.median(motion.flow[..., 0]) == pytest.approx(5, abs=0.2)
    assert np.median(motion.flow[..., 1]) == pytest.approx(3, abs=0.2)
    carried = warp(previous[..., 0].astype(np.float32), motion.flow)
    inner = (slice(10, -10), slice(10, -10))
    assert np.abs(carried - current[..., 0])[inner].mean() < 2  # grey levels of 255
    # pixels whose source lies outside the previous frame have no match there
    assert not motion.reliable[:, -3:].any()
    assert motion.reliable[inner].mean() > 0.95


def test_nearest_warp_keeps_label_values():
    labels = np.zeros((20, 30), np.uint8)
    labels[5:15, 5:15] = 3
    flow = np.zeros((20, 30, 2), np.float32)
    flow[..., 0] = -2.4  # each pixel comes from 2.4 px to its left
    moved = warp(labels, flow, nearest=True)
    assert set(np.unique(moved)) == {0, 3}
    assert moved[10, 6] == 0 and moved[10, 8] == 3 and moved[10, 16] == 3 and moved[10, 18] == 0


def test_consistency_is_one_for_a_mask_that_follows_the_scene_and_lower_when_it_flickers():
    _, masks = _clip(2)
    flow = np.zeros((40, 56, 2), np.float32)
    flow[..., 0] = -2  # the scene moves 2 px right: each pixel was 2 px to its left
    motion = Motion(flow, np.ones((40, 56), bool))
    assert pair_consistency(masks[0], masks[1], motion, 2) == 1.0
    flicker = masks[1].copy()
    flicker[12:28, 20:26] = 0  # a part of the object lost in one frame
    assert pair_consistency(masks[0], flicker, motion, 2) < 0.8
    tc = TemporalConsistency(2)
    assert tc.update(masks[0], None) is None and tc.score is None
    tc.update(masks[1], motion)
    assert tc.score == 1.0
    unreliable = Motion(flow, np.zeros((40, 56), bool))  # nothing comparable: scores 1
    assert pair_consistency(masks[0], flicker, unreliable, 2) == 1.0
    voided = masks[1].copy()
    voided[12:28, 20:26] = VOID  # a truth's void pixels are left out, not read as a class
    assert pair_consistency(masks[0], voided, motion, 2) == 1.0


def test_refine_video_streams_frame_by_frame():
    frames, masks = _clip(3)
    pulled = []

    def source():
        for f in frames:
            pulled.append(1)
            yield f

    ref = tiny_refiner(classes=("background", "object"))
    stream = refine_video(ref, source(), masks=iter(masks), samples=1)
    first = next(stream)
    assert len(pulled) == 1 and first.motion is None
    rest = list(stream)
    assert len(pulled) == 3 and [f.index for f in rest] == [1, 2]
    assert rest[0].motion.flow.shape == (40, 56, 2)
    assert rest[0].refined.probs.shape == (2, 40, 56)


def _peak_bytes(n: int) -> int:
    frames, masks = _clip(1, 96, 128)
    ref = tiny_refiner(classes=("background", "object"))
    tracemalloc.start()
    for _ in refine_video(ref, (frames[0] for _ in range(n)), masks=(masks[0] for _ in range(n)),
                          samples=1):  # fmt: skip
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_refine_video_memory_does_not_grow_with_the_clip():
    short, long = _peak_bytes(3), _peak_bytes(12)
    assert long < 1.3 * short  # twelve frames of 96 x 128 kept would be ~4x one


def test_temporal_prior_differs_from_per_frame_and_weight_zero_is_per_frame():
    frames, masks = _clip(3)
    ref = tiny_refiner(classes=("background", "object"))
    alone = [ref.refine(f, labels=m, samples=1).probs for f, m in zip(frames, masks, strict=True)]
    off = [f.refined.probs for f in refine_video(ref, frames, masks=masks, temporal=False,
                                                 samples=1)]  # fmt: skip
    on = [f.refined.probs for f in refine_video(ref, frames, masks=masks, samples=1)]
    for a, b in zip(alone, off, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(on[0], off[0], atol=1e-5)  # no previous frame yet
    assert np.abs(on[2] - off[2]).max() > 1e-3
    method = [f.refined.probs for f in ref.refine_video(frames, masks=masks, samples=1)]
    np.testing.assert_array_equal(method[2], on[2])  # Refiner.refine_video: the same call


def test_carried_into_the_output_is_a_filter_along_the_motion():
    # a still scene whose masks flicker: zero flow, reliable everywhere, so each output is
    # the frame's own refinement blended with the previous output, the refiner's input untouched
    frames, masks = _clip(3, step=0)
    masks[1] = np.roll(masks[1], 2, axis=1)
    ref = tiny_refiner(classes=("background", "object"))
    alone = [ref.refine(f, labels=m, samples=1).probs for f, m in zip(frames, masks, strict=True)]
    out = [f.refined for f in refine_video(ref, frames, masks=masks, samples=1, weight=0.5)]
    np.testing.assert_allclose(out[0].probs, alone[0], atol=1e-5)
    np.testing.assert_allclose(out[1].probs, 0.5 * alone[1] + 0.5 * alone[0], atol=1e-4)
    np.testing.assert_allclose(out[2].probs, 0.5 * alone[2] + 0.5 * out[1].probs, atol=1e-4)
    np.testing.assert_array_equal(out[2].labels, out[2].probs.argmax(0))
    into_input = [f.refined.probs for f in refine_video(ref, frames, masks=masks, samples=1,
                                                        weight=0.5, carry="input")]  # fmt: skip
    assert np.abs(into_input[1] - out[1].probs).max() > 1e-3
    with pytest.raises(InputError, match="carry must be one of output, input, both"):
        next(refine_video(ref, frames, masks=masks, carry="sideways"))


def test_frames_of_a_folder_are_read_lazily(tmp_path, monkeypatch):
    frames, _ = _clip(4)
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), f[..., ::-1])
    import segrefine.video.frames as module

    reads = []
    real = module.read_image
    monkeypatch.setattr(module, "read_image", lambda p: reads.append(p) or real(p))
    clip = Frames(tmp_path)
    assert len(clip) == 4 and clip.size == (40, 56) and clip.names()[0] == "f0"
    it = iter(clip)
    next(it)
    assert len(reads) == 2  # the first frame checked on opening, then read again


def _write_clip(folder, n=4):
    frames, masks = _clip(n)
    folder.mkdir()
    (folder / "masks").mkdir()
    writer = cv2.VideoWriter(str(folder / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10,
                             (56, 40))  # fmt: skip
    assert writer.isOpened()
    for i, (f, m) in enumerate(zip(frames, masks, strict=True)):
        writer.write(np.ascontiguousarray(f[..., ::-1]))
        cv2.imwrite(str(folder / "masks" / f"{i:06d}.png"), m * 255)
    writer.release()
    return folder


def test_cli_refines_a_tiny_video(tmp_path, run_cli):
    clip = _write_clip(tmp_path / "clip")
    run = tmp_path / "refiner"
    tiny_refiner(classes=("background", "object")).save_pretrained(run)
    out = tmp_path / "out"
    code, stdout, err = run_cli("refine", "--video", clip / "clip.mp4", "--masks",
                                clip / "masks", "--refiner", run, "--out", out,
                                "--save-probs", "--samples", "1", "--threads", "1")  # fmt: skip
    assert code == 0, err
    assert "refined 4 frames" in stdout
    names = sorted(p.name for p in out.iterdir())
    assert "000003.png" in names and "000003_uncertainty.png" in names
    assert "000000.npy" in names and "classes.txt" in names
    assert "overlay.mp4" in names or "overlay" in names
    assert read_mask(out / "000002.png").shape == (40, 56)
    assert not list(tmp_path.glob(".out.*"))  # the work folder is gone


def test_cli_bad_video_path_is_one_line_and_exit_2(tmp_path, run_cli):
    run = tmp_path / "refiner"
    tiny_refiner(classes=("background", "object")).save_pretrained(run)
    code, _, err = run_cli("refine", "--video", tmp_path / "missing.mp4", "--masks", tmp_path,
                           "--refiner", run, "--out", tmp_path / "out")  # fmt: skip
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "missing.mp4" in err
    assert not (tmp_path / "out").exists()


def test_cli_missing_mask_writes_nothing(tmp_path, run_cli):
    clip = _write_clip(tmp_path / "clip")
    (clip / "masks" / "000002.png").unlink()
    run = tmp_path / "refiner"
    tiny_refiner(classes=("background", "object")).save_pretrained(run)
    code, _, err = run_cli("refine", "--video", clip / "clip.mp4", "--masks", clip / "masks",
                           "--refiner", run, "--out", tmp_path / "out")  # fmt: skip
    errors = [line for line in err.splitlines() if "error" in line]  # notes may precede it
    assert code == 2 and len(errors) == 1 and "000002" in errors[0]
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_no_video_and_a_clip_over_the_frame_limit_are_input_errors(tmp_path):

    fake = tmp_path / "clip.mp4"
    fake.write_text("not a video")
    with pytest.raises(InputError, match="clip.mp4"):
        Frames(fake)
    frames, _ = _clip(4)
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), f[..., ::-1])
    with pytest.raises(InputError, match="4 frames, over the 3"):
        Frames(tmp_path, max_frames=3)
