"""Design exploration on a GPU (validation split only): train default-mode refiners with the
settings given as JSON and score a few inference settings on Weizmann val.

Run on the device machine from the repo root, with the data and segmenter run carried:
    PYTHONPATH=src python3 benchmarks/gpu_explore.py DATA SEGMENTER_RUN WORKDIR cuda \
        '{"band1500": {"iterations": 1500, "val_every": 250}}'
Writes $OUT/explore.json. A throwaway driver around library calls, kept so the numbers in
docs/benchmarks.md can be reproduced.
"""

import json
import os
import sys
import time

from segrefine.data.datasets import load_split
from segrefine.diffusion import Refiner, RefinerConfig, train_refiner
from segrefine.diffusion.batches import validation_priors
from segrefine.diffusion.train import evaluate_refiner
from segrefine.metrics import SegmentationScores

data, seg, out, dev = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
runs = json.loads(sys.argv[5])
results = {}
val = load_split(data, "val", ["horse"], False, 128)
for name, kw in runs.items():
    t = time.time()
    import shutil

    if os.path.exists(f"{out}/oofcache") and not os.path.exists(f"{out}/{name}/oof"):
        shutil.copytree(f"{out}/oofcache", f"{out}/{name}/oof")
    cfg = RefinerConfig(data=data, segmenter=seg if kw.pop("oof", True) else None, **kw)
    rec = train_refiner(cfg, f"{out}/{name}", device=dev, progress=False)
    print(name, "trained", time.time() - t, flush=True)
    tt = time.time() - t
    if os.path.exists(f"{out}/{name}/oof") and not os.path.exists(f"{out}/oofcache"):
        shutil.copytree(f"{out}/{name}/oof", f"{out}/oofcache")
    r = Refiner.load(f"{out}/{name}", dev)
    cfg2 = RefinerConfig(data=data, segmenter=seg)
    pri = validation_priors(cfg2, val, dev)
    sc = SegmentationScores(2, val.class_names)
    for p, it in zip(pri, val.items, strict=False):
        sc.update(p.argmax(0), it.mask)
    base = sc.summary()
    grid = {}
    settings = (
        [(0.5, None, 1), (0.5, 50, 1), (0.5, 10, 1)]
        if cfg.mode == "paper"
        else [(0.3, 1, 4), (0.4, 1, 4), (0.5, 1, 4), (0.4, 2, 2), (0.4, 1, 1)]
    )
    for st, steps, k in settings:
        t1 = time.time()
        s = evaluate_refiner(r, val, pri, steps=steps, strength=st, samples=k)
        grid[f"s{st}_n{steps}_k{k}"] = (
            round(s["mean_image_iou"], 2),
            round(s["boundary_iou"], 2),
            round(time.time() - t1, 2),
        )
        print(name, st, steps, k, grid[f"s{st}_n{steps}_k{k}"], flush=True)
    results[name] = {
        "train_s": tt,
        "best": rec.get("step"),
        "base": (base["mean_image_iou"], base["boundary_iou"]),
        "grid": grid,
        "log": [
            (
                rec_["step"],
                round(rec_["val"]["mean_image_iou"], 2),
                round(rec_["val"]["boundary_iou"], 2),
            )
            for rec_ in map(json.loads, open(f"{out}/{name}/log.jsonl"))
        ],
    }
    print(name, json.dumps(results[name]), flush=True)
    json.dump(
        results, open(os.path.join(os.environ.get("OUT", "/tmp"), "explore.json"), "w"), indent=1
    )
