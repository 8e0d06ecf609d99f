"""A stable synthetic distribution across rounds: a pool of earlier samples and augmentation.

A generator warm-started from round to round follows each round's teacher, so the
student sees a different synthetic distribution every round and can forget what
earlier rounds' samples taught it. Two remedies from the continual-learning view of
server-side distillation ("retain while acquiring", as in the LRA paper):

- :class:`SyntheticPool` keeps the last ``capacity`` synthetic images (FIFO) and lends
  a share of every student batch to them; their targets are the *current* teacher's
  outputs, so old samples are relabelled, not replayed with stale labels;
- :func:`shift_flip` augments a batch with random shifts (zero padding, then a crop
  back to size) and horizontal flips, as for 32x32 natural images.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("none", "shift", "shift-flip")


class SyntheticPool:
    """The last ``capacity`` synthetic images, lent to student batches.

    Parameters
    ----------
    capacity : int
        Images kept (0 = no pool: :meth:`mix` returns its input unchanged).
    fraction : float
        Share of a student batch taken from the pool, in [0, 1) (once the pool holds
        enough images; before that the batch stays fresh).
    """

    def __init__(self, capacity: int, fraction: float) -> None:
        if int(capacity) != capacity or capacity < 0:
            raise ValueError(f"replay pool capacity must be an int >= 0, got {capacity!r}.")
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"replay fraction must be in [0, 1), got {fraction!r}.")
        self.capacity = int(capacity)
        self.fraction = float(fraction)
        self.images: torch.Tensor | None = None

    @property
    def size(self) -> int:
        """Images held now."""
        return 0 if self.images is None else len(self.images)

    def mix(self, fresh: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """``fresh`` with its last ``round(fraction * B)`` rows replaced by pool images.

        The pool images are drawn without replacement with ``rng``; afterwards the
        fresh images enter the pool (the oldest leave), so a batch never borrows
        from itself.
        """
        if self.capacity == 0:
            return fresh
        borrowed = int(round(self.fraction * len(fresh)))
        mixed = fresh
        if self.images is not None and 0 < borrowed <= self.size:
            order = torch.randperm(self.size, generator=rng, device=rng.device)[:borrowed]
            mixed = torch.cat([fresh[:len(fresh) - borrowed],
                               self.images[order.to(self.images.device)]])
        self._add(fresh.detach())
        return mixed

    def _add(self, images: torch.Tensor) -> None:
        pooled = images if self.images is None else torch.cat([self.images, images])
        self.images = pooled[-self.capacity:].clone()

    def state_dict(self) -> dict[str, Any]:
        """The pooled images (for checkpoints)."""
        return {"images": None if self.images is None else self.images.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        images = state["images"]
        self.images = None if images is None else images.clone()


def shift_flip(images: torch.Tensor, rng: torch.Generator, *, max_shift: int,
               flip: bool) -> torch.Tensor:
    """Each image shifted by up to ``max_shift`` pixels (zeros fill in), maybe mirrored.

    With ``flip``, an image is mirrored left-right with probability 1/2; draws come from
    ``rng``. ``max_shift = 0`` and ``flip = False`` return ``images`` unchanged.
    """
    if max_shift == 0 and not flip:
        return images
    batch, _, height, width = images.shape
    device = rng.device
    if flip:
        mirrored = torch.rand(batch, generator=rng, device=device) < 0.5
        images = torch.where(mirrored.to(images.device)[:, None, None, None],
                             images.flip(3), images)
    if max_shift == 0:
        return images
    padded = F.pad(images, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (batch, 2), generator=rng, device=device)
    return torch.stack([padded[i, :, dy:dy + height, dx:dx + width]
                        for i, (dy, dx) in enumerate(offsets.tolist())])


def augmenter(kind: str, max_shift: int = 4):
    """The augmentation named ``kind`` (:data:`AUGMENTATIONS`) as ``f(images, rng)``.

    Raises
    ------
    ValueError
        For an unknown ``kind``.
    """
    if kind not in AUGMENTATIONS:
        raise ValueError(f"synthetic augmentation must be one of {AUGMENTATIONS}, "
                         f"got {kind!r}.")
    shift = 0 if kind == "none" else max_shift
    return lambda images, rng: shift_flip(images, rng, max_shift=shift,
                                          flip=kind == "shift-flip")
