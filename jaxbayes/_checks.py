"""Shared argument validation with messages that name the argument and the expected value.

Checks on *static* properties (shapes, dtypes, Python-level hyper-parameters) raise at trace time.
Checks on *values* run only when the value is concrete (not a tracer): under ``jit`` they are skipped
silently, and users who want them there use ``validate=True`` options or ``jax.experimental.checkify``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax
import numpy as np


def concrete_value(x: Any) -> np.ndarray | None:
    """Return ``x`` as a NumPy array if it is concrete, or ``None`` if it is a tracer."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def check_positive(name: str, value: Any, *, strict: bool = True) -> None:
    """Raise ``ValueError`` if a concrete ``value`` is not (strictly) positive and finite."""
    v = concrete_value(value)
    if v is None:
        return
    bad = ~np.isfinite(v) | ((v <= 0) if strict else (v < 0))
    if np.any(bad):
        expected = "> 0" if strict else ">= 0"
        raise ValueError(f"{name} must be finite and {expected}, got {_short(v)}")


def check_int_range(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """Check that ``value`` is a Python integer in ``[low, high]`` and return it."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise ``ValueError`` if ``value`` is not one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(map(str, choices))}, got {value!r}")


def check_ndim(name: str, x: Any, ndim: int | Iterable[int]) -> None:
    """Raise ``ValueError`` if ``x`` does not have the expected number of dimensions."""
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if np.ndim(x) not in allowed:
        want = allowed[0] if len(allowed) == 1 else f"one of {allowed}"
        raise ValueError(f"{name} must have ndim {want}, got shape {np.shape(x)}")


def check_shape(name: str, x: Any, shape: tuple[int | None, ...]) -> None:
    """Raise ``ValueError`` unless ``x.shape`` matches ``shape`` (``None`` matches any size)."""
    got = np.shape(x)
    if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got, strict=True)):
        want = ", ".join("?" if s is None else str(s) for s in shape)
        raise ValueError(f"{name} must have shape ({want}), got {got}")


def check_same_shape(name_a: str, a: Any, name_b: str, b: Any) -> None:
    """Raise ``ValueError`` if two arrays (or pytrees of arrays) differ in shape."""
    sa = jax.tree.map(np.shape, a)
    sb = jax.tree.map(np.shape, b)
    if sa != sb:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {sa} and {sb}")


def check_finite(name: str, x: Any) -> None:
    """Raise ``ValueError`` if a concrete array contains NaN or infinity."""
    v = concrete_value(x)
    if v is not None and v.dtype.kind in "fc" and not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be finite; found {int(np.sum(~np.isfinite(v)))} non-finite entries")


def check_floating(name: str, x: Any) -> None:
    """Raise ``TypeError`` if ``x`` does not have a floating dtype."""
    dtype = x.dtype if hasattr(x, "dtype") else np.result_type(x)
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"{name} must have a floating dtype, got {dtype}")


def _short(v: np.ndarray) -> str:
    return str(v.item()) if v.size == 1 else f"array with min {v.min()!r} (shape {v.shape})"


__all__ = [
    "check_choice",
    "check_finite",
    "check_floating",
    "check_int_range",
    "check_ndim",
    "check_positive",
    "check_same_shape",
    "check_shape",
    "concrete_value",
]
