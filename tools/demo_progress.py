#!/usr/bin/env python
"""Console progress for the demos: read a detectron2 or mmengine training log on stdin, print one
short line per logged iteration (iteration, loss, ETA) and one per evaluation.

    ... 2>&1 | tee train.log | python tools/demo_progress.py MAX_ITER
"""

from __future__ import annotations

import re
import sys

D2_ITER = re.compile(r"eta: (\S+) +iter: (\d+) +total_loss: ([0-9.]+)")
D2_RESULT = re.compile(r"copypaste: (.*)")
MM_ITER = re.compile(r"Iter\(train\) \[ *(\d+)/ *(\d+)\].*eta: (\S+).*? loss: ([0-9.]+)")
MM_VAL = re.compile(r"Iter\(val\) \[[0-9/ ]+\] +aAcc: ([0-9.]+) +mIoU: ([0-9.]+)")
FAILURE = re.compile(r"Traceback|Error|error:")


def main(max_iter: str) -> None:
    task, header, results = None, None, []
    for line in sys.stdin:
        if m := D2_ITER.search(line):
            done = int(m[2]) + 1  # detectron2 logs the 0-based iteration just run
            print(f"   iter {done}/{max_iter}  loss {m[3]}  eta {m[1]}", flush=True)
        elif m := D2_RESULT.search(line):
            text = m[1].strip()
            if text.startswith("Task: "):
                task = text[6:]
            elif text.startswith("AP,"):
                header = text.split(",")
            elif task and header:
                values = dict(zip(header, text.split(",")))
                results.append(f"{task} AP {float(values['AP']):.1f} (AP50 {float(values['AP50']):.1f})")
                if task == "segm":
                    print("   eval: " + " | ".join(results), flush=True)
                    results = []
        elif m := MM_ITER.search(line):
            print(f"   iter {m[1]}/{m[2]}  loss {m[4]}  eta {m[3]}", flush=True)
        elif m := MM_VAL.search(line):
            print(f"   eval: mIoU {float(m[2]):.1f}  (pixel accuracy {float(m[1]):.1f})", flush=True)
        elif FAILURE.search(line):
            print("   " + line.rstrip(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "?")
