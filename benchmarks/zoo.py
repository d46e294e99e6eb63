"""Make, pack and score the model zoo's entries (src/segrefine/zoo/).

    # train an entry from ../shared/data with the project's own commands and fixed seeds
    python benchmarks/zoo.py train weizmann-horse --shared ../shared --out runs/zoo
    # copy two runs into the package (float16 weights, SHA-256 in the manifest)
    python benchmarks/zoo.py pack weizmann-horse --segmenter runs/zoo/weizmann-horse/segmenter \
        --refiner runs/zoo/weizmann-horse/refiner
    # score it at native size on its validation split (with DenseCRF) and write the card's
    # numbers into the manifest and docs/results/zoo.json; without --write, compare to them
    python benchmarks/zoo.py score weizmann-horse --shared ../shared [--write]
    # time the README's Quick start command on a 1 MP photo (start-up included)
    python benchmarks/zoo.py time weizmann-horse --shared ../shared --threads 2
    # write its model card (and the figure of its worst validation images) from those scores
    python benchmarks/zoo.py card weizmann-horse --shared ../shared

`train` prints the commands it runs; on a GPU machine pass --device cuda (minutes instead of
CPU hours). `score` fails (exit 1) when a score differs from the manifest's by more than 0.1.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from segrefine import checkpoint, zoo
from segrefine.native_benchmark import run_native_benchmark

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results" / "zoo.json"
ROWS = ("segmenter", "refined", "crf", "refined_truth")
METRICS = ("mean_image_iou", "miou", "boundary_iou", "boundary_f", "mba")

# what each entry is trained on and with: the project's own commands, seeds fixed (seed 0)
RECIPES = {
    "weizmann-horse": {
        "title": "Horse vs background (Weizmann Horse)",
        "data": "data/weizmann_horse_voc",
        "licence": "Weizmann Horse Database (Borenstein & Ullman, ECCV 2002), research use",
        "segmenter": ["--classes", "horse", "--model", "unet", "--epochs", "60"],
        "refiner": ["--native"],
    },
    "camvid-street": {
        "title": "Street scenes, 11 classes (CamVid)",
        "data": "data/camvid",
        "licence": "CamVid (Brostow et al.), SegNet version, CC BY-NC 4.0",
        "segmenter": ["--model", "unet", "--epochs", "80"],
        "refiner": ["--native"],
    },
}


def train(name: str, shared: Path, out: Path, device: str) -> None:
    recipe = RECIPES[name]
    data, folder = shared / recipe["data"], out / name
    commands = [
        ["train-segmenter", "--data", data, "--out", folder / "segmenter", "--device", device,
         *recipe["segmenter"]],
        ["train-refiner", "--data", data, "--segmenter", folder / "segmenter", "--out",
         folder / "refiner", "--device", device, *recipe["refiner"]],
        ["calibrate", "--refiner", folder / "refiner", "--segmenter", folder / "segmenter",
         "--data", data, "--split", "val", "--device", device],
    ]  # fmt: skip
    for args in commands:
        cmd = [sys.executable, "-m", "segrefine.cli", *map(str, args)]
        print("$ segrefine " + " ".join(map(str, args)), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        print(f"  {(time.perf_counter() - t0) / 60:.1f} min", flush=True)


def pack(name: str, runs: dict[str, Path]) -> None:
    """Copy the runs into the package as float16 weights and record them in the manifest."""
    recipe = RECIPES.get(name, {})
    target = zoo.ROOT / name
    files = {}
    for kind, run in runs.items():
        dest = target / kind
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        checkpoint.read_config(run, kind)  # it is a run of this kind
        shutil.copyfile(run / checkpoint.CONFIG, dest / checkpoint.CONFIG)
        if (run / checkpoint.LOG).is_file():
            shutil.copyfile(run / checkpoint.LOG, dest / checkpoint.LOG)
        tensors, meta = checkpoint.load_tensors(run / checkpoint.WEIGHTS)
        half = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
        checkpoint.save_tensors(dest / checkpoint.WEIGHTS, half, meta)
    for path in sorted(p for kind in runs for p in (target / kind).rglob("*")):
        if path.is_file():  # what is loaded; the card is documentation
            files[path.relative_to(zoo.ROOT).as_posix()] = zoo.file_digest(path)
    data = json.loads(zoo.MANIFEST.read_text()) if zoo.MANIFEST.is_file() else {"entries": {}}
    old = data["entries"].get(name, {})
    data["entries"][name] = {
        "title": recipe.get("title", old.get("title", name)),
        "licence": recipe.get("licence", old.get("licence")),
        "runs": {kind: f"{name}/{kind}" for kind in runs},
        "card": f"{name}/README.md",
        "scores": old.get("scores", {}),
        "files": files,
    }
    zoo.MANIFEST.write_text(json.dumps(data, indent=2) + "\n")
    zoo.manifest.cache_clear()
    size = sum((zoo.ROOT / f).stat().st_size for f in files) / 1e6
    print(f"packed {name}: {len(files)} files, {size:.1f} MB")


def score(name: str, shared: Path, write: bool, out: Path, threads: int) -> int:
    torch.set_num_threads(threads)
    data = shared / RECIPES[name]["data"]
    t0 = time.perf_counter()
    res = run_native_benchmark(data, "val", f"zoo:{name}", f"zoo:{name}", out / name, crf=True,
                               device="cpu")  # fmt: skip
    rows = {r: {m: res["rows"][r][m] for m in METRICS if m in res["rows"][r]}
            for r in ROWS if r in res["rows"]}  # fmt: skip
    for r, v in rows.items():
        print(f"{r:14s} " + "  ".join(f"{m} {v[m]:.2f}" for m in v))
    card = zoo.entry(name).get("scores", {})
    if write:
        data = json.loads(zoo.MANIFEST.read_text())
        data["entries"][name]["scores"] = rows
        zoo.MANIFEST.write_text(json.dumps(data, indent=2) + "\n")
        results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
        results[name] = {
            "command": f"python benchmarks/zoo.py score {name} --shared ../shared --write",
            "machine": f"{_cpu()}, {threads} threads", "minutes": round(
                (time.perf_counter() - t0) / 60, 1), "rows": res["rows"]}  # fmt: skip
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote the scores into {zoo.MANIFEST} (files' checksums unchanged)")
        return 0
    worst = max((abs(rows[r][m] - card[r][m]) for r in card for m in card[r]), default=None)
    if worst is None:
        print("the manifest holds no scores yet: run with --write")
        return 1
    print(f"largest difference from the card: {worst:.2f}")
    return 0 if worst <= 0.1 else 1


def time_refine(name: str, shared: Path, megapixels: float, threads: int, repeats: int) -> None:
    """Wall time of the Quick start's command on one photo of ``megapixels`` (a validation
    image upscaled; the dataset's images stay outside the repo), start-up included."""
    from PIL import Image

    data = shared / RECIPES[name]["data"]
    first = (data / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[0]
    image = Image.open(data / "JPEGImages" / f"{first}.jpg")
    scale = (megapixels * 1e6 / (image.width * image.height)) ** 0.5
    work = Path("/tmp/segrefine-zoo-time")
    shutil.rmtree(work, ignore_errors=True)
    (work / "photos").mkdir(parents=True)
    image.resize((round(image.width * scale), round(image.height * scale)),
                 Image.BICUBIC).save(work / "photos" / "photo.jpg", quality=92)  # fmt: skip
    cmd = [sys.executable, "-m", "segrefine.cli", "refine", "--segmenter", f"zoo:{name}",
           "--refiner", f"zoo:{name}", "--images", str(work / "photos"), "--out",
           str(work / "out"), "--device", "cpu", "--threads", str(threads), "-q"]  # fmt: skip
    seconds = []
    for _ in range(repeats):
        shutil.rmtree(work / "out", ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        seconds.append(time.perf_counter() - t0)
    print(f"{Image.open(work / 'photos' / 'photo.jpg').size}: refine with zoo:{name}, "
          f"{threads} threads, start-up included: {', '.join(f'{s:.1f}' for s in seconds)} s "
          f"({_cpu()})")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("name", choices=sorted(RECIPES))
    t.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    t.add_argument("--out", type=Path, default=REPO / "runs" / "zoo")
    t.add_argument("--device", default="auto")
    p = sub.add_parser("pack")
    p.add_argument("name")
    p.add_argument("--segmenter", type=Path, required=True)
    p.add_argument("--refiner", type=Path, required=True)
    s = sub.add_parser("score")
    s.add_argument("name", choices=sorted(RECIPES))
    s.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    s.add_argument("--out", type=Path, default=Path("/tmp/segrefine-zoo-score"))
    s.add_argument("--write", action="store_true")
    s.add_argument("--threads", type=int, default=2)
    m = sub.add_parser("time")
    m.add_argument("name", choices=sorted(RECIPES))
    m.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    m.add_argument("--megapixels", type=float, default=1.0)
    m.add_argument("--threads", type=int, default=2)
    m.add_argument("--repeats", type=int, default=3)
    c = sub.add_parser("card")
    c.add_argument("name", choices=sorted(RECIPES))
    c.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    c.add_argument("--scores", type=Path, default=Path("/tmp/segrefine-zoo-score"),
                   help="the --out of the score run whose per-image results pick the figure")
    args = parser.parse_args()
    if args.command == "train":
        train(args.name, args.shared, args.out, args.device)
        return 0
    if args.command == "pack":
        pack(args.name, {"segmenter": args.segmenter, "refiner": args.refiner})
        return 0
    if args.command == "time":
        time_refine(args.name, args.shared, args.megapixels, args.threads, args.repeats)
        return 0
    if args.command == "card":
        from zoo_card import write_card

        print(write_card(args.name, args.scores / args.name, args.shared /
                         RECIPES[args.name]["data"]))  # fmt: skip
        return 0
    return score(args.name, args.shared, args.write, args.out, args.threads)


if __name__ == "__main__":
    sys.exit(main())
