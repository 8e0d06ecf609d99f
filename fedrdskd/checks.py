"""The one check of a setting's value: a message naming the key, the value and what is allowed.

Used for the experiment config (:mod:`fedrdskd.experiment`) and for the strategies'
keyword arguments, so every invalid value is refused at construction with the same
message, e.g. ``Invalid config value generator_lr=0.0: allowed range is (0.0, inf].``
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any


def invalid(key: str, value: Any, allowed: str) -> ValueError:
    """The error for ``key=value``, saying what is ``allowed`` (to raise)."""
    return ValueError(f"Invalid config value {key}={value!r}: {allowed}.")


def check_number(key: str, value: Any, low: float = -math.inf, high: float = math.inf, *,
                 low_open: bool = False, integer: bool = False) -> Any:
    """``value`` if it is a finite number in ``[low, high]`` (``(low, high]``), else raise.

    Parameters
    ----------
    key : str
        The setting's name as the user writes it (``partition.alpha``, ``generator_steps``).
    value : Any
        The value to check; booleans are not numbers here.
    low, high : float (default: -inf, inf)
        The allowed range; ``high`` is included.
    low_open : bool (default: False)
        Exclude ``low`` (e.g. a learning rate must be > 0).
    integer : bool (default: False)
        Also require a whole number.

    Returns
    -------
    int | float
        ``int(value)`` with ``integer``, else ``float(value)``.

    Raises
    ------
    ValueError
        Naming the key, the value and the allowed range.
    """
    kind = "an integer" if integer else "a number"
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (is_number and math.isfinite(value)
            and (not integer or float(value).is_integer())):
        raise invalid(key, value, f"must be {kind}")
    above = value > low if low_open else value >= low
    if not (above and value <= high):
        raise invalid(key, value, f"allowed range is {'(' if low_open else '['}{low}, {high}]")
    return int(value) if integer else float(value)


def check_choice(key: str, value: Any, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``, else raise naming the allowed values."""
    if value not in allowed:
        raise invalid(key, value, f"allowed values are {', '.join(allowed)}")
    return str(value)


def check_flag(key: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False``, else raise naming the key."""
    if not isinstance(value, bool):
        raise invalid(key, value, "must be true or false")
    return value


def check_device(key: str, value: Any) -> str:
    """``value`` if torch can place a tensor on that device here, else raise naming the key."""
    import torch

    try:
        torch.zeros(1, device=torch.device(str(value)))
    except Exception as error:  # noqa: BLE001 - torch raises several kinds for this
        raise invalid(key, value, f"torch cannot use this device here ({error}); give cpu "
                      "or a device this machine has (e.g. cuda:0 with a GPU)") from error
    return str(value)
