"""Top-k selection and (sparse) simplex projections: the building blocks of sparsity-constrained OT.

The k-sparse simplex projection (Kyrillidis et al. 2013, "Sparse projections onto the simplex") keeps the
top-``k`` entries and projects them onto the simplex (Held et al. 1974; Condat 2016 for the sorted method).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_int_range
from jaxbayes.typing import Array, ArrayLike


def top_k_positive(s: ArrayLike, k: int) -> tuple[Array, Array]:
    """Values of ``top_k([s]_+)`` along the last axis (``(..., k)``, sorted) and their indices."""
    s = jnp.asarray(s)
    if k >= s.shape[-1]:
        return jnp.maximum(s, 0.0), jnp.broadcast_to(jnp.arange(s.shape[-1]), s.shape)
    vals, idx = top_k(s, k)
    return jnp.maximum(vals, 0.0), idx


SMALL_K = 16


def top_k(s: ArrayLike, k: int) -> tuple[Array, Array]:
    """The ``k`` largest entries along the last axis, sorted descending, and their indices.

    ``k <= 16``: ``k`` arg-max passes (first index wins ties); larger ``k``: ``jax.lax.top_k``. The values
    are gathered from ``s``, so gradients flow to the selected entries.

    Example:
      >>> import jax.numpy as jnp
      >>> [v.tolist() for v in top_k(jnp.array([0.1, 0.7, 0.3]), 2)]
      [[0.699999988079071, 0.30000001192092896], [1, 2]]
    """
    s = jnp.asarray(s)
    if k > SMALL_K:
        _, idx = jax.lax.top_k(jax.lax.stop_gradient(s), k)
        return jnp.take_along_axis(s, idx, axis=-1), idx
    masked = jax.lax.stop_gradient(s)
    positions = jnp.arange(s.shape[-1])
    picks = []
    for _ in range(k):
        i = jnp.argmax(masked, axis=-1)
        picks.append(i)
        masked = jnp.where(positions == i[..., None], -jnp.inf, masked)
    idx = jnp.stack(picks, axis=-1)
    return jnp.take_along_axis(s, idx, axis=-1), idx


def simplex_sorted(v: Array, radius: Array) -> tuple[Array, Array]:
    """Project rows of ``v`` (sorted descending along the last axis) onto ``{u >= 0, sum u = radius}``.

    Returns the projection (same order) and the threshold ``theta`` with ``u = [v - theta]_+``.
    """
    k = v.shape[-1]
    css = jnp.cumsum(v, axis=-1) - radius[..., None]
    ind = jnp.arange(1, k + 1, dtype=v.dtype)
    support = (v - css / ind) > 0
    rho = jnp.sum(support, axis=-1, keepdims=True)
    theta = jnp.take_along_axis(css, rho - 1, axis=-1) / rho.astype(v.dtype)
    return jnp.maximum(v - theta, 0.0), theta[..., 0]


def sparse_simplex_projection(x: ArrayLike, k: int, *, radius: ArrayLike = 1.0) -> Array:
    """Euclidean projection of each row of ``x`` onto the k-sparse simplex
    ``{u >= 0, sum u = radius, ||u||_0 <= k}``: the top-``k`` entries projected onto the simplex.

    Differentiable (almost everywhere) and ``vmap``-able.

    Example:
      >>> import jax.numpy as jnp
      >>> [round(v, 3) for v in sparse_simplex_projection(jnp.array([0.5, 0.3, 0.2]), 2).tolist()]
      [0.6, 0.4, 0.0]
    """
    x = jnp.asarray(x)
    n = x.shape[-1]
    check_int_range("k", k, 1, n)
    r = jnp.broadcast_to(jnp.asarray(radius, x.dtype), x.shape[:-1])
    if k >= n:
        order = jnp.argsort(-x, axis=-1)
        vals = jnp.take_along_axis(x, order, axis=-1)
    else:
        vals, order = top_k(x, k)
    proj, _ = simplex_sorted(vals, r)
    return scatter_last(proj, order, n)


def scatter_last(vals: Array, idx: Array, n: int) -> Array:
    """Put ``vals[..., r]`` at position ``idx[..., r]`` of zero rows of length ``n`` (differentiable)."""
    flat_v = vals.reshape(-1, vals.shape[-1])
    flat_i = idx.reshape(-1, idx.shape[-1])
    out = jax.vmap(lambda v, i: jnp.zeros((n,), vals.dtype).at[i].set(v))(flat_v, flat_i)
    return out.reshape(*vals.shape[:-1], n)


__all__ = ["scatter_last", "simplex_sorted", "sparse_simplex_projection", "top_k", "top_k_positive"]
