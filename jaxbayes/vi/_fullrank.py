"""The full-covariance Gaussian ``N(m, L L^T)`` (Cholesky parameterisation) and its family object."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_positive
from jaxbayes.typing import Array, ArrayLike, PRNGKey, PyTree
from jaxbayes.vi._family import VariationalFamily
from jaxbayes.vi._gaussian import (
    LOG2PI,
    flatten,
    gaussian_entropy,
    gaussian_flat_mean,
    gaussian_kl,
    gaussian_kl_mvn,
    gaussian_kl_normal,
    gaussian_log_prob,
    gaussian_sample,
)


class FullRankNormal(NamedTuple):
    """Full-covariance Gaussian ``N(mean, L L^T)``.

    Attributes:
      mean: pytree of means.
      log_diag: ``(d,)`` log of the Cholesky factor's diagonal.
      lower: ``(d, d)``; only its strictly lower triangle is used.

    Example:
      >>> import jax.numpy as jnp
      >>> FullRankNormal(jnp.zeros(2), jnp.zeros(2), jnp.array([[0.0, 0.0], [1.0, 0.0]])).covariance().tolist()
      [[1.0, 1.0], [1.0, 2.0]]
    """

    mean: PyTree
    log_diag: Array
    lower: Array

    sample = gaussian_sample
    log_prob = gaussian_log_prob
    entropy = gaussian_entropy
    kl = gaussian_kl
    kl_normal = gaussian_kl_normal
    kl_mvn = gaussian_kl_mvn
    flat_mean = gaussian_flat_mean

    def to_distrax(self):
        """``distrax.MultivariateNormalTri(m, L)`` over the flattened parameters (:mod:`jaxbayes.vi._distrax`)."""
        import distrax

        return distrax.MultivariateNormalTri(self.flat_mean(), self.cholesky())

    def cholesky(self) -> Array:
        """The lower-triangular factor ``L``."""
        return jnp.tril(self.lower, -1) + jnp.diag(jnp.exp(self.log_diag))

    def reparameterize(self, key: PRNGKey, mean: Array, batch: tuple[int, ...]) -> Array:
        """``mean + L eps`` for ``eps ~ N(0, I)`` of shape ``(*batch, d)``."""
        eps = jax.random.normal(key, (*batch, mean.size), mean.dtype)
        return mean + eps @ self.cholesky().T

    def log_det_covariance(self) -> Array:
        """``log det(L L^T) = 2 sum log_diag``."""
        return 2.0 * jnp.sum(self.log_diag)

    def covariance_diagonal(self) -> Array:
        """``diag(L L^T)``, the row sums of ``L^2``."""
        return jnp.sum(self.cholesky() ** 2, axis=1)

    def covariance(self) -> Array:
        """Dense ``(d, d)`` covariance ``L L^T``."""
        chol = self.cholesky()
        return chol @ chol.T

    def log_prob_flat(self, x: Array) -> Array:
        """``log q(x)`` of one flat vector (one triangular solve)."""
        m = self.flat_mean()
        z = jax.scipy.linalg.solve_triangular(self.cholesky(), x - m, lower=True)
        return -0.5 * (jnp.sum(z**2) + m.size * LOG2PI) - jnp.sum(self.log_diag)


def fullrank_init(position: PyTree, *, init_scale: ArrayLike = 0.1) -> FullRankNormal:
    """A :class:`FullRankNormal` centred on ``position`` with covariance ``init_scale^2 I``.

    Example:
      >>> import jax.numpy as jnp
      >>> fullrank_init(jnp.zeros(2), init_scale=0.5).covariance().tolist()
      [[0.25, 0.0], [0.0, 0.25]]
    """
    check_positive("init_scale", init_scale)
    mean = jax.tree.map(jnp.asarray, position)
    flat = flatten(mean)
    log_diag = jnp.full(flat.shape, jnp.log(init_scale), flat.dtype)
    return FullRankNormal(mean, log_diag, jnp.zeros((flat.size, flat.size), flat.dtype))


@dataclasses.dataclass(frozen=True)
class FullRank(VariationalFamily):
    """The full-rank family: builds a :class:`FullRankNormal` (``O(d^2)`` parameters, ``O(d^3)`` per step).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> FullRank().init(jax.random.key(0), jnp.zeros(3)).lower.shape
      (3, 3)
    """

    distribution = FullRankNormal

    def init(self, key: PRNGKey, position: PyTree, init_scale: ArrayLike = 0.1) -> FullRankNormal:
        del key
        return fullrank_init(position, init_scale=init_scale)


__all__ = ["FullRank", "FullRankNormal", "fullrank_init"]
