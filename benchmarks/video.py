"""Video refinement without flicker, measured (issue 33): docs/results/video.json and figures.

    OMP_NUM_THREADS=1 python benchmarks/video.py --shared ../shared --threads 1 --write

Clips with exact truth for every frame (benchmarks/video_clips.py, fixed seeds): a camera
panning, zooming and shaking over Weizmann val photos (zoo:weizmann-horse), and synthetic
scenes whose objects move and deform (zoo:synthetic-scenes). Each frame JPEG-compressed, its
brightness drifting; and the same camera paths over CamVid val frames (zoo:camvid-street).

Rows: the segmenter per frame; the refiner per frame (as ``refine`` runs today: each frame
alone, the same seed); the refiner with the temporal prior (each CARRY:WEIGHT of --variants:
blended into the output or the input, segrefine.video.temporal); DenseCRF
per frame on the segmenter's probabilities; the truth itself (its TC is the ceiling: the flow
is not perfect). Scores, in percent, per frame and averaged over frames: per-image IoU,
Boundary IoU, mBA; TC (segrefine.video.consistency) averaged over clips; seconds per frame.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from segrefine import Refiner, Segmenter
from segrefine.crf import available as crf_available
from segrefine.crf import dense_crf
from segrefine.data.datasets import load_split
from segrefine.metrics import boundary_accuracy, boundary_iou, image_iou
from segrefine.video import TemporalConsistency, flow_to_previous, refine_video

sys.path.insert(0, str(Path(__file__).resolve().parent))
from video_clips import PATHS, camera_clip, scene_clip  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def camera_clips(split, n_clips: int, n_frames: int):
    """Camera paths (pan, zoom, shake in turn) over ``n_clips`` val images picked with seed 0."""
    rng = np.random.default_rng(0)
    picks = sorted(rng.choice(len(split.items), n_clips, replace=False).tolist())
    items = [split.items[i] for i in picks]
    return [(f"{it.id}-{PATHS[k % 3]}",
             camera_clip(it.image, it.mask, PATHS[k % 3], seed=k, n=n_frames))
            for k, it in enumerate(items)]  # fmt: skip


def weizmann_clips(shared: Path, n_clips: int, n_frames: int):
    split = load_split(shared / "data" / "weizmann_horse_voc", "val", ("horse",), size=None)
    return camera_clips(split, n_clips, n_frames)


def camvid_clips(shared: Path, n_clips: int, n_frames: int):
    return camera_clips(load_split(shared / "data" / "camvid", "val", size=None), n_clips,
                        n_frames)  # fmt: skip


def synthetic_clips(n_clips: int, n_frames: int):
    return [(f"scene{s}", scene_clip(100 + s, n=n_frames)) for s in range(n_clips)]


class Row:
    """A row's per-frame scores, its TC per clip and its seconds."""

    def __init__(self, c: int):
        self.c, self.seconds, self.stages = c, 0.0, {}
        self.iou, self.biou, self.mba, self.tc, self.pairs = [], [], [], [], []

    def clip(self):
        self._tc = TemporalConsistency(self.c)

    def frame(self, labels, truth, motion):
        self._tc.update(labels, motion)
        self.iou.append(image_iou(labels, truth, self.c))
        self.biou.append(boundary_iou(labels, truth, self.c))
        mba = boundary_accuracy(labels, truth)
        if mba is not None:
            self.mba.append(mba)

    def end_clip(self):
        self.tc.append(self._tc.score)
        self.pairs.append(self._tc.pairs)

    def summary(self, frames: int) -> dict:
        pct = lambda v: round(100 * float(np.mean(v)), 2)  # noqa: E731
        return {"tc": pct(self.tc), "image_iou": pct(self.iou), "boundary_iou": pct(self.biou),
                "mba": pct(self.mba), "seconds_per_frame": round(self.seconds / frames, 4),
                "tc_per_clip": [round(100 * t, 2) for t in self.tc],
                **{f"{k}_per_frame": round(v / frames, 4)
                   for k, v in self.stages.items()}}  # fmt: skip


def row_name(carry: str, w: float) -> str:
    return f"refiner_temporal_{carry}_w{w}"


