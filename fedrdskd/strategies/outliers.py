"""The outlier screen: a reply far from its round's median cannot take the round over.

:class:`OutlierScreen` compares each reply's claimed ``num-examples``, its update norm
``||w_k - w_global||`` and its parameter norm ``||w_k||`` with the round's medians; the
margins, and how they were measured, are in its docstring.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedrdskd.checks import check_number
from fedrdskd.strategies.replies import ClientModel

DEFAULT_MAX_NUM_EXAMPLES_RATIO = 100.0
"""Default margin of the size screen (see :class:`OutlierScreen` for the measurements)."""
DEFAULT_MAX_NORM_RATIO = 20.0
"""Default margin of the norm screens (see :class:`OutlierScreen` for the measurements)."""
NUM_EXAMPLES_RATIO_KEY = "num-examples-ratio-max"
UPDATE_NORM_RATIO_KEY = "update-norm-ratio-max"
MODEL_NORM_RATIO_KEY = "model-norm-ratio-min"


def update_norm(state_dict: Mapping[str, torch.Tensor],
                reference: Mapping[str, torch.Tensor] | None = None) -> float:
    """``||w - w_ref||`` over the floating-point arrays (``||w||`` without a reference)."""
    squares = 0.0
    for name, tensor in state_dict.items():
        if tensor.is_floating_point():
            difference = tensor.to(torch.float64)
            if reference is not None:
                difference = difference - reference[name].to(torch.float64)
            squares += float(torch.sum(difference * difference))
    return math.sqrt(squares)


def median_ratios(values: Sequence[float]) -> np.ndarray:
    """Each value over the median of ``values`` (0 over a 0 median is 1, else inf)."""
    array = np.asarray(values, dtype=np.float64)
    median = float(np.median(array))
    if median > 0:
        return array / median
    return np.where(array > 0, math.inf, 1.0)


@dataclass(frozen=True)
class _Check:
    """One screened quantity: its values, the allowed ratio to the median, and the side."""

    metric: str
    what: str
    values: list[float]
    limit: float
    below: bool = False  # the outliers are below median / limit (else above median * limit)

    def outliers(self) -> dict[int, str]:
        relative = median_ratios(self.values)
        flagged = relative < 1 / self.limit if self.below else relative > self.limit
        median = float(np.median(self.values))
        side = "below 1/" if self.below else "above "
        return {int(index): (f"its {self.what} {self.values[index]:.4g} is {relative[index]:.3g} "
                             f"times the round's median {median:.4g}, {side}{self.limit:g}")
                for index in np.flatnonzero(flagged)}

    def extreme(self, kept: Sequence[int]) -> float:
        relative = median_ratios(self.values)[list(kept)]
        if not len(relative):
            return math.nan
        return float(relative.min() if self.below else relative.max())


class OutlierScreen:
    """A robust screen of the round's replies against the round's medians.

    A reply is an outlier when its claimed ``num-examples`` is more than
    ``max_num_examples_ratio`` times the round's median, when its update norm
    ``||w_k - w_global||`` is more than ``max_norm_ratio`` times the round's median
    update norm (e.g. a layer of 1e30), or when its parameter norm ``||w_k||`` is less
    than the round's median parameter norm divided by ``max_norm_ratio`` (e.g. an
    all-zero model, whose update, the whole global model, is only a few times the
    median update). ``None`` switches a screen off. With fewer than three replies the
    median lies between the two and no ratio exceeds 2, so the screen cannot tell which
    one is wrong.

    The defaults never trip on the honest clients of the recorded settings
    (``python benchmarks/outlier_margins.py`` measures and prints these numbers). The
    largest honest ``num-examples`` over its round's median, over the seeded client
    sampling of rounds 1-100 and seeds 0-4 (and, after the slash, over *any* sample of
    the round's size), is 15.2 / 30.6 for MNIST with 20 clients at Dirichlet 0.05,
    9.3 / 9.3 at 0.1, 2.7 / 3.3 at 0.5, and 6.3 / 12.0 for CIFAR-10 with 100 clients at
    0.3. In real 2-round MNIST runs at Dirichlet 0.05 with 5 local epochs (seeds 0 and
    1) the largest honest update norm is 2.16 times its round's median, the smallest
    honest parameter norm 0.95 times its round's median, and an all-zero model's update
    norm 3.6-4.9 times the median (so the parameter-norm side catches it). The
    defaults, 100 and 20, leave margins of 3.3x (sizes, over the worst sample), 9x
    (updates) and 19x (parameters), and still catch the claims that took a round over
    in the issue's fuzzing (1e12 examples, a layer of 1e30, an all-zero model).

    Parameters
    ----------
    max_num_examples_ratio : float | None (default: 100.0)
        Largest ``num-examples`` relative to the round's median; > 1, or None (off).
    max_norm_ratio : float | None (default: 20.0)
        Largest update norm relative to the round's median, and the inverse of the
        smallest parameter norm relative to the round's median; > 1, or None (off).
    """

    def __init__(self, max_num_examples_ratio: float | None = DEFAULT_MAX_NUM_EXAMPLES_RATIO,
                 max_norm_ratio: float | None = DEFAULT_MAX_NORM_RATIO) -> None:
        for name, value in (("max_num_examples_ratio", max_num_examples_ratio),
                            ("max_norm_ratio", max_norm_ratio)):
            if value is not None:
                check_number(name, value, 1.0, math.inf, low_open=True)
        self.max_num_examples_ratio = max_num_examples_ratio
        self.max_norm_ratio = max_norm_ratio

    def describe(self) -> str:
        """The settings in one line, for a strategy's summary."""
        def shown(value: float | None) -> str:
            return "off" if value is None else f"{value:g}x the round's median"

        return (f"num-examples {shown(self.max_num_examples_ratio)} | norms "
                f"{shown(self.max_norm_ratio)}")

    def checks(self, members: Sequence[ClientModel],
               reference: Mapping[str, torch.Tensor] | None) -> list[_Check]:
        """The quantities to screen (the update norm needs the round's global model)."""
        checks = []
        if self.max_num_examples_ratio is not None:
            checks.append(_Check(NUM_EXAMPLES_RATIO_KEY, "num-examples",
                                 [member.num_examples for member in members],
                                 self.max_num_examples_ratio))
        if self.max_norm_ratio is not None:
            if reference is not None:
                checks.append(_Check(UPDATE_NORM_RATIO_KEY, "update norm",
                                     [update_norm(m.state_dict, reference) for m in members],
                                     self.max_norm_ratio))
            checks.append(_Check(MODEL_NORM_RATIO_KEY, "parameter norm",
                                 [update_norm(m.state_dict) for m in members],
                                 self.max_norm_ratio, below=True))
        return checks

    def problems(self, members: Sequence[ClientModel],
                 reference: Mapping[str, torch.Tensor] | None
                 ) -> tuple[dict[int, str], dict[str, float]]:
        """The outliers among ``members`` (index -> reason) and the kept ones' extreme ratios.

        ``reference`` is the global model the round's clients started from (without it,
        the update norms are not screened).
        """
        if not members:
            return {}, {}
        checks = self.checks(members, reference)
        found: dict[int, str] = {}
        for check in checks:
            for index, reason in check.outliers().items():
                found.setdefault(index, reason)
        kept = [index for index in range(len(members)) if index not in found]
        return found, {check.metric: check.extreme(kept) for check in checks}
