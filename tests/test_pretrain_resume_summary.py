"""A resumed pre-training run reports the whole run: its loss history starts at step 1, not at the resume."""

import numpy as np
import pytest
from PIL import Image

from pretraining import recipe_config, train
from pretraining.state import load_training_state

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    for i in range(8):
        img = np.zeros((64, 64, 3), np.uint8) + rng.integers(0, 255, 3, dtype=np.uint8)
        Image.fromarray(img).save(root / f"{i}.png")
    return str(root)


def _cfg(image_dir, out, **kw):
    tiny = dict(model_overrides={"depth": 1}, img_size=56, min_mask_patches_per_block=2, num_workers=0)
    return recipe_config(
        "toy", **tiny, data=image_dir, output_dir=str(out), progress=False, tensorboard=False, **kw
    )


def test_history_after_resume_is_the_whole_run(image_dir, tmp_path):
    common = dict(batch_size=2, total_batch_size=2, max_steps=4, save_every=2, log_every=1)
    full = train(_cfg(image_dir, tmp_path / "full", **common))
    part = train(_cfg(image_dir, tmp_path / "split", stop_after=2, **common))
    rest = train(_cfg(image_dir, tmp_path / "split", resume="auto", **common))
    assert [s for s, _ in full["history"]] == [1, 2, 3, 4]
    assert [s for s, _ in part["history"]] == [1, 2]
    # Resume is exact on CPU, so the resumed run's report equals the uninterrupted one, value for value.
    assert rest["history"] == full["history"]
    saved = load_training_state(str(tmp_path / "split" / "checkpoint-last.pth"))["history"]
    assert saved == [[s, v] for s, v in full["history"]]
