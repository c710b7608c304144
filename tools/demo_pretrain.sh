#!/usr/bin/env bash
# Pre-train -> transfer -> fine-tune on CPU, in about five minutes:
#   1. masked image modeling of an EVA-02 tiny (4 blocks, the toy detector's backbone) on the toy
#      COCO training images with the tiny CLIP-style teacher (loss printed; it must fall);
#   2. conversion of the pre-training checkpoint into a detectron2 initial checkpoint
#      (patch 14 -> 16, position embedding resized, pre-training head dropped);
#   3. a few iterations of the toy Cascade Mask R-CNN started from that checkpoint.
# Outputs: output/demo/pretrain/. Idempotent: every run starts from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=output/demo/pretrain
DATA=${DETECTRON2_DATASETS:-datasets}
STEPS=${PRETRAIN_STEPS:-120}
DET_ITERS=${DET_ITERS:-6}

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

echo "== 3/3 toy detector started from the pre-trained backbone ($DET_ITERS iterations) =="
CONFIG=configs/det/toy/cascade_mask_rcnn_eva02_tiny_toy.py
DETECTRON2_DATASETS="$DATA" "$PY" tools/lazyconfig_train_net.py --config-file "$CONFIG" \
  train.init_checkpoint="$OUT/det_init.pth" train.output_dir="$OUT/det" train.max_iter="$DET_ITERS" \
  train.eval_period=0 train.log_period=5 train.checkpointer.period=100000 2>&1 | tee "$OUT/det.log" \
  | grep -E "d2.utils.events.*iter: |copypaste|Error" | sed -E 's/^.*(iter: [0-9]+ +total_loss: [0-9.]+).*/\1/' || true
if ! grep -q "iter: $((DET_ITERS - 1))" "$OUT/det.log"; then
  echo "error: the detector did not complete $DET_ITERS iterations from the converted checkpoint (see $OUT/det.log)"
  exit 1
fi
echo "chain complete: pre-trained backbone -> $OUT/det_init.pth -> detector trained for $DET_ITERS iterations"
