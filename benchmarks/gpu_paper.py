"""Paper mode on a GPU: train it, score 50 DDIM steps and the paper's 500 DDPM steps on
Weizmann val, and time default-mode refinement and the segmenter at 128 px.

Expects (relative to the repo root) the Weizmann data at runs/gpu/data_weizmann and the U-Net
run at runs/gpu/seg (carried to the device machine). Run: PYTHONPATH=src python3
benchmarks/gpu_paper.py; writes $OUT/paper_gpu.json. A throwaway driver, kept for
reproducibility of docs/benchmarks.md.
"""

import json
import os
import shutil
import sys
import time
import traceback

import numpy as np
import torch

from segrefine.data.datasets import load_split
from segrefine.diffusion import Refiner, RefinerConfig, train_refiner
from segrefine.diffusion.batches import validation_priors
from segrefine.diffusion.train import evaluate_refiner

OUT = os.environ.get("OUT", "/tmp/out")
data = "runs/gpu/data_weizmann"
res = {}


def save():
    json.dump(res, open(f"{OUT}/paper_gpu.json", "w"), indent=1)


try:
    t = time.time()
    cfg = RefinerConfig(data=data, mode="paper", classes=["horse"], iterations=1600, val_every=1600)
    rec = train_refiner(cfg, "/tmp/paper2", device="cuda", progress=False)
    res["paper_train_s"] = time.time() - t
    res["paper_train_rec"] = rec.get("val", {}).get("mean_image_iou")
    os.makedirs(f"{OUT}/paper", exist_ok=True)
    for f in ("config.json", "model.safetensors", "log.jsonl"):
        shutil.copy(f"/tmp/paper2/{f}", f"{OUT}/paper/{f}")
    print("trained", res, flush=True)
    save()
except Exception:
    traceback.print_exc()
val = load_split(data, "val", ["horse"], False, 128)
pri = validation_priors(RefinerConfig(data=data, segmenter="runs/gpu/seg"), val, "cuda")
for steps in (50, None):
    try:
        r = Refiner.load("/tmp/paper2", "cuda")
        torch.cuda.synchronize()
        t = time.time()
        s = evaluate_refiner(r, val, pri, steps=steps, strength=0.5, samples=1)
        torch.cuda.synchronize()
        res[f"paper_steps{steps}"] = {
            "iou": s["mean_image_iou"],
            "biou": s["boundary_iou"],
            "miou": s["miou"],
            "bf": s["boundary_f"],
            "seconds": time.time() - t,
            "images": len(val.items),
        }
        print(res, flush=True)
        save()
    except Exception:
        traceback.print_exc()
sys.exit(0)
try:
    cfg = RefinerConfig(data=data, classes=["horse"])
    r = Refiner.from_spec(cfg.spec(("background", "horse")), "cuda")
    x = torch.randn(256, 3, 128, 128)
    p = torch.softmax(torch.randn(256, 2, 128, 128), 1)
    for bs in (64, 256):
        r.refine_tensors(x[:bs], p[:bs])
        torch.cuda.synchronize()
        t = time.time()
        for _ in range(5):
            r.refine_tensors(x[:bs], p[:bs])
        torch.cuda.synchronize()
        res[f"default_refine_images_per_s_bs{bs}"] = 5 * bs / (time.time() - t)
    from segrefine.segmenting.segmenter import Segmenter, predict_probs

    seg = Segmenter.load("runs/gpu/seg", "cuda")
    ims = (np.random.default_rng(0).random((256, 128, 128, 3)) * 255).astype(np.uint8)
    predict_probs(seg.model, ims, seg.device, 64)
    torch.cuda.synchronize()
    t = time.time()
    for _ in range(5):
        predict_probs(seg.model, ims, seg.device, 64)
    torch.cuda.synchronize()
    res["segment_images_per_s_bs64"] = 5 * 256 / (time.time() - t)
    res["gpu"] = torch.cuda.get_device_name()
    print(res, flush=True)
    save()
except Exception:
    traceback.print_exc()
