"""Ground costs between points: squared Euclidean, Euclidean^p, cosine, user functions, ott-jax costs.

A cost is a small frozen (hashable) object with ``pairwise(x, y) -> (n, m)`` and ``__call__(x, y)`` for
one pair of points, so it can be a static argument of jitted functions. :func:`as_cost` turns names,
plain functions and ``ott.geometry.costs.CostFn`` instances into such objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxbayes.typing import Array


class Cost:
    """Base class: ``c(x, y)`` for one pair of points of shape ``(d,)``; ``pairwise`` for all pairs."""

    def __call__(self, x: Array, y: Array) -> Array:
        raise NotImplementedError

    def pairwise(self, x: Array, y: Array) -> Array:
        """All-pairs cost matrix ``C[i, j] = c(x[i], y[j])`` of shape ``(n, m)``."""
        return jax.vmap(lambda xi: jax.vmap(lambda yj: self(xi, yj))(y))(x)


@dataclasses.dataclass(frozen=True)
class SqEuclidean(Cost):
    r"""Squared Euclidean cost :math:`c(x, y) = \|x - y\|^2`, computed all-pairs with one matmul.

    Example:
      >>> import jax.numpy as jnp
      >>> SqEuclidean().pairwise(jnp.zeros((1, 2)), jnp.ones((2, 2))).tolist()
      [[2.0, 2.0]]
    """

    def __call__(self, x, y):
        return jnp.sum((x - y) ** 2)

    def pairwise(self, x, y):
        xx = jnp.sum(x * x, axis=-1)[:, None]
        yy = jnp.sum(y * y, axis=-1)[None, :]
        return jnp.maximum(xx + yy - 2.0 * x @ y.T, 0.0)


@dataclasses.dataclass(frozen=True)
class Euclidean(Cost):
    r"""Euclidean distance to a power, :math:`c(x, y) = \|x - y\|_2^p` (``p=1``: the distance itself).

    The distance uses a gradient-safe square root (zero gradient at ``x == y``).

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(Euclidean(p=1.0)(jnp.zeros(2), jnp.array([3.0, 4.0]))), 4)
      5.0
    """

    p: float = 1.0

    def __call__(self, x, y):
        sq = jnp.sum((x - y) ** 2)
        return _safe_pow(sq, self.p / 2)

    def pairwise(self, x, y):
        return _safe_pow(SqEuclidean().pairwise(x, y), self.p / 2)


def _safe_pow(sq: Array, power: float) -> Array:
    positive = sq > 0
    safe = jnp.where(positive, sq, 1.0)
    return jnp.where(positive, safe**power, 0.0)


@dataclasses.dataclass(frozen=True)
class Cosine(Cost):
    r"""Cosine distance :math:`c(x, y) = 1 - \langle x, y\rangle / (\|x\| \|y\|)`, in ``[0, 2]``.

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(Cosine()(jnp.array([1.0, 0.0]), jnp.array([0.0, 2.0]))), 4)
      1.0
    """

    ridge: float = 1e-12

    def __call__(self, x, y):
        return 1.0 - jnp.dot(x, y) / jnp.sqrt((jnp.dot(x, x) + self.ridge) * (jnp.dot(y, y) + self.ridge))

    def pairwise(self, x, y):
        xn = x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + self.ridge)
        yn = y / jnp.sqrt(jnp.sum(y * y, axis=-1, keepdims=True) + self.ridge)
        return 1.0 - xn @ yn.T


@dataclasses.dataclass(frozen=True)
class FunctionCost(Cost):
    """A user cost ``fn(x, y) -> scalar`` on single points, mapped over all pairs with ``vmap``."""

    fn: Callable[[Array, Array], Array]

    def __call__(self, x, y):
        return self.fn(x, y)


@dataclasses.dataclass(frozen=True)
class OttCost(Cost):
    """Wraps an ``ott.geometry.costs.CostFn`` (interoperability with ott-jax)."""

    cost_fn: Any

    def __call__(self, x, y):
        return self.cost_fn(x, y)

    def pairwise(self, x, y):
        return self.cost_fn.all_pairs(x, y)


_NAMED = {"sqeuclidean": SqEuclidean, "euclidean": Euclidean, "cosine": Cosine}


def as_cost(cost: str | Cost | Callable | Any) -> Cost:
    """Turn ``cost`` into a :class:`Cost`.

    Args:
      cost: ``"sqeuclidean"``, ``"euclidean"``, ``"cosine"``, a :class:`Cost`, an ott-jax ``CostFn`` or a
        function ``fn(x, y) -> scalar`` of two points.

    Returns:
      A hashable :class:`Cost`.

    Example:
      >>> as_cost("sqeuclidean")
      SqEuclidean()
    """
    if isinstance(cost, Cost):
        return cost
    if isinstance(cost, str):
        if cost not in _NAMED:
            raise ValueError(f"cost must be one of {sorted(_NAMED)}, a Cost or a function, got {cost!r}")
        return _NAMED[cost]()
    try:
        from ott.geometry.costs import CostFn
    except ImportError:  # pragma: no cover - ott-jax is a core dependency
        CostFn = ()
    if CostFn and isinstance(cost, CostFn):
        return OttCost(cost)
    if callable(cost):
        return FunctionCost(cost)
    raise TypeError(f"cost must be a name, a Cost, an ott-jax CostFn or a callable, got {type(cost).__name__}")
