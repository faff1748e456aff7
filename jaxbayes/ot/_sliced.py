r"""Sliced Wasserstein-2 distance between two samples (Rabin et al. 2011; Bonneel et al. 2015).

.. math:: SW_2(\mu, \nu)^2 = \mathbb{E}_{\theta \sim U(S^{d-1})}\, W_2^2(\theta_\# \mu, \theta_\# \nu),
   \qquad W_2^2 \text{ in 1-D} = \int_0^1 (F_\mu^{-1}(t) - F_\nu^{-1}(t))^2\, dt.

The expectation over directions is a Monte-Carlo mean over ``num_projections`` random unit vectors; the 1-D
integral is a midpoint rule over ``num_quantiles`` empirical quantiles, so the two samples may differ in size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_int_range, check_ndim
from jaxbayes.parallel import unshard
from jaxbayes.typing import Array, ArrayLike, PRNGKey


def sliced_wasserstein(key: PRNGKey, x: ArrayLike, y: ArrayLike, *, num_projections: int = 64,
                       num_quantiles: int = 100) -> Array:
    """Sliced W2 distance between the empirical measures of ``x (n, d)`` and ``y (m, d)``.

    Args:
      key: draws the projection directions (the same key gives the same directions).
      x, y: samples with the same dimension ``d``.
      num_projections: number of random unit directions.
      num_quantiles: quantile levels ``(k + 1/2) / num_quantiles`` of each projection.

    Returns:
      The scalar :math:`SW_2` estimate.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jax.random.normal(jax.random.key(0), (500, 3))
      >>> round(float(sliced_wasserstein(jax.random.key(1), x, x + jnp.array([1.0, 0.0, 0.0]))), 2)
      0.58
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    check_ndim("x", x, 2)
    check_ndim("y", y, 2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    if x.shape[0] == 0 or y.shape[0] == 0:
        raise ValueError(f"x and y must be non-empty, got {x.shape[0]} and {y.shape[0]} points")
    num_projections = check_int_range("num_projections", num_projections, 1)
    num_quantiles = check_int_range("num_quantiles", num_quantiles, 1)
    dtype = jnp.result_type(x, y, float)
    dirs = jax.random.normal(key, (num_projections, x.shape[1]), dtype)
    dirs = dirs / jnp.linalg.norm(dirs, axis=1, keepdims=True)
    levels = (jnp.arange(num_quantiles, dtype=dtype) + 0.5) / num_quantiles
    # Quantiles sort each projection over all points, which needs every point on one device: explicitly
    # sharded projections are gathered first (a no-op for unsharded and Auto-sharded inputs).
    qx = jnp.quantile(unshard(x.astype(dtype) @ dirs.T), levels, axis=0)
    qy = jnp.quantile(unshard(y.astype(dtype) @ dirs.T), levels, axis=0)
    return jnp.sqrt(jnp.mean((qx - qy) ** 2))


__all__ = ["sliced_wasserstein"]