def run(name: str, clips, seg: Segmenter, ref: Refiner, variants, crf: bool) -> dict:
    c = ref.num_classes
    rows = {"segmenter": Row(c), "refiner_per_frame": Row(c)}
    rows.update({row_name(carry, w): Row(c) for carry, w in variants})
    if crf:
        rows["densecrf_per_frame"] = Row(c)
    rows["truth"] = Row(c)
    examples = {}
    frames = 0
    warm = [f for f, _ in clips[0][1][:2]]  # first calls are slow (allocation, autotuning)
    list(refine_video(ref, warm, segmenter=seg))
    [dense_crf(im, seg.predict(im)) for im in warm if crf]
    for clip_name, clip in clips:
        images = [f for f, _ in clip]
        truths = [t for _, t in clip]
        frames += len(clip)
        for r in rows.values():
            r.clip()
        # the metric's motion, from the frames alone, shared by every row
        pairs = zip(images, images[1:], strict=False)
        motions = [None] + [flow_to_previous(a, b) for a, b in pairs]
        t0 = time.perf_counter()
        seg_probs = [seg.predict(im) for im in images]
        rows["segmenter"].seconds += time.perf_counter() - t0
        for p, t, m in zip(seg_probs, truths, motions, strict=True):
            rows["segmenter"].frame(p.argmax(0), t, m)
            rows["truth"].frame(t, t, m)
        if crf:
            t0 = time.perf_counter()
            both = zip(images, seg_probs, strict=True)
            crf_labels = [dense_crf(im, p).argmax(0) for im, p in both]
            rows["densecrf_per_frame"].seconds += time.perf_counter() - t0
            for lab, t, m in zip(crf_labels, truths, motions, strict=True):
                rows["densecrf_per_frame"].frame(lab, t, m)
        for key, carry, w in [("refiner_per_frame", "output", 0.0)] + [
                (row_name(carry, w), carry, w) for carry, w in variants]:  # fmt: skip
            t0 = time.perf_counter()
            out = list(refine_video(ref, images, segmenter=seg, temporal=w > 0, weight=w,
                                    carry=carry, timings=rows[key].stages))  # fmt: skip
            rows[key].seconds += time.perf_counter() - t0
            for f, t, m in zip(out, truths, motions, strict=True):
                rows[key].frame(f.refined.labels, t, m)
            if clip_name == clips[0][0]:
                examples[key] = [f.refined.labels for f in out]
        for r in rows.values():
            r.end_clip()
        print(name, clip_name, {k: round(100 * r.tc[-1], 2) for k, r in rows.items()}, flush=True)
    result = {k: r.summary(frames) for k, r in rows.items()}
    base = rows["refiner_per_frame"].seconds
    for carry, w in variants:
        key = row_name(carry, w)
        result[key]["time_overhead_pct"] = round(100 * (rows[key].seconds / base - 1), 1)
    first = clips[0][1]
    pairs = {k: [round(100 * p, 2) for p in r.pairs[0]] for k, r in rows.items()}
    return {"clips": [n for n, _ in clips], "frames": frames, "rows": result,
            "tc_over_time_first_clip": pairs}, (first, examples, pairs)  # fmt: skip


