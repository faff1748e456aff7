"""Gaussian variational families over arbitrary parameter pytrees.

Each family is a ``NamedTuple`` (so it is a pytree that passes through ``jit``, ``vmap``, ``grad`` and optax)
whose mean has the structure of the model's parameters. Internally the parameters are flattened with
``jax.flatten_util.ravel_pytree`` to a vector of size ``d``:

* :class:`MeanField`: ``q(theta) = N(m, diag(s^2))``, ``s = exp(log_scale)``;
* :class:`LowRank`: ``q(theta) = N(m, D^2 + F F^T)``, ``D = diag(exp(log_diag))``, ``F`` of shape ``(d, r)``;
* :class:`FullRank`: ``q(theta) = N(m, L L^T)``, ``L`` lower-triangular with diagonal ``exp(log_diag)``.

All three provide ``sample``, ``log_prob``, ``entropy``, a closed-form ``kl_normal`` to a diagonal Gaussian
prior and ``kl_mvn`` to a dense Gaussian. The formulas are written out here rather than taken from distrax:
distrax has no low-rank-plus-diagonal Gaussian, and one set of formulas keeps the three families' stop-gradient
handling (needed by sticking-the-landing gradients) identical.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxbayes._checks import check_int_range, check_positive
from jaxbayes.typing import Array, ArrayLike, PRNGKey, PyTree

_LOG2PI = math.log(2.0 * math.pi)


def _flat(tree: PyTree) -> Array:
    return ravel_pytree(tree)[0]


def _sample_tree(q, key: PRNGKey, num: int | None) -> PyTree:
    mean, unravel = ravel_pytree(q.mean)
    if num is None:
        return unravel(q._transform(key, mean, ()))
    check_int_range("num", num, 1)
    flat = q._transform(key, mean, (num,))
    return jax.vmap(unravel)(flat)


def _diag_normal_kl(m: Array, var_diag: Array, logdet: Array, prior_mean: Array, prior_scale: Array) -> Array:
    """KL(N(m, S) || N(m0, diag(s0^2))) given diag(S) and log det S."""
    pvar = prior_scale**2
    return 0.5 * (jnp.sum(var_diag / pvar) + jnp.sum((m - prior_mean) ** 2 / pvar) - m.size
                  + jnp.sum(jnp.log(pvar)) - logdet)


def _broadcast_prior(value: ArrayLike | PyTree, mean: PyTree) -> Array:
    """A scalar or a pytree shaped like the parameters, as a flat vector."""
    flat_mean = _flat(mean)
    if jax.tree.structure(value) == jax.tree.structure(mean):
        return _flat(value).astype(flat_mean.dtype)
    if jax.tree.structure(value).num_leaves == 1 and jnp.ndim(jax.tree.leaves(value)[0]) == 0:
        return jnp.broadcast_to(jnp.asarray(jax.tree.leaves(value)[0], flat_mean.dtype), flat_mean.shape)
    raise ValueError("prior mean/scale must be a scalar or a pytree with the parameters' structure, got "
                     f"{jax.tree.structure(value)} for parameters {jax.tree.structure(mean)}")


def _mvn_kl(m: Array, cov: Array, logdet: Array, p_mean: Array, p_cov: Array) -> Array:
    """KL(N(m, cov) || N(p_mean, p_cov)) for dense covariances."""
    chol = jnp.linalg.cholesky(p_cov)
    sol = jax.scipy.linalg.cho_solve((chol, True), cov)
    diff = jax.scipy.linalg.cho_solve((chol, True), m - p_mean)
    p_logdet = 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
    return 0.5 * (jnp.trace(sol) + jnp.dot(m - p_mean, diff) - m.size + p_logdet - logdet)


def _sample(self, key: PRNGKey, num: int | None = None) -> PyTree:
    """Reparameterised draws: one parameter pytree, or ``num`` stacked along a new leading axis."""
    return _sample_tree(self, key, num)


def _flat_mean(self) -> Array:
    """The mean as a flat vector of size ``d``."""
    return _flat(self.mean)


def _entropy(self) -> Array:
    """Differential entropy ``0.5 d (1 + log 2 pi) + 0.5 log det Sigma``."""
    m = _flat(self.mean)
    return 0.5 * m.size * (1.0 + _LOG2PI) + 0.5 * self._logdet()


def _kl_normal(self, prior_mean: ArrayLike | PyTree = 0.0, prior_scale: ArrayLike | PyTree = 1.0) -> Array:
    """Closed-form ``KL(q || N(prior_mean, diag(prior_scale^2)))``.

    ``prior_mean`` and ``prior_scale`` are scalars or pytrees shaped like the parameters.
    """
    for leaf in jax.tree.leaves(prior_scale):
        check_positive("prior_scale", leaf)
    m = _flat(self.mean)
    pm = _broadcast_prior(prior_mean, self.mean)
    ps = _broadcast_prior(prior_scale, self.mean)
    return _diag_normal_kl(m, self._cov_diag(), self._logdet(), pm, ps)


def _kl_mvn(self, mean: ArrayLike, cov: ArrayLike) -> Array:
    """Closed-form ``KL(q || N(mean, cov))`` for a dense Gaussian over the flattened parameters."""
    m = _flat(self.mean)
    return _mvn_kl(m, self.covariance(), self._logdet(), jnp.asarray(mean, m.dtype), jnp.asarray(cov, m.dtype))


def _log_prob(self, x: PyTree) -> Array:
    """Log-density of one parameter pytree ``x`` (``vmap`` it for several)."""
    if jax.tree.structure(x) != jax.tree.structure(self.mean):
        raise ValueError(f"x must have the parameters' structure {jax.tree.structure(self.mean)}, "
                         f"got {jax.tree.structure(x)}")
    return self._log_prob_flat(_flat(x))


class MeanField(NamedTuple):
    """Fully factorised Gaussian ``N(mean, diag(exp(log_scale)^2))`` over a parameter pytree.

    Attributes:
      mean: pytree of means (the model's parameter structure).
      log_scale: pytree of log standard deviations, same structure.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> q = MeanField({"w": jnp.zeros(2)}, {"w": jnp.zeros(2)})
      >>> round(float(q.kl_normal(0.0, 1.0)), 6), q.sample(jax.random.key(0), 3)["w"].shape
      (0.0, (3, 2))
    """

    mean: PyTree
    log_scale: PyTree

    sample = _sample
    flat_mean = _flat_mean
    entropy = _entropy
    kl_normal = _kl_normal
    kl_mvn = _kl_mvn
    log_prob = _log_prob

    def scale(self) -> PyTree:
        """Standard deviations as a pytree."""
        return jax.tree.map(jnp.exp, self.log_scale)

    def _transform(self, key, mean, batch):
        s = jnp.exp(_flat(self.log_scale))
        eps = jax.random.normal(key, (*batch, mean.size), mean.dtype)
        return mean + s * eps

    def _logdet(self):
        return 2.0 * jnp.sum(_flat(self.log_scale))

    def _cov_diag(self):
        return jnp.exp(2.0 * _flat(self.log_scale))

    def covariance(self) -> Array:
        """Dense ``(d, d)`` covariance of the flattened parameters."""
        return jnp.diag(self._cov_diag())

    def _log_prob_flat(self, x):
        m = self.flat_mean()
        ls = _flat(self.log_scale)
        z = (x - m) * jnp.exp(-ls)
        return -0.5 * jnp.sum(z**2) - jnp.sum(ls) - 0.5 * m.size * _LOG2PI


class LowRank(NamedTuple):
    """Low-rank plus diagonal Gaussian ``N(mean, D^2 + F F^T)`` with ``D = diag(exp(log_diag))``.

    Attributes:
      mean: pytree of means.
      log_diag: pytree of log diagonal standard deviations, same structure as ``mean``.
      factor: ``(d, r)`` low-rank factor ``F`` over the flattened parameters.

    Log-densities use the Woodbury identity and the matrix determinant lemma, ``O(d r^2)``.
    """

    mean: PyTree
    log_diag: PyTree
    factor: Array

    sample = _sample
    flat_mean = _flat_mean
    entropy = _entropy
    kl_normal = _kl_normal
    kl_mvn = _kl_mvn
    log_prob = _log_prob

    def _transform(self, key, mean, batch):
        k1, k2 = jax.random.split(key)
        d = jnp.exp(_flat(self.log_diag))
        e1 = jax.random.normal(k1, (*batch, mean.size), mean.dtype)
        e2 = jax.random.normal(k2, (*batch, self.factor.shape[1]), mean.dtype)
        return mean + d * e1 + e2 @ self.factor.T

    def _capacitance(self):
        dinv2 = jnp.exp(-2.0 * _flat(self.log_diag))
        r = self.factor.shape[1]
        return jnp.eye(r, dtype=self.factor.dtype) + (self.factor.T * dinv2) @ self.factor, dinv2

    def _logdet(self):
        cap, _ = self._capacitance()
        return 2.0 * jnp.sum(_flat(self.log_diag)) + jnp.linalg.slogdet(cap)[1]

    def _cov_diag(self):
        return jnp.exp(2.0 * _flat(self.log_diag)) + jnp.sum(self.factor**2, axis=1)

    def covariance(self) -> Array:
        """Dense ``(d, d)`` covariance of the flattened parameters."""
        return jnp.diag(jnp.exp(2.0 * _flat(self.log_diag))) + self.factor @ self.factor.T

    def _log_prob_flat(self, x):
        m = self.flat_mean()
        r = x - m
        cap, dinv2 = self._capacitance()
        u = self.factor.T @ (dinv2 * r)
        maha = jnp.sum(dinv2 * r**2) - jnp.dot(u, jnp.linalg.solve(cap, u))
        return -0.5 * (maha + self._logdet() + m.size * _LOG2PI)


class FullRank(NamedTuple):
    """Full-covariance Gaussian ``N(mean, L L^T)``.

    Attributes:
      mean: pytree of means.
      log_diag: ``(d,)`` log of the Cholesky factor's diagonal.
      lower: ``(d, d)``; only its strictly lower triangle is used.
    """

    mean: PyTree
    log_diag: Array
    lower: Array

    sample = _sample
    flat_mean = _flat_mean
    entropy = _entropy
    kl_normal = _kl_normal
    kl_mvn = _kl_mvn
    log_prob = _log_prob

    def cholesky(self) -> Array:
        """The lower-triangular factor ``L``."""
        return jnp.tril(self.lower, -1) + jnp.diag(jnp.exp(self.log_diag))

    def _transform(self, key, mean, batch):
        eps = jax.random.normal(key, (*batch, mean.size), mean.dtype)
        return mean + eps @ self.cholesky().T

    def _logdet(self):
        return 2.0 * jnp.sum(self.log_diag)

    def _cov_diag(self):
        return jnp.sum(self.cholesky() ** 2, axis=1)

    def covariance(self) -> Array:
        """Dense ``(d, d)`` covariance ``L L^T``."""
        chol = self.cholesky()
        return chol @ chol.T

    def _log_prob_flat(self, x):
        m = self.flat_mean()
        z = jax.scipy.linalg.solve_triangular(self.cholesky(), x - m, lower=True)
        return -0.5 * (jnp.sum(z**2) + m.size * _LOG2PI) - jnp.sum(self.log_diag)


def meanfield_init(position: PyTree, *, init_scale: ArrayLike = 0.1) -> MeanField:
    """A :class:`MeanField` centred on ``position`` with every standard deviation ``init_scale``.

    Example:
      >>> import jax.numpy as jnp
      >>> q = meanfield_init({"b": jnp.ones(3)}, init_scale=0.5)
      >>> [round(float(v), 3) for v in q.scale()["b"]]
      [0.5, 0.5, 0.5]
    """
    check_positive("init_scale", init_scale)
    mean = jax.tree.map(jnp.asarray, position)
    log_scale = jax.tree.map(lambda p: jnp.full(jnp.shape(p), jnp.log(init_scale), jnp.result_type(p)), mean)
    return MeanField(mean, log_scale)


def lowrank_init(key: PRNGKey, position: PyTree, *, rank: int, init_scale: ArrayLike = 0.1,
                 factor_scale: ArrayLike = 1e-3) -> LowRank:
    """A :class:`LowRank` centred on ``position``: diagonal ``init_scale``, small random factor.

    The factor starts random (``factor_scale`` times a standard normal) rather than zero so the gradient with
    respect to it is not identically zero.
    """
    rank = check_int_range("rank", rank, 1)
    check_positive("init_scale", init_scale)
    check_positive("factor_scale", factor_scale)
    mean = jax.tree.map(jnp.asarray, position)
    flat = _flat(mean)
    if rank > flat.size:
        raise ValueError(f"rank must be <= the number of parameters {flat.size}, got {rank}")
    log_diag = jax.tree.map(lambda p: jnp.full(jnp.shape(p), jnp.log(init_scale), jnp.result_type(p)), mean)
    factor = factor_scale * jax.random.normal(key, (flat.size, rank), flat.dtype)
    return LowRank(mean, log_diag, factor)


def fullrank_init(position: PyTree, *, init_scale: ArrayLike = 0.1) -> FullRank:
    """A :class:`FullRank` centred on ``position`` with covariance ``init_scale^2 I``."""
    check_positive("init_scale", init_scale)
    mean = jax.tree.map(jnp.asarray, position)
    flat = _flat(mean)
    log_diag = jnp.full(flat.shape, jnp.log(init_scale), flat.dtype)
    return FullRank(mean, log_diag, jnp.zeros((flat.size, flat.size), flat.dtype))


__all__ = ["FullRank", "LowRank", "MeanField", "fullrank_init", "lowrank_init", "meanfield_init"]
