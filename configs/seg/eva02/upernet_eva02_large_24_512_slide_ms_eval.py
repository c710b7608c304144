# The L-512 model evaluated with the released multi-scale + flip protocol (60.4 mIoU): ratios
# 0.5..1.75 of (2048, 512) with the short side kept >= 512, flip, sliding windows of 512 / 341.
# Evaluate with:  python tools/seg_test.py THIS_CONFIG CKPT --tta
# (mmseg 1.x runs `tta_pipeline` + `tta_model` when --tta is given; training is unchanged.)
_base_ = ["./upernet_eva02_large_24_512_slide_80k.py"]
