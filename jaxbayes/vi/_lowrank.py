"""The low-rank plus diagonal Gaussian ``N(m, D^2 + F F^T)`` and its family object."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_int_range, check_positive
from jaxbayes.typing import Array, ArrayLike, PRNGKey, PyTree
from jaxbayes.vi._distrax import lowrank_scale_factors
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


class LowRankNormal(NamedTuple):
    """Low-rank plus diagonal Gaussian ``N(mean, D^2 + F F^T)`` with ``D = diag(exp(log_diag))``.

    Attributes:
      mean: pytree of means.
      log_diag: pytree of log diagonal standard deviations, same structure as ``mean``.
      factor: ``(d, r)`` low-rank factor ``F`` over the flattened parameters.

    Log-densities use the Woodbury identity and the matrix determinant lemma, ``O(d r^2)``.

    Example:
      >>> import jax.numpy as jnp
      >>> q = LowRankNormal(jnp.zeros(2), jnp.zeros(2), jnp.ones((2, 1)))
      >>> q.covariance().tolist()
      [[2.0, 1.0], [1.0, 2.0]]
    """

    mean: PyTree
    log_diag: PyTree
    factor: Array

    sample = gaussian_sample
    log_prob = gaussian_log_prob
    entropy = gaussian_entropy
    kl = gaussian_kl
    kl_normal = gaussian_kl_normal
    kl_mvn = gaussian_kl_mvn
    flat_mean = gaussian_flat_mean

    def to_distrax(self):
        """``distrax.MultivariateNormalDiagPlusLowRank`` with the exact scale ``S = D + U V^T``, ``S S^T = D^2 +
        F F^T`` (:func:`jaxbayes.vi._distrax.lowrank_scale_factors`), over the flattened parameters."""
        import distrax

        return distrax.MultivariateNormalDiagPlusLowRank(
            self.flat_mean(), *lowrank_scale_factors(flatten(self.log_diag), self.factor))

    def reparameterize(self, key: PRNGKey, mean: Array, batch: tuple[int, ...]) -> Array:
        """``mean + D e1 + F e2`` for standard normal ``e1`` (``d``) and ``e2`` (``r``)."""
        k1, k2 = jax.random.split(key)
        d = jnp.exp(flatten(self.log_diag))
        e1 = jax.random.normal(k1, (*batch, mean.size), mean.dtype)
        e2 = jax.random.normal(k2, (*batch, self.factor.shape[1]), mean.dtype)
        return mean + d * e1 + e2 @ self.factor.T

    def _capacitance(self):
        dinv2 = jnp.exp(-2.0 * flatten(self.log_diag))
        r = self.factor.shape[1]
        return jnp.eye(r, dtype=self.factor.dtype) + (self.factor.T * dinv2) @ self.factor, dinv2

    def log_det_covariance(self) -> Array:
        """``log det(D^2 + F F^T) = log det D^2 + log det(I + F^T D^-2 F)`` (matrix determinant lemma)."""
        cap, _ = self._capacitance()
        return 2.0 * jnp.sum(flatten(self.log_diag)) + jnp.linalg.slogdet(cap)[1]

    def covariance_diagonal(self) -> Array:
        """``diag(Sigma) = exp(2 log_diag) + sum_k F_ik^2``."""
        return jnp.exp(2.0 * flatten(self.log_diag)) + jnp.sum(self.factor**2, axis=1)

    def covariance(self) -> Array:
        """Dense ``(d, d)`` covariance of the flattened parameters."""
        return jnp.diag(jnp.exp(2.0 * flatten(self.log_diag))) + self.factor @ self.factor.T

    def log_prob_flat(self, x: Array) -> Array:
        """``log q(x)`` of one flat vector (Woodbury identity)."""
        m = self.flat_mean()
        r = x - m
        cap, dinv2 = self._capacitance()
        u = self.factor.T @ (dinv2 * r)
        maha = jnp.sum(dinv2 * r**2) - jnp.dot(u, jnp.linalg.solve(cap, u))
        return -0.5 * (maha + self.log_det_covariance() + m.size * LOG2PI)


def lowrank_init(key: PRNGKey, position: PyTree, *, rank: int, init_scale: ArrayLike = 0.1,
                 factor_scale: ArrayLike = 1e-3) -> LowRankNormal:
    """A :class:`LowRankNormal` centred on ``position``: diagonal ``init_scale``, small random factor.

    The factor starts random (``factor_scale`` times a standard normal) rather than zero so the gradient with
    respect to it is not identically zero.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> lowrank_init(jax.random.key(0), jnp.zeros(3), rank=2).factor.shape
      (3, 2)
    """
    rank = check_int_range("rank", rank, 1)
    check_positive("init_scale", init_scale)
    check_positive("factor_scale", factor_scale)
    mean = jax.tree.map(jnp.asarray, position)
    flat = flatten(mean)
    if rank > flat.size:
        raise ValueError(f"rank must be <= the number of parameters {flat.size}, got {rank}")
    log_diag = jax.tree.map(lambda p: jnp.full(jnp.shape(p), jnp.log(init_scale), jnp.result_type(p)), mean)
    factor = factor_scale * jax.random.normal(key, (flat.size, rank), flat.dtype)
    return LowRankNormal(mean, log_diag, factor)


@dataclasses.dataclass(frozen=True)
class LowRank(VariationalFamily):
    """The low-rank plus diagonal family: builds a :class:`LowRankNormal` of rank ``rank`` (``O(d r)``
    parameters, ``O(d r^2)`` per density); the factor starts at ``factor_scale`` times a normal draw of ``key``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> LowRank(rank=2).init(jax.random.key(0), jnp.zeros(4)).factor.shape
      (4, 2)
    """

    rank: int = 1
    factor_scale: float = 1e-3
    distribution = LowRankNormal

    def __post_init__(self):
        check_int_range("rank", self.rank, 1)
        check_positive("factor_scale", self.factor_scale)

    def init(self, key: PRNGKey, position: PyTree, init_scale: ArrayLike = 0.1) -> LowRankNormal:
        return lowrank_init(key, position, rank=self.rank, init_scale=init_scale, factor_scale=self.factor_scale)


__all__ = ["LowRank", "LowRankNormal", "lowrank_init"]
