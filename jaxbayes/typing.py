"""Type aliases and the Protocols of the duck types that jaxbayes functions accept.

A Protocol says what an argument must do, not what class it must be: any object with these methods works
(a user's own SDE, geometry or variational family included). Pillar code annotates public arguments with them.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeAlias, runtime_checkable

import jax
import numpy as np

Array: TypeAlias = jax.Array
ArrayLike: TypeAlias = jax.typing.ArrayLike
DTypeLike: TypeAlias = jax.typing.DTypeLike
PRNGKey: TypeAlias = jax.Array
PyTree: TypeAlias = Any
Shape: TypeAlias = tuple[int, ...]
NumpyArray: TypeAlias = np.ndarray


class ScoreFn(Protocol):
    def __call__(self, x: Array, t: Array, /) -> Array:
        """The score ``grad_x log p_t(x)`` of one sample ``x`` at diffusion time ``t`` (same shape as ``x``)."""


class DenoiseFn(Protocol):
    def __call__(self, x: Array, sigma: Array, /) -> Array:
        """The posterior mean ``E[x_0 | x_sigma = x]`` of one sample at noise level ``sigma`` (EDM's ``D``)."""


class LogDensityFn(Protocol):
    def __call__(self, position: PyTree, /, *batch: PyTree) -> Array:
        """A scalar log density (unnormalised) of ``position``, optionally given a data ``batch``."""


@runtime_checkable
class SDE(Protocol):
    """A forward diffusion ``dx = f(x, t) dt + g(t) dw`` on ``[0, T]`` with a tractable Gaussian marginal."""

    T: float

    def drift(self, x: Array, t: ArrayLike) -> Array:
        """``f(x, t)``."""

    def diffusion(self, t: ArrayLike) -> Array:
        """``g(t)``."""

    def marginal(self, x0: Array, t: ArrayLike) -> tuple[Array, Array]:
        """Mean and standard deviation of ``p_t(x | x0)``."""

    def prior_sample(self, key: PRNGKey, shape: Shape, dtype: Any = None) -> Array:
        """A draw from the prior ``p_T``."""

    def prior_logp(self, z: Array) -> Array:
        """``log p_T(z)`` of one sample."""


@runtime_checkable
class Geometry(Protocol):
    """What an OT solver needs of the costs between ``n`` source and ``m`` target points."""

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, m)``."""

    def lse(self, h: Array, eps: Array, axis: int) -> Array:
        """Soft-min reduction ``eps * logsumexp((h - C) / eps)`` along ``axis`` of the cost matrix."""


@runtime_checkable
class Family(Protocol):
    """A variational distribution ``q`` over a parameter pytree (its ``mean`` has the model's structure)."""

    def sample(self, key: PRNGKey, num: int) -> PyTree:
        """``num`` draws stacked along a new leading axis."""

    def log_prob(self, theta: PyTree) -> Array:
        """``log q(theta)`` of one draw."""

    def entropy(self) -> Array:
        """The entropy of ``q``."""

    def covariance(self) -> Array:
        """The dense ``(d, d)`` covariance over the flattened parameters."""


__all__ = ["Array", "ArrayLike", "DTypeLike", "DenoiseFn", "Family", "Geometry", "LogDensityFn", "NumpyArray",
           "PRNGKey", "PyTree", "SDE", "ScoreFn", "Shape"]
