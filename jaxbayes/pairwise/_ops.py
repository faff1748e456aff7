r"""The reductions the pillars use, on top of :func:`~jaxbayes.pairwise.reduce`.

For a pairwise function ``K = pair_fn(x, y)`` (a cost or a kernel, ``(k, d), (l, d) -> (k, l)``):

* :func:`logsumexp`: :math:`\mathrm{out}_i = \log \sum_j \exp(h_j - K_{ij} / \varepsilon)` (``axis=1``) or
  :math:`\mathrm{out}_j = \log \sum_i \exp(h_i - K_{ij} / \varepsilon)` (``axis=0``): the Sinkhorn soft-min;
* :func:`matmul`: ``K @ v`` (``axis=1``) or ``K.T @ v`` (``axis=0``) for ``v`` of shape ``(m,)``/``(m, k)``;
* :func:`row_sums` / :func:`col_sums`: ``K @ w`` / ``K.T @ w`` with weights ``w`` (default ones).

``pair_fn`` is called as ``pair_fn(x_tile, y_tile)``, or ``pair_fn(x_tile, y_tile, params)`` when ``params``
is given (pass hyper-parameters there rather than closing over them, so they reach every device and
gradients with respect to them flow).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxbayes.pairwise._reduce import reduce
from jaxbayes.typing import Array, ArrayLike

PairFn = Callable[..., Array]


def _pairs(pair_fn: PairFn, params: Any, rows: Array, cols: Array, transposed: bool) -> Array:
    """The ``(rows, cols)`` tile of ``K`` when rows are ``x``, of ``K.T`` when rows are ``y``."""
    args = () if params is None else (params,)
    return pair_fn(cols, rows, *args).T if transposed else pair_fn(rows, cols, *args)


def _row_logsumexp(z: Array) -> Array:
    """``log sum_j exp(z_ij)`` per row, ``-inf`` for a row of ``-inf`` with a zero gradient there (where
    ``jax.nn.logsumexp``'s gradient is NaN: a tile of zero-weight, e.g. padded, points would poison the
    whole gradient through the monoid's ``0 * NaN``)."""
    top = jax.lax.stop_gradient(jnp.max(z, axis=1))
    safe = jnp.where(jnp.isfinite(top), top, 0.0)
    total = jnp.sum(jnp.exp(z - safe[:, None]), axis=1)
    pos = total > 0
    return jnp.where(pos, safe + jnp.log(jnp.where(pos, total, 1.0)), -jnp.inf)


def _check_axis(axis: int) -> None:
    if axis not in (0, 1):
        raise ValueError(f"axis must be 0 or 1, got {axis!r}")


def logsumexp(pair_fn: PairFn, x: ArrayLike, y: ArrayLike, h: ArrayLike | None = None, *, eps: ArrayLike = 1.0,
              axis: int = 1, params: Any = None, chunk_size: int | None = None) -> Array:
    r"""Soft-min of ``K / eps`` with potentials ``h`` along ``axis`` (see the module docstring).

    Args:
      pair_fn: the pairwise function; x, y: ``(n, d)``, ``(m, d)``.
      h: ``(m,)`` for ``axis=1``, ``(n,)`` for ``axis=0`` (default zeros).
      eps: the temperature (> 0). params: passed to ``pair_fn``. chunk_size: tile side (``None``: one tile).

    Example:
      >>> import jax.numpy as jnp
      >>> sq = lambda a, b: jnp.sum((a[:, None] - b[None]) ** 2, -1)
      >>> out = logsumexp(sq, jnp.zeros((2, 1)), jnp.zeros((3, 1)), chunk_size=2)
      >>> [round(v, 4) for v in out.tolist()]
      [1.0986, 1.0986]
    """
    _check_axis(axis)
    x, y = jnp.asarray(x), jnp.asarray(y)
    rows, cols = (x, y) if axis == 1 else (y, x)
    h = jnp.zeros(cols.shape[0], jnp.result_type(x.dtype, jnp.float32)) if h is None else jnp.asarray(h)
    if h.shape != (cols.shape[0],):
        raise ValueError(f"h must have shape ({cols.shape[0]},) for axis={axis}, got {h.shape}")

    def tile(p, rt, ct, _, hc, mask):
        prm, e = p
        z = hc[None, :] - _pairs(pair_fn, prm, rt, ct, axis == 0) / e
        return _row_logsumexp(jnp.where(mask[None, :], z, -jnp.inf))

    return reduce(tile, rows, cols, None, h, params=(params, jnp.asarray(eps, h.dtype)), combine="logsumexp",
                  chunk_size=chunk_size)


def matmul(pair_fn: PairFn, x: ArrayLike, y: ArrayLike, v: ArrayLike, *, axis: int = 1, params: Any = None,
           chunk_size: int | None = None) -> Array:
    """``K @ v`` (``axis=1``, ``v`` with ``m`` rows) or ``K.T @ v`` (``axis=0``, ``v`` with ``n`` rows), tile by tile.

    Example:
      >>> import jax.numpy as jnp
      >>> k = lambda a, b: jnp.exp(-jnp.sum((a[:, None] - b[None]) ** 2, -1))
      >>> matmul(k, jnp.zeros((2, 1)), jnp.zeros((3, 1)), jnp.ones(3), chunk_size=2).tolist()
      [3.0, 3.0]
    """
    _check_axis(axis)
    x, y, v = jnp.asarray(x), jnp.asarray(y), jnp.asarray(v)
    rows, cols = (x, y) if axis == 1 else (y, x)
    if v.ndim not in (1, 2) or v.shape[0] != cols.shape[0]:
        raise ValueError(f"v must have shape ({cols.shape[0]},) or ({cols.shape[0]}, k) for axis={axis}, "
                         f"got {v.shape}")

    def tile(p, rt, ct, _, vc, mask):
        kt = _pairs(pair_fn, p, rt, ct, axis == 0)
        kt = jnp.where(mask[None, :], kt, 0.0)
        return kt @ vc

    return reduce(tile, rows, cols, None, v, params=params, combine="sum", chunk_size=chunk_size)


def row_sums(pair_fn: PairFn, x: ArrayLike, y: ArrayLike, weights: ArrayLike | None = None, *,
             params: Any = None, chunk_size: int | None = None) -> Array:
    """``sum_j w_j K_ij`` for every row ``i`` (``weights`` default ones)."""
    y = jnp.asarray(y)
    w = jnp.ones(y.shape[0], jnp.result_type(y.dtype, jnp.float32)) if weights is None else weights
    return matmul(pair_fn, x, y, w, axis=1, params=params, chunk_size=chunk_size)


def col_sums(pair_fn: PairFn, x: ArrayLike, y: ArrayLike, weights: ArrayLike | None = None, *,
             params: Any = None, chunk_size: int | None = None) -> Array:
    """``sum_i w_i K_ij`` for every column ``j`` (``weights`` default ones)."""
    x = jnp.asarray(x)
    w = jnp.ones(x.shape[0], jnp.result_type(x.dtype, jnp.float32)) if weights is None else weights
    return matmul(pair_fn, x, y, w, axis=0, params=params, chunk_size=chunk_size)
