"""Checks of the integer arguments and indices the datasets take, with errors that say what was expected."""

from __future__ import annotations

import operator


def int_arg(name: str, value: object, lo: int, hi: int | None, hint: str = "") -> int:
    """``value`` as an int in [lo, hi] (``hi`` None: no upper bound), or a ValueError naming it and why."""
    try:
        out = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        out = None
    if out is None or isinstance(value, bool) or out < lo or (hi is not None and out > hi):
        bound = f"an int >= {lo}" if hi is None else f"an int in {lo}..{hi}"
        raise ValueError(f"{name}={value!r} is invalid; expected {bound}. {hint}".rstrip())
    return out


def item_index(index: object, size: int, owner: object) -> int:
    """``index`` as an int in [0, size), a TypeError or an IndexError naming ``owner`` otherwise."""
    try:
        i = operator.index(index)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"index={index!r} must be an int, got {type(index).__name__}") from None
    if not 0 <= i < size:
        raise IndexError(f"index={i} is out of range for {owner!r}; expected 0 <= index < {size}.")
    return i
