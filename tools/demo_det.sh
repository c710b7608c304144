#!/usr/bin/env bash
# Detection demo: toy data -> train EVA-02 tiny Cascade Mask R-CNN from scratch on CPU, evaluated
# DEMO_DET_EVALS times along the way (box / mask AP on toy val) -> pictures of the validation images.
# Progress (iteration, loss, ETA) on the console; the full log in output/demo/det/train.log.
# Idempotent: data is generated once; a finished training run is evaluated again, not retrained.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export DETECTRON2_DATASETS=${DETECTRON2_DATASETS:-$PWD/datasets}
OUT=output/demo/det
CFG=configs/det/toy/cascade_mask_rcnn_eva02_tiny_toy.py
ITERS=${DEMO_DET_ITERS:-$("$PY" -c 'import sys; from detectron2.config import LazyConfig
print(LazyConfig.load(sys.argv[1]).train.max_iter)' "$CFG")}
EVALS=${DEMO_DET_EVALS:-5}
SECONDS=0

if [ ! -f "$DETECTRON2_DATASETS/toy_coco/annotations/instances_train.json" ]; then
  "$PY" tools/make_toy_data.py --out "$DETECTRON2_DATASETS"
fi
mkdir -p "$OUT"

echo "== det: training $(basename "$CFG" .py) for $ITERS iterations, ${OMP_NUM_THREADS:-$(nproc)} thread(s) (log: $OUT/train.log)"
"$PY" tools/lazyconfig_train_net.py --config-file "$CFG" --resume \
  train.output_dir="$OUT" train.max_iter="$ITERS" train.eval_period="$((ITERS / EVALS))" \
  train.checkpointer.period="$ITERS" 2>&1 | tee "$OUT/train.log" | "$PY" tools/demo_progress.py "$ITERS"
grep -q "Overall training speed\|copypaste" "$OUT/train.log" || { tail -40 "$OUT/train.log"; exit 1; }

"$PY" tools/demo.py --config-file "$CFG" --weights "$OUT/model_final.pth" \
  --input "$DETECTRON2_DATASETS/toy_coco/val/val_00000[0-5].jpg" --output "$OUT/pictures" \
  --confidence-threshold 0.5 | tail -6

PYTHONWARNINGS=ignore "$PY" tools/demo_report.py record det --run "$OUT" --seconds "$SECONDS" --outputs "$OUT/pictures/"
