"""Points on the line between two models of one architecture (the fine-tune's trust region)."""

from __future__ import annotations

from collections.abc import Mapping

import torch


def interpolate_states(start: Mapping[str, torch.Tensor], end: Mapping[str, torch.Tensor],
                       beta: float) -> dict[str, torch.Tensor]:
    """``start + β (end − start)`` for floating-point tensors; other entries from ``end``.

    With ``start`` the aggregate and ``end`` the distilled model: ``β = 1`` keeps the
    distilled model, ``β = 0`` the aggregate (exactly), values between move the
    aggregate part of the way towards what distillation found and values above 1
    extrapolate along that direction. Integer buffers (e.g.
    BatchNorm's step counter) are taken from ``end``.
    """
    if set(start) != set(end):
        raise ValueError(f"interpolate_states needs two state_dicts with the same keys, "
                         f"got {sorted(set(start) ^ set(end))} in only one of them.")
    if beta == 0.0:
        return {name: value.clone() for name, value in start.items()}
    return {name: (start[name] + beta * (value - start[name])
                   if value.is_floating_point() else value.clone())
            for name, value in end.items()}
