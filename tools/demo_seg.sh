#!/usr/bin/env bash
# Segmentation demo (CPU, a few minutes): train EVA-02 tiny + UperNet on the toy ADE20K-layout set
# through tools/seg_train.py, evaluate it with tools/seg_test.py (sliding windows; mIoU printed next
# to the all-background baseline), and write colour-coded predictions under output/demo/seg/.
#   SEG_DEMO_HEAD=mask2former  the same with the toy Mask2Former (output/demo/seg_mask2former/)
#   SEG_DEMO_HEAD=both         UperNet for SEG_DEMO_ITERS iterations, then Mask2Former for the same
#                              training time (per-iteration costs measured alternately in one process,
#                              tools/seg_equal_time.py), both evaluated on the same validation set
#   SEG_DEMO_SHAPES=circle,square,triangle   a toy set with only these shapes (default: all five)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
UPERNET=configs/seg/toy/upernet_eva02_tiny_toy.py
MASK2FORMER=configs/seg/toy/mask2former_eva02_tiny_toy.py
DATA=${DATA:-datasets}
ITERS=${SEG_DEMO_ITERS:-200}  # 85.9 mIoU on toy val (88.2 after 300): the demo's time budget
EVALS=${SEG_DEMO_EVALS:-4}  # validations during training: the mIoU curve of the summary
HEAD=${SEG_DEMO_HEAD:-upernet}
SHAPES=${SEG_DEMO_SHAPES:-}

if [ -z "$SHAPES" ]; then
  TOY="$DATA/toy_ade"
  [ -f "$TOY/classes.txt" ] || "$PY" tools/make_toy_data.py --out "$DATA"
else
  TOY="$DATA/toy_${SHAPES//,/_}/toy_ade"
  [ -f "$TOY/classes.txt" ] || "$PY" tools/make_toy_data.py --out "$(dirname "$TOY")" --shapes "$SHAPES"
fi
ROOT_OPTS=(train_dataloader.dataset.data_root="$TOY" val_dataloader.dataset.data_root="$TOY"
  test_dataloader.dataset.data_root="$TOY")

# demo NAME CONFIG ITERS OUT: train, evaluate, paint, print the mIoU line
demo() {
  local name=$1 config=$2 iters=$3 out=$4 tag="" step=seg start=$SECONDS
  [ "$name" = "UperNet" ] || { tag=" [$name]"; step=seg_mask2former; }
  rm -rf "$out"
  mkdir -p "$out"
  echo "== seg: training eva02_tiny $name for $iters iterations on CPU (log: $out/train.log)"
  "$PY" tools/seg_train.py "$config" --work-dir "$out/train" \
    --cfg-options "${ROOT_OPTS[@]}" train_cfg.max_iters="$iters" \
    train_cfg.val_interval="$(( (iters + EVALS - 1) / EVALS ))" param_scheduler.1.end="$((iters + 1))" \
    default_hooks.checkpoint.interval="$iters" 2>&1 | tee "$out/train.log" | "$PY" tools/demo_progress.py "$iters"
  [ -f "$out/train/iter_$iters.pth" ] || { tail -n 40 "$out/train.log"; exit 1; }

  echo "== evaluating (the config's test mode) and painting predictions"
  "$PY" tools/seg_test.py "$config" "$out/train/iter_$iters.pth" --work-dir "$out/test" --show-dir "$out/vis" \
    --cfg-options "${ROOT_OPTS[@]}" >"$out/test.log" 2>&1 || { tail -n 40 "$out/test.log"; exit 1; }
  "$PY" tools/seg_infer.py "$config" "$out/train/iter_$iters.pth" \
    $(ls "$TOY"/images/validation/*.jpg | head -n 4) --out-dir "$out/pictures" >"$out/infer.log" 2>&1 \
    || { tail -n 40 "$out/infer.log"; exit 1; }

  "$PY" - "$out/test.log" "$TOY/annotations/validation" "$tag" <<'PYEOF'
import glob, re, sys
import cv2, numpy as np
log, ann_dir, tag = sys.argv[1], sys.argv[2], sys.argv[3]
miou = float(re.findall(r"mIoU: ([0-9.]+)", open(log).read())[-1])
# baseline: predict "background" everywhere -> IoU_bg = background share, 0 for every other present class
labels = np.concatenate([cv2.imread(p, cv2.IMREAD_UNCHANGED).ravel() for p in glob.glob(f"{ann_dir}/*.png")])
labels = labels[labels > 0].astype(int) - 1
present = np.unique(labels)
baseline = 100 * (labels == 0).mean() / len(present)
print(f"seg demo{tag}: toy val mIoU = {miou:.2f} (all-background baseline {baseline:.2f}, {len(present)} classes)")
PYEOF
  echo "coloured predictions: $out/vis/ (ground truth | prediction) and $out/pictures/"
  PYTHONWARNINGS=ignore "$PY" tools/demo_report.py record "$step" --run "$out/train" --seconds "$((SECONDS - start))" \
    --outputs "$out/vis/"
}

case "$HEAD" in
  upernet) demo UperNet "$UPERNET" "$ITERS" output/demo/seg ;;
  mask2former) demo Mask2Former "$MASK2FORMER" "$ITERS" output/demo/seg_mask2former ;;
  both)
    echo "== measuring both training steps alternately (same process, same load)"
    EQUAL=$("$PY" tools/seg_equal_time.py "$UPERNET" "$MASK2FORMER" --iters-a "$ITERS" \
      --cfg-options "${ROOT_OPTS[@]}" 2>/dev/null | tail -n 1)
    M2F_ITERS=$("$PY" -c 'import json, sys; print(json.loads(sys.argv[1])["iters_b"])' "$EQUAL")
    echo "$EQUAL"
    demo UperNet "$UPERNET" "$ITERS" output/demo/seg
    demo Mask2Former "$MASK2FORMER" "$M2F_ITERS" output/demo/seg_mask2former
    echo "equal training time: UperNet $ITERS iterations, Mask2Former $M2F_ITERS iterations"
    ;;
  *) echo "SEG_DEMO_HEAD must be upernet, mask2former or both (got $HEAD)" >&2; exit 2 ;;
esac