def figure(path: Path, title: str, clip, examples: dict, pairs: dict, key: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segrefine.benchmarking.report import overlay

    show = np.linspace(0, len(clip) - 1, 5).round().astype(int)
    fig = plt.figure(figsize=(13, 7.4))
    grid = fig.add_gridspec(4, 5, height_ratios=[1, 1, 1, 1.1])
    labels = [("truth", [t for _, t in clip]), ("refiner per frame",
              examples["refiner_per_frame"]), ("temporal prior", examples[key])]  # fmt: skip
    for r, (name, masks) in enumerate(labels):
        for c, t in enumerate(show):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(overlay(clip[t][0], masks[t]))
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name)
            if r == 0:
                ax.set_title(f"frame {t}")
    ax = fig.add_subplot(grid[3, :])
    for k, style in (("truth", "k:"), ("segmenter", "C7--"), ("refiner_per_frame", "C0-"),
                     (key, "C3-")):  # fmt: skip
        ax.plot(range(1, len(pairs[k]) + 1), pairs[k], style, label=k)
    ax.set_xlabel("frame t + 1"), ax.set_ylabel("TC (IoU with t warped), %")
    ax.legend(fontsize=8, ncol=4)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def noise_check(shared: Path, n_clips: int, n_frames: int) -> dict:
    """How much of the per-frame refiner's flicker is its sampling noise: TC and scores with
    one seed for every frame (as ``refine`` runs), a new seed each frame, and 8 samples (the
    noise averaged out). If these barely differ, correlating the noise between frames
    (warping it along the flow) cannot pay much either."""
    seg, ref = Segmenter.load("zoo:weizmann-horse"), Refiner.load("zoo:weizmann-horse")
    result = {}
    for mode, seed_step, samples in (("one_seed", 0, None), ("seed_per_frame", 7, None),
                                     ("samples_8", 0, 8)):  # fmt: skip
        row = Row(ref.num_classes)
        for _, clip in weizmann_clips(shared, n_clips, n_frames):
            row.clip()
            for i, (im, truth) in enumerate(clip):
                motion = None if i == 0 else flow_to_previous(clip[i - 1][0], im)
                out = ref.refine(im, seg.predict(im), seed=i * seed_step, samples=samples,
                                 input_size=seg.size)  # fmt: skip
                row.frame(out.labels, truth, motion)
            row.end_clip()
        s = row.summary(1)
        result[mode] = {k: s[k] for k in ("tc", "image_iou", "boundary_iou", "mba")}
        print("noise check", mode, result[mode], flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--clips", type=int, default=5)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--variants", default="output:0.5,output:0.8,input:0.5,input:0.8",
                    help="temporal-prior rows, CARRY:WEIGHT, comma-separated")  # fmt: skip
    ap.add_argument("--kinds", default="weizmann,synthetic,camvid",
                    help="clip kinds to run, comma-separated (results of the others kept)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--write", action="store_true", help="write docs/results and docs/images")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "video")
    ap.add_argument("--noise-check", action="store_true",
                    help="only measure how much sampling noise adds to the flicker "
                    "(Weizmann clips; writes video_noise.json)")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = [(v.split(":")[0], float(v.split(":")[1])) for v in args.variants.split(",")]
    results_dir = REPO / "docs" / "results" if args.write else args.out
    images_dir = REPO / "docs" / "images" if args.write else args.out
    results_dir.mkdir(parents=True, exist_ok=True)
    images_dir.mkdir(parents=True, exist_ok=True)
    crf = crf_available()
    out = {"machine": {"cpu": platform.processor() or _cpu(), "threads": args.threads,
                       "torch": torch.__version__},
           "command": " ".join(["python", "benchmarks/video.py", *sys.argv[1:]])}  # fmt: skip
    if args.noise_check:
        out["clips"], out["frames"] = args.clips, args.frames
        out["rows"] = noise_check(args.shared, args.clips, args.frames)
        (results_dir / "video_noise.json").write_text(json.dumps(out, indent=1) + "\n")
        return
    previous = results_dir / "video.json"
    if previous.is_file():  # a run of some kinds keeps the others' results
        out = {**json.loads(previous.read_text()), **out}
    for name, entry, clips in (
        ("weizmann", "zoo:weizmann-horse", lambda: weizmann_clips(args.shared, args.clips,
                                                                  args.frames)),
        ("synthetic", "zoo:synthetic-scenes", lambda: synthetic_clips(args.clips, args.frames)),
        ("camvid", "zoo:camvid-street", lambda: camvid_clips(args.shared, args.clips,
                                                             args.frames)),
    ):  # fmt: skip
        if name not in args.kinds.split(","):
            continue
        seg, ref = Segmenter.load(entry), Refiner.load(entry)
        data = clips()
        result, (first, examples, pairs) = run(name, data, seg, ref, variants, crf)
        out[name] = {"models": entry, "machine": out["machine"], "command": out["command"],
                     **result}
        key = row_name(*variants[0])
        figure(images_dir / f"video_{name}.png", f"{name}: {data[0][0]} ({entry})", first,
               examples, pairs, key)  # fmt: skip
        (results_dir / "video.json").write_text(json.dumps(out, indent=1) + "\n")
        for k, v in result["rows"].items():
            print(name, f"{k:28s}", {m: v[m] for m in v if m != "tc_per_clip"}, flush=True)


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


if __name__ == "__main__":
    main()
