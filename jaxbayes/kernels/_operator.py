r"""Matrix-free kernel operators: a kernel function and its inputs, never the ``n x n`` matrix.

A :class:`KernelOperator` holds training inputs ``x`` ``(n, d)``, hyper-parameters ``params`` and a pair
function ``pair_fn(x_tile, y_tile, params) -> (k, l)``; its products ``K @ v`` go through
:func:`jaxbayes.pairwise.matmul` (tiles of ``chunk_size x chunk_size``, sharded when ``x`` is), so memory is
``O(n * chunk_size)`` and the GP solvers of :mod:`jaxbayes.kernels._bbmm` reach large ``n`` (Gardner et al.,
2018, "GPyTorch: Blackbox Matrix-Matrix Gaussian Process Inference with GPU Acceleration").

Stationary pair functions take ``params = {"lengthscale": l, "variance": s2}`` (``l`` a scalar or one per
input dimension, both > 0), with ``r^2 = sum_k (x_k - y_k)^2 / l_k^2``:

* :func:`rbf`: ``k(x, y) = s2 exp(-r^2 / 2)``;
* :func:`matern52`: ``k(x, y) = s2 (1 + sqrt5 r + 5 r^2 / 3) exp(-sqrt5 r)`` (Rasmussen & Williams, 2006, 4.2).

:func:`nngp_pair_fn` adapts a network's ``kernel_fn`` (``kernels.serial(...)``) to a pair function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxbayes import pairwise
from jaxbayes._checks import check_choice, check_int_range, check_ndim, check_positive
from jaxbayes.kernels._math import safe_sqrt
from jaxbayes.parallel import unshard
from jaxbayes.typing import Array, ArrayLike, PyTree


def _scaled_sq_dist(x: Array, y: Array, params: dict) -> Array:
    if not isinstance(params, dict) or "lengthscale" not in params or "variance" not in params:
        raise ValueError(f"params must be a dict with 'lengthscale' and 'variance', got {params!r}")
    ls = jnp.asarray(params["lengthscale"])
    check_positive("lengthscale", ls)
    check_positive("variance", params["variance"])
    if ls.ndim > 1 or (ls.ndim == 1 and ls.shape[0] not in (1, x.shape[-1])):
        raise ValueError(f"lengthscale must be a scalar or have {x.shape[-1]} entries, got shape {ls.shape}")
    a, b = x / ls, y / ls
    # |a|^2 + |b|^2 - 2 a.b is one matmul per tile; clipped at 0 against rounding
    d2 = jnp.sum(a * a, -1)[:, None] + jnp.sum(b * b, -1)[None, :] - 2 * a @ b.T
    return jnp.maximum(d2, 0.0)


def rbf(x: Array, y: Array, params: dict) -> Array:
    """Squared-exponential kernel ``variance * exp(-|x - y|^2 / (2 lengthscale^2))`` between rows.

    Example:
      >>> import jax.numpy as jnp
      >>> k = rbf(jnp.zeros((1, 1)), jnp.ones((1, 1)), {"lengthscale": 1.0, "variance": 2.0})
      >>> round(float(k[0, 0]), 4)
      1.2131
    """
    d2 = _scaled_sq_dist(x, y, params)
    return params["variance"] * jnp.exp(-0.5 * d2)


def matern52(x: Array, y: Array, params: dict) -> Array:
    """Matern-5/2 kernel ``variance * (1 + sqrt5 r + 5 r^2 / 3) exp(-sqrt5 r)``, ``r = |x - y| / lengthscale``.

    Example:
      >>> import jax.numpy as jnp
      >>> k = matern52(jnp.zeros((1, 1)), jnp.ones((1, 1)), {"lengthscale": 1.0, "variance": 1.0})
      >>> round(float(k[0, 0]), 4)
      0.524
    """
    d2 = _scaled_sq_dist(x, y, params)
    r = jnp.sqrt(5.0) * safe_sqrt(d2)
    return params["variance"] * (1 + r + r * r / 3) * jnp.exp(-r)


def nngp_pair_fn(kernel_fn: Callable, get: str = "nngp") -> Callable:
    """A pair function ``(x_tile, y_tile) -> kernel_fn(x_tile, y_tile).<get>`` for an NNGP/NTK ``kernel_fn``.

    Use with ``params=None`` (the network's hyper-parameters are fixed when its layers are built).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbayes.kernels import Dense, ReLU, serial
      >>> op = kernel_operator(nngp_pair_fn(serial(Dense(1), ReLU(), Dense(1)).kernel_fn), jnp.ones((3, 2)))
      >>> op.shape
      (3, 3)
    """
    check_choice("get", get, ("nngp", "ntk"))
    return lambda a, b: getattr(kernel_fn(a, b), get)


def _call(pair_fn: Callable, a: Array, b: Array, params: Any) -> Array:
    return pair_fn(a, b) if params is None else pair_fn(a, b, params)


@dataclasses.dataclass(frozen=True)
class KernelOperator:
    """``K = pair_fn(x, x, params)`` as an operator (a pytree: ``x`` and ``params`` are leaves).

    Attributes:
      x: ``(n, d)`` training inputs (may be sharded over a mesh: products are then computed per block).
      params: hyper-parameters passed to ``pair_fn`` (``None``: ``pair_fn(a, b)``).
      pair_fn: ``(x_tile, y_tile[, params]) -> (k, l)`` kernel tile (static).
      chunk_size: tile side of the products (static).
    """

    x: Array
    params: PyTree
    pair_fn: Callable = dataclasses.field(metadata=dict(static=True))
    chunk_size: int | None = dataclasses.field(default=1024, metadata=dict(static=True))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.x.shape[0], self.x.shape[0])

    @property
    def dtype(self):
        return jax.eval_shape(lambda: self.rows(jnp.zeros(1, int))).dtype

    def matmul(self, v: ArrayLike) -> Array:
        """``K @ v`` for ``v`` ``(n,)`` or ``(n, c)``, tile by tile (gathered to every device)."""
        return unshard(pairwise.matmul(self.pair_fn, self.x, self.x, v, params=self.params,
                                       chunk_size=self.chunk_size))

    def rows(self, idx: ArrayLike) -> Array:
        """Rows ``K[idx, :]``, ``(len(idx), n)``."""
        x = unshard(self.x)
        return _call(self.pair_fn, x[jnp.asarray(idx)], x, self.params)

    def diagonal(self) -> Array:
        """``diag(K)``, ``(n,)``, one pair at a time (``chunk_size`` points per batch)."""
        x = unshard(self.x)
        one = lambda xi: _call(self.pair_fn, xi[None], xi[None], self.params)[0, 0]  # noqa: E731
        return jax.lax.map(one, x, batch_size=self.chunk_size)

    def cross(self, x_test: ArrayLike) -> CrossOperator:
        """The ``(m, n)`` operator ``k(x_test, x)`` for prediction."""
        x_test = jnp.asarray(x_test)
        check_ndim("x_test", x_test, self.x.ndim)
        if x_test.shape[1:] != self.x.shape[1:]:
            raise ValueError(f"x_test must have per-point shape {self.x.shape[1:]}, got {x_test.shape[1:]}")
        return CrossOperator(x_test, self.x, self.params, self.pair_fn, self.chunk_size)

    def dense(self) -> Array:
        """The whole ``(n, n)`` matrix (for tests and small ``n`` only)."""
        x = unshard(self.x)
        return _call(self.pair_fn, x, x, self.params)


@dataclasses.dataclass(frozen=True)
class CrossOperator:
    """``k(x_test, x_train)`` as an ``(m, n)`` operator (from :meth:`KernelOperator.cross`)."""

    x_test: Array
    x_train: Array
    params: PyTree
    pair_fn: Callable = dataclasses.field(metadata=dict(static=True))
    chunk_size: int | None = dataclasses.field(default=1024, metadata=dict(static=True))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.x_test.shape[0], self.x_train.shape[0])

    def matmul(self, v: ArrayLike) -> Array:
        """``K_*X @ v`` for ``v`` with ``n`` rows."""
        return unshard(pairwise.matmul(self.pair_fn, self.x_test, self.x_train, v, params=self.params,
                                       chunk_size=self.chunk_size))

    def dense(self) -> Array:
        """The ``(m, n)`` matrix (its transpose is what the variance solves need; ``O(m n)`` memory)."""
        return _call(self.pair_fn, unshard(self.x_test), unshard(self.x_train), self.params)


for _cls, _data in ((KernelOperator, ["x", "params"]), (CrossOperator, ["x_test", "x_train", "params"])):
    jax.tree_util.register_dataclass(_cls, data_fields=_data, meta_fields=["pair_fn", "chunk_size"])


def kernel_operator(pair_fn: Callable, x: ArrayLike, params: PyTree = None, *,
                    chunk_size: int | None = 1024) -> KernelOperator:
    """The matrix-free kernel operator ``K = pair_fn(x, x, params)`` (see the module docstring).

    Args:
      pair_fn: ``(x_tile, y_tile, params) -> (k, l)`` (e.g. :func:`rbf`, :func:`matern52`), or
        ``(x_tile, y_tile)`` when ``params`` is ``None`` (e.g. :func:`nngp_pair_fn`).
      x: ``(n, d)`` inputs. params: hyper-parameters (a pytree, differentiable).
      chunk_size: tile side for the products (``None``: one tile).

    Example:
      >>> import jax.numpy as jnp
      >>> op = kernel_operator(rbf, jnp.zeros((3, 1)), {"lengthscale": 1.0, "variance": 2.0})
      >>> op.matmul(jnp.ones(3)).tolist()
      [6.0, 6.0, 6.0]
    """
    if not callable(pair_fn):
        raise TypeError(f"pair_fn must be callable, got {type(pair_fn).__name__}")
    x = jnp.asarray(x)
    check_ndim("x", x, 2)
    if x.shape[0] < 1:
        raise ValueError("x must have at least one point")
    if chunk_size is not None:
        check_int_range("chunk_size", chunk_size, 1)
    # evaluate one tile now so that bad params (shapes, non-positive lengthscale) raise here
    jax.eval_shape(lambda xx, p: _call(pair_fn, xx[:1], xx[:1], p), unshard(x), params)
    if params is not None:
        _check_concrete_params(pair_fn, x, params)
    return KernelOperator(x, params, pair_fn, chunk_size)


def _check_concrete_params(pair_fn, x, params) -> None:
    if pair_fn in (rbf, matern52):
        # value checks are skipped under eval_shape; run them on the concrete values
        _scaled_sq_dist(jnp.zeros((1, x.shape[1]), x.dtype), jnp.zeros((1, x.shape[1]), x.dtype), params)


__all__ = ["CrossOperator", "KernelOperator", "kernel_operator", "matern52", "nngp_pair_fn", "rbf"]
