r"""Debiased Sinkhorn divergence (Genevay et al. 2018; Feydy et al. 2019).

.. math:: S_\varepsilon(\alpha, \beta) = \mathrm{OT}_\varepsilon(\alpha, \beta)
   - \tfrac12 \mathrm{OT}_\varepsilon(\alpha, \alpha) - \tfrac12 \mathrm{OT}_\varepsilon(\beta, \beta)

is non-negative, zero iff the measures agree (for the squared Euclidean and other universal kernels'
costs), and interpolates between OT (:math:`\varepsilon\to 0`) and MMD (:math:`\varepsilon\to\infty`).
All three problems use the same absolute epsilon (relative epsilon is resolved on the cross problem).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from jaxbayes.ot._geometry import pointcloud
from jaxbayes.ot._sinkhorn import SinkhornOutput, sinkhorn
from jaxbayes.typing import Array, ArrayLike


class SinkhornDivergenceOutput(NamedTuple):
    """Result of :func:`sinkhorn_divergence`.

    Attributes:
      divergence: :math:`S_\\varepsilon(\\alpha, \\beta)`.
      xy, xx, yy: the three :class:`SinkhornOutput` (cross and the two symmetric problems).
      converged: all three converged.
      cost, n_iters, error (properties): the divergence, the most iterations and the largest error of the three.
    """

    divergence: Array
    xy: SinkhornOutput
    xx: SinkhornOutput
    yy: SinkhornOutput
    converged: Array

    @property
    def cost(self) -> Array:
        """The divergence (the debiased regularised objective), under the name every OT output uses."""
        return self.divergence

    @property
    def n_iters(self) -> Array:
        """The most iterations any of the three solves ran."""
        return jnp.maximum(jnp.maximum(self.xy.n_iters, self.xx.n_iters), self.yy.n_iters)

    @property
    def error(self) -> Array:
        """The largest final marginal error of the three solves."""
        return jnp.maximum(jnp.maximum(self.xy.error, self.xx.error), self.yy.error)


def sinkhorn_divergence(
    x: ArrayLike,
    y: ArrayLike,
    a: ArrayLike | None = None,
    b: ArrayLike | None = None,
    *,
    cost: Any = "sqeuclidean",
    epsilon: ArrayLike = 0.05,
    relative_epsilon: bool = True,
    chunk_size: int | None = None,
    **sinkhorn_kwargs: Any,
) -> SinkhornDivergenceOutput:
    """Debiased Sinkhorn divergence between two weighted point clouds (balanced).

    Args:
      x: source points ``(n, d)``; y: target points ``(m, d)``; a, b: weights (default uniform).
      cost: ground cost (see :func:`pointcloud`).
      epsilon: regularisation (relative to the mean cost of the cross problem unless
        ``relative_epsilon=False``).
      chunk_size: matrix-free chunk size (see :func:`pointcloud`).
      **sinkhorn_kwargs: passed to :func:`sinkhorn` (tol, max_iterations, ...).

    Returns:
      A :class:`SinkhornDivergenceOutput`; its ``divergence`` is differentiable in ``x``, ``y``, ``a``, ``b``.

    Example:
      >>> import jax
      >>> x = jax.random.normal(jax.random.key(0), (32, 2))
      >>> float(sinkhorn_divergence(x, x).divergence) < 1e-4
      True
    """
    gxy = pointcloud(x, y, cost=cost, chunk_size=chunk_size)
    eps = jnp.asarray(epsilon, gxy.dtype) * (gxy.dense_or_self().cost_scale() if relative_epsilon else 1.0)
    kw = dict(sinkhorn_kwargs, epsilon=eps, relative_epsilon=False)
    xy = sinkhorn(gxy, a, b, **kw)
    xx = sinkhorn(pointcloud(x, x, cost=cost, chunk_size=chunk_size), a, a, **kw)
    yy = sinkhorn(pointcloud(y, y, cost=cost, chunk_size=chunk_size), b, b, **kw)
    div = xy.cost - 0.5 * (xx.cost + yy.cost)
    return SinkhornDivergenceOutput(div, xy, xx, yy, xy.converged & xx.converged & yy.converged)
