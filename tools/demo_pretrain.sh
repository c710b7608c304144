#!/usr/bin/env bash
# Pre-train -> transfer -> fine-tune on CPU:
#   1. masked image modeling of an EVA-02 tiny (the toy detector's backbone) on the toy COCO training
#      images with the tiny CLIP-style teacher (loss printed; it must fall);
#   2. conversion of the pre-training checkpoint into a detectron2 initial checkpoint
#      (patch 14 -> 16, position embedding resized, pre-training head dropped);
#   3. the toy Cascade Mask R-CNN fine-tuned from that checkpoint with the det step's schedule, and its
#      box AP next to the det step's (the same schedule from scratch; run tools/demo_det.sh first,
#      or side by side with DEMO_DET_PID set to its process: tools/demo_det_and_chain.sh).
# Outputs: output/demo/pretrain/. Every run starts from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=output/demo/pretrain
DATA=${DETECTRON2_DATASETS:-datasets}
STEPS=${PRETRAIN_STEPS:-120}
SECONDS=0

rm -rf "$OUT"
mkdir -p "$OUT"
if [ ! -d "$DATA/toy_coco/train" ]; then
  "$PY" tools/make_toy_data.py --out "$DATA"
fi

echo "== 1/3 pre-training (tiny teacher, $STEPS steps) =="
# One thread: for a model this small, OpenMP synchronisation costs more than a second core brings.
OMP_NUM_THREADS=1 "$PY" tools/pretrain.py --recipe toy --data "$DATA/toy_coco/train" --output-dir "$OUT/mim" \
  --model eva02_tiny --model-overrides depth=4 --max-steps "$STEPS" --log-every 10 --no-progress
"$PY" - "$OUT/mim/summary.json" <<'EOF'
import json, sys
history = [loss for _, loss in json.load(open(sys.argv[1]))["history"]]
head, tail = sum(history[:3]) / 3, sum(history[-3:]) / 3
print(f"pre-training loss (negative cosine to the teacher): {head:.4f} -> {tail:.4f}")
if not tail < head - 0.05:
    sys.exit("error: the pre-training loss did not fall")
EOF

echo "== 2/3 conversion to a detectron2 initial checkpoint =="
"$PY" tools/convert_checkpoint.py --input "$OUT/mim/checkpoint-last.pth" --output "$OUT/det_init.pth" --to det

CONFIG=configs/det/toy/cascade_mask_rcnn_eva02_tiny_toy.py
SCRATCH=output/demo/det  # the det step: this config and schedule from scratch
ITERS=${DEMO_DET_ITERS:-$("$PY" -c 'import sys; from detectron2.config import LazyConfig
print(LazyConfig.load(sys.argv[1]).train.max_iter)' "$CONFIG")}
EVALS=${DEMO_DET_EVALS:-5}
echo "== 3/3 toy detector fine-tuned from the pre-trained backbone, $ITERS iterations (log: $OUT/det.log)"
DETECTRON2_DATASETS="$DATA" "$PY" tools/lazyconfig_train_net.py --config-file "$CONFIG" \
  train.init_checkpoint="$OUT/det_init.pth" train.output_dir="$OUT/det" train.max_iter="$ITERS" \
  train.eval_period="$((ITERS / EVALS))" train.checkpointer.period="$ITERS" 2>&1 | tee "$OUT/det.log" \
  | "$PY" tools/demo_progress.py "$ITERS"
grep -q "copypaste" "$OUT/det.log" || { tail -40 "$OUT/det.log"; exit 1; }
CHAIN_SECONDS=$SECONDS FINISHED=$(date +%s)
if [ -n "${DEMO_DET_PID:-}" ] && kill -0 "$DEMO_DET_PID" 2>/dev/null; then
  echo "waiting for the det step running side by side (the from-scratch run to compare with)"
  while kill -0 "$DEMO_DET_PID" 2>/dev/null; do sleep 2; done
fi
if [ -f "$SCRATCH/metrics.json" ]; then
  PYTHONWARNINGS=ignore "$PY" tools/demo_report.py record chain --run "$OUT/det" --scratch "$SCRATCH" \
    --seconds "$CHAIN_SECONDS" --finished "$FINISHED" --outputs "$OUT/"
else
  echo "no from-scratch run in $SCRATCH to compare with (run tools/demo_det.sh first)"
fi
