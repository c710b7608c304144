# The L-512 model evaluated with the released multi-scale + flip protocol (60.4 mIoU): ratios
# 0.5..1.75 of (2048, 512) with the short side kept >= 512, both flips, sliding windows of 512 / 341.
# An evaluation config, as released: testing it runs that protocol with no extra flag
#     python tools/seg_test.py THIS_CONFIG CKPT       (mmseg's own tools/test.py works the same)
# Train with upernet_eva02_large_24_512_slide_80k.py (seg_train.py refuses this one); --tta is a no-op here.
_base_ = ["./upernet_eva02_large_24_512_slide_80k.py"]
model = dict(_delete_=True, type="SegTTAModel", module={{_base_.model}})
test_dataloader = dict(dataset=dict(pipeline={{_base_.tta_pipeline}}))
