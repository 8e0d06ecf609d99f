"""Replay pool and augmentation of student batches: hand-checked on tiny tensors."""

from __future__ import annotations

import pytest
import torch

from fedrdskd.kd.synthetic_pool import SyntheticPool, augmenter, shift_flip
from test_rdskd import make_synthesizer


def rows(values: list[float]) -> torch.Tensor:
    """One 1x1x1 image per value."""
    return torch.tensor(values).reshape(-1, 1, 1, 1)


def test_pool_lends_its_share_and_keeps_the_newest_images() -> None:
    pool, rng = SyntheticPool(capacity=3, fraction=0.5), torch.Generator().manual_seed(0)
    first = rows([1, 2])
    assert pool.mix(first, rng) is first  # empty pool: the batch stays fresh
    mixed = pool.mix(rows([3, 4]), rng)
    assert mixed[0].item() == 3 and mixed[1].item() in (1, 2)  # last row from the pool
    assert pool.images.flatten().tolist() == [2, 3, 4]  # FIFO, capacity 3
    mixed = pool.mix(rows([5, 6, 7, 8]), rng)  # 2 of 4 borrowed from {2, 3, 4}
    assert mixed[:2].flatten().tolist() == [5, 6]
    assert set(mixed[2:].flatten().tolist()) <= {2, 3, 4} and mixed[2] != mixed[3]
    assert pool.images.flatten().tolist() == [6, 7, 8]


def test_pool_of_capacity_zero_is_off_and_draws_nothing() -> None:
    pool, rng = SyntheticPool(capacity=0, fraction=0.5), torch.Generator().manual_seed(0)
    state = rng.get_state()
    batch = rows([1, 2])
    assert pool.mix(batch, rng) is batch and pool.size == 0
    assert torch.equal(rng.get_state(), state)


@pytest.mark.parametrize("capacity, fraction", [(-1, 0.5), (2.5, 0.5), (4, 1.0), (4, -0.1)])
def test_pool_validates(capacity, fraction) -> None:
    with pytest.raises(ValueError, match="replay"):
        SyntheticPool(capacity, fraction)


def test_shift_moves_the_image_and_fills_zeros() -> None:
    image = torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    rng = torch.Generator().manual_seed(0)
    shifted = shift_flip(image.repeat(64, 1, 1, 1), rng, max_shift=1, flip=False)
    padded = torch.nn.functional.pad(image, (1, 1, 1, 1))[0, 0]
    crops = {tuple(padded[dy:dy + 3, dx:dx + 3].flatten().tolist())
             for dy in range(3) for dx in range(3)}
    seen = {tuple(s[0].flatten().tolist()) for s in shifted}
    assert seen <= crops and len(seen) > 1  # only the 9 crops, and more than one of them


def test_flip_mirrors_left_right_or_keeps() -> None:
    image = torch.tensor([[[[1.0, 2.0, 3.0]]]])
    flipped = shift_flip(image.repeat(32, 1, 1, 1), torch.Generator().manual_seed(1),
                         max_shift=0, flip=True)
    seen = {tuple(f.flatten().tolist()) for f in flipped}
    assert seen == {(1.0, 2.0, 3.0), (3.0, 2.0, 1.0)}


def test_no_augmentation_is_the_identity_and_draws_nothing() -> None:
    rng = torch.Generator().manual_seed(0)
    state, images = rng.get_state(), torch.randn(4, 1, 4, 4)
    assert augmenter("none")(images, rng) is images
    assert torch.equal(rng.get_state(), state)
    with pytest.raises(ValueError, match="augmentation"):
        augmenter("rotate")


def test_synthesizer_defaults_are_the_plain_stream_and_the_pool_lends_old_images() -> None:
    plain = make_synthesizer(seed=3)
    off = make_synthesizer(seed=3, replay_pool_size=0, augmentation="none")
    for _ in range(2):
        assert torch.equal(plain.sample(16).images, off.sample(16).images)
    pooled = make_synthesizer(seed=3, replay_pool_size=16, replay_fraction=0.25)
    first = pooled.sample(16).images
    second = pooled.sample(16).images
    assert pooled.pool.size == 16
    old = {tuple(image.flatten().tolist()) for image in first}
    borrowed = [tuple(image.flatten().tolist()) in old for image in second]
    assert borrowed == [False] * 12 + [True] * 4
    assert pooled.sample(5).images.shape[0] == 5 and pooled.pool.size == 16  # metrics: unpooled


def test_synthesizer_state_carries_the_pool() -> None:
    source = make_synthesizer(seed=2, replay_pool_size=32, augmentation="shift-flip")
    source.sample(16)
    target = make_synthesizer(seed=9, replay_pool_size=32, augmentation="shift-flip")
    target.load_state_dict(source.state_dict())
    assert torch.equal(target.pool.images, source.pool.images)
    assert torch.equal(target.sample(16).images, source.sample(16).images)
