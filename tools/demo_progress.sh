#!/usr/bin/env bash
# Console progress for the demos: reads a detectron2 or mmengine log on stdin and prints one short
# line per logged iteration (iteration, loss, ETA) and the evaluation results.
#   ... 2>&1 | tee train.log | bash tools/demo_progress.sh MAX_ITER
max=${1:-?}
sed -u -n -E \
  -e "s/.*eta: ([0-9:]+) +iter: ([0-9]+) +total_loss: ([0-9.]+).*/   iter \2\/$max  loss \3  eta \1/p" \
  -e "s/.*Iter\(train\) \[ *([0-9]+)\/ *([0-9]+)\].*eta: ([0-9:]+).* loss: ([0-9.]+).*/   iter \1\/\2  loss \4  eta \3/p" \
  -e "s/.*copypaste: (.*)/   \1/p" \
  -e "s/.*Iter\(val\) \[[0-9\/]+\] +(aAcc: .*mIoU: [0-9.]+).*/   \1/p" \
  -e "s/.*(Traceback|Error|error:)(.*)/   \1\2/p"
