#!/usr/bin/env bash
# Detection demo: toy data -> train EVA-02 tiny Cascade Mask R-CNN on CPU -> box/mask AP -> pictures.
# Idempotent: data is generated once; a finished training run is evaluated again, not retrained.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export DETECTRON2_DATASETS=${DETECTRON2_DATASETS:-$PWD/datasets}
OUT=output/demo/det
CFG=configs/det/toy/cascade_mask_rcnn_eva02_tiny_toy.py
ITERS=${DEMO_DET_ITERS:-800}

if [ ! -f "$DETECTRON2_DATASETS/toy_coco/annotations/instances_train.json" ]; then
  "$PY" tools/make_toy_data.py --out "$DETECTRON2_DATASETS"
fi
mkdir -p "$OUT"

echo "[demo_det] training $CFG for $ITERS iterations on $(nproc) CPU core(s) -> $OUT"
"$PY" tools/lazyconfig_train_net.py --config-file "$CFG" --resume \
  train.output_dir="$OUT" train.max_iter="$ITERS" train.eval_period="$ITERS" \
  train.checkpointer.period="$ITERS" > "$OUT/train.log" 2>&1 || { tail -40 "$OUT/train.log"; exit 1; }

"$PY" tools/demo.py --config-file "$CFG" --weights "$OUT/model_final.pth" \
  --input "$DETECTRON2_DATASETS/toy_coco/val/val_00000[0-5].jpg" --output "$OUT/pictures" \
  --confidence-threshold 0.5 | tail -6

"$PY" - "$OUT/metrics.json" <<'PYEOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
ev = [r for r in rows if "bbox/AP" in r][-1]
print(f"[demo_det] toy val after {ev['iteration']} iterations: box AP {ev['bbox/AP']:.1f}  AP50 {ev['bbox/AP50']:.1f}"
      f"  |  mask AP {ev['segm/AP']:.1f}  AP50 {ev['segm/AP50']:.1f}")
PYEOF
