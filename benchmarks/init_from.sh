#!/bin/bash
# Does `train-refiner --init-from` pay? (issue 30, docs/benchmarks.md "--init-from")
# A Weizmann native refiner started from the CamVid zoo refiner against the default start
# (the U-Net's encoder), separate runs of 500 / 1000 / 2000 / 5500 steps, one thread each,
# resumable; the first run's out-of-fold cache is copied into the others (same folds, views
# and seed, so every run sees the same coarse masks). Then each run is benchmarked at native
# size and the rows collected into docs/results/init_from.json.
#   INIT=runs/zoo/camvid-street/refiner30 RUNS="default_500 camvid_500" benchmarks/init_from.sh
# INIT is the CamVid refiner's run folder (zoo:camvid-street works too).
set -u
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${THREADS:-1}
S=${SHARED:-../shared}; D=$S/data/weizmann_horse_voc; U=$S/runs/weizmann_unet
SR=${SEGREFINE:-.venv/bin/segrefine}; INIT=${INIT:-zoo:camvid-street}; O=${OUT:-runs/initfrom}
one() {  # name steps [--init-from X]
  local f=$O/$1; shift; local n=$1; shift
  if [ ! -f $f/.done ]; then
    if [ ! -f $f/config.json ] && [ -f $O/default_500/oof/views.safetensors ]; then
      mkdir -p $f/oof && cp $O/default_500/oof/views.safetensors $f/oof/; fi
    local resume=(); [ -f $f/config.json ] && resume=(--resume)
    $SR train-refiner --data $D --segmenter $U --native --iterations $n --out $f --device cpu \
      --threads $OMP_NUM_THREADS "$@" "${resume[@]}" && touch $f/.done || return
  fi
  [ -f $f/bench/results.json ] || $SR benchmark --native --data $D --segmenter $U --refiner $f \
    --out $f/bench --threads $OMP_NUM_THREADS
}
for run in ${RUNS:-default_500 default_1000 default_2000 camvid_500 camvid_1000 camvid_2000 camvid_5500}; do
  case $run in camvid_*) one $run ${run#*_} --init-from $INIT ;; *) one $run ${run#*_} ;; esac
done
${PYTHON:-.venv/bin/python} - "$O" <<'PY'
import json, sys
from pathlib import Path
rows = {}
for run in sorted(Path(sys.argv[1]).glob("*_*/bench/results.json")):
    name = run.parent.parent.name
    r = json.loads(run.read_text())["rows"]
    log = [json.loads(line) for line in (run.parent.parent / "log.jsonl").open()]
    rows[name] = {k: r["refined"][k] for k in ("mean_image_iou", "miou", "boundary_iou", "mba")}
    rows[name]["truth_boundary_iou"] = r["refined_truth"]["boundary_iou"]
    rows[name]["training_minutes"] = round(sum(e.get("seconds", 0) for e in log) / 60, 1)
rows["segmenter"] = {k: r["segmenter"][k] for k in ("mean_image_iou", "miou", "boundary_iou", "mba")}
out = Path("docs/results/init_from.json")
out.write_text(json.dumps({"data": "Weizmann val, each image's own size", "rows": rows}, indent=1) + "\n")
print(out.read_text())
PY
