"""Block-wise masking: counts, block shapes and placement over many draws."""

import numpy as np
import pytest
from scipy import ndimage

from pretraining.masking import BlockMaskGenerator


def test_released_setting_counts_over_many_draws():
    gen = BlockMaskGenerator((16, 16), 105, min_num_patches=16)
    rng = np.random.default_rng(0)
    counts = np.array([gen(rng).sum() for _ in range(1500)])
    assert counts.max() == 105  # never more than the target
    assert counts.min() >= 90
    assert counts.mean() > 103.5
    assert (counts == 105).mean() > 0.5  # the target is usually hit exactly


def test_single_block_shape_and_aspect():
    # One block drawn on an empty grid with min == budget: area ~40, aspect log-uniform in [0.3, 1/0.3].
    gen = BlockMaskGenerator((16, 16), 40, min_num_patches=40, min_aspect=0.3)
    rng = np.random.default_rng(1)
    aspects = []
    for _ in range(400):
        mask = np.zeros((16, 16), dtype=bool)
        added = gen._add_block(mask, 40, rng)
        labels, n = ndimage.label(mask)
        assert n == 1 and added == mask.sum()
        rows, cols = np.nonzero(mask)
        h, w = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert mask.sum() == h * w  # a filled rectangle
        assert 25 <= h * w <= 40
        assert h < 16 and w < 16
        aspects.append(h / w)
    aspects = np.array(aspects)
    # h = round(sqrt(40 a)), w = round(sqrt(40 / a)), a in [0.3, 3.33]: rounding widens the range a little.
    assert aspects.min() >= 0.3 * 0.7 and aspects.max() <= 3.34 / 0.7
    assert (aspects < 0.6).any() and (aspects > 1.6).any()  # both orientations occur
    assert 0.3 < np.mean(np.log(aspects) > 0) < 0.7  # log-uniform aspect is symmetric


def test_placement_is_symmetric():
    gen = BlockMaskGenerator((14, 14), 80, min_num_patches=16)
    rng = np.random.default_rng(2)
    freq = np.stack([gen(rng) for _ in range(3000)]).mean(0)
    assert abs(freq.mean() - 80 / 196) < 0.01
    assert np.abs(freq - freq[::-1]).max() < 0.06
    assert np.abs(freq - freq[:, ::-1]).max() < 0.06
    assert freq.min() > 0.0  # every patch can be masked, corners included


def test_seeded_draws_reproduce():
    gen = BlockMaskGenerator((8, 8), 26, min_num_patches=4)
    a = [gen(np.random.default_rng([3, 0, i])) for i in range(5)]
    b = [gen(np.random.default_rng([3, 0, i])) for i in range(5)]
    assert all((x == y).all() for x, y in zip(a, b))
    assert any((x != y).any() for x, y in zip(a[:-1], a[1:]))


def test_max_block_size_is_respected():
    gen = BlockMaskGenerator((16, 16), 105, min_num_patches=4, max_num_patches=9)
    rng = np.random.default_rng(4)
    for _ in range(50):
        labels, n = ndimage.label(gen(rng))
        assert n >= 105 // 9 // 4  # many small blocks, not one big one
    assert gen(rng).sum() <= 105


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(grid=(16, 16), num_masking_patches=300), "num_masking_patches"),
        (dict(grid=(16, 16), num_masking_patches=0), "num_masking_patches"),
        (dict(grid=(0, 16), num_masking_patches=4), "grid"),
        (dict(grid=(16, 16), num_masking_patches=4, min_num_patches=0), "min_num_patches"),
        (dict(grid=(16, 16), num_masking_patches=4, min_aspect=-1.0), "min_aspect"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BlockMaskGenerator(**kwargs)
