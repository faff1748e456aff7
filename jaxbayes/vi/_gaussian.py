"""Gaussian algebra shared by the variational distributions: flattening, KL divergences and the common methods.

Every Gaussian variational distribution is a ``NamedTuple`` (so it is a pytree that passes through ``jit``,
``vmap``, ``grad`` and optax) whose ``mean`` has the structure of the model's parameters. Internally the
parameters are flattened with ``jax.flatten_util.ravel_pytree`` to a vector of size ``d``. A distribution
class provides four primitives over that vector,

* ``reparameterize(key, mean, batch_shape)``: ``mean + S eps`` for standard normal ``eps``;
* ``log_det_covariance()``: ``log det Sigma``;
* ``covariance_diagonal()``: ``diag(Sigma)``;
* ``log_prob_flat(x)``: ``log q(x)`` of one flat vector;

and takes the methods written once here (``gaussian_sample`` as ``sample``, ``gaussian_log_prob`` as
``log_prob``, ... ``entropy``, ``kl``, ``kl_normal``, ``kl_mvn``, ``flat_mean``) as class attributes (a
``NamedTuple`` cannot inherit them from a mixin). The formulas are written out rather than taken from distrax:
distrax has no low-rank-plus-diagonal Gaussian, and one set of formulas keeps the families' stop-gradient
handling (needed by sticking-the-landing gradients) identical.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxbayes._checks import check_int_range, check_positive
from jaxbayes.typing import Array, ArrayLike, PRNGKey, PyTree
from jaxbayes.vi._distrax import is_distribution, kl_to_distribution

LOG2PI = math.log(2.0 * math.pi)


def flatten(tree: PyTree) -> Array:
    """The leaves of ``tree`` concatenated into one vector (``ravel_pytree`` order)."""
    return ravel_pytree(tree)[0]


def broadcast_prior(value: ArrayLike | PyTree, mean: PyTree) -> Array:
    """A prior mean or scale given as a scalar or as a pytree shaped like the parameters ``mean``, as a flat
    vector of the parameters' size and dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> broadcast_prior(2.0, {"a": jnp.zeros(2), "b": jnp.zeros(())}).tolist()
      [2.0, 2.0, 2.0]
    """
    flat_mean = flatten(mean)
    if jax.tree.structure(value) == jax.tree.structure(mean):
        return flatten(value).astype(flat_mean.dtype)
    if jax.tree.structure(value).num_leaves == 1 and jnp.ndim(jax.tree.leaves(value)[0]) == 0:
        return jnp.broadcast_to(jnp.asarray(jax.tree.leaves(value)[0], flat_mean.dtype), flat_mean.shape)
    raise ValueError("prior mean/scale must be a scalar or a pytree with the parameters' structure, got "
                     f"{jax.tree.structure(value)} for parameters {jax.tree.structure(mean)}")


def diag_normal_kl(m: Array, var_diag: Array, logdet: Array, prior_mean: Array, prior_scale: Array) -> Array:
    """``KL(N(m, S) || N(m0, diag(s0^2)))`` from ``diag(S)`` and ``log det S``:
    ``0.5 (sum S_ii / s0_i^2 + sum (m - m0)^2 / s0^2 - d + sum log s0^2 - log det S)``."""
    pvar = prior_scale**2
    return 0.5 * (jnp.sum(var_diag / pvar) + jnp.sum((m - prior_mean) ** 2 / pvar) - m.size
                  + jnp.sum(jnp.log(pvar)) - logdet)


def mvn_kl(m: Array, cov: Array, logdet: Array, p_mean: Array, p_cov: Array) -> Array:
    """``KL(N(m, cov) || N(p_mean, p_cov))`` for dense covariances (``logdet = log det cov``)."""
    chol = jnp.linalg.cholesky(p_cov)
    sol = jax.scipy.linalg.cho_solve((chol, True), cov)
    diff = jax.scipy.linalg.cho_solve((chol, True), m - p_mean)
    p_logdet = 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
    return 0.5 * (jnp.trace(sol) + jnp.dot(m - p_mean, diff) - m.size + p_logdet - logdet)


def gaussian_sample(self, key: PRNGKey, num: int | None = None) -> PyTree:
    """Reparameterised draws: one parameter pytree, or ``num`` stacked along a new leading axis."""
    mean, unravel = ravel_pytree(self.mean)
    if num is None:
        return unravel(self.reparameterize(key, mean, ()))
    check_int_range("num", num, 1)
    flat = self.reparameterize(key, mean, (num,))
    return jax.vmap(unravel)(flat)


def gaussian_flat_mean(self) -> Array:
    """The mean as a flat vector of size ``d``."""
    return flatten(self.mean)


def gaussian_entropy(self) -> Array:
    """Differential entropy ``0.5 d (1 + log 2 pi) + 0.5 log det Sigma``."""
    m = flatten(self.mean)
    return 0.5 * m.size * (1.0 + LOG2PI) + 0.5 * self.log_det_covariance()


def gaussian_kl_normal(self, prior_mean: ArrayLike | PyTree = 0.0, prior_scale: ArrayLike | PyTree = 1.0) -> Array:
    """Closed-form ``KL(q || N(prior_mean, diag(prior_scale^2)))``.

    ``prior_mean`` and ``prior_scale`` are scalars or pytrees shaped like the parameters.
    """
    for leaf in jax.tree.leaves(prior_scale):
        check_positive("prior_scale", leaf)
    m = flatten(self.mean)
    pm = broadcast_prior(prior_mean, self.mean)
    ps = broadcast_prior(prior_scale, self.mean)
    return diag_normal_kl(m, self.covariance_diagonal(), self.log_det_covariance(), pm, ps)


def gaussian_kl_mvn(self, mean: ArrayLike, cov: ArrayLike) -> Array:
    """Closed-form ``KL(q || N(mean, cov))`` for a dense Gaussian over the flattened parameters."""
    m = flatten(self.mean)
    return mvn_kl(m, self.covariance(), self.log_det_covariance(), jnp.asarray(mean, m.dtype),
                  jnp.asarray(cov, m.dtype))


def gaussian_kl(self, other: Any) -> Array:
    """Closed-form ``KL(q || other)``: ``other`` is a diagonal prior (anything with ``mean`` and ``scale``
    fields, e.g. :class:`jaxbayes.vi.GaussianPrior`), another Gaussian distribution over the same parameters
    (anything with ``flat_mean()`` and ``covariance()``), or a distrax Gaussian over the flattened parameters
    (event shape ``(d,)``; see :mod:`jaxbayes.vi._distrax`)."""
    if is_distribution(other):
        return kl_to_distribution(self, other)
    if hasattr(other, "covariance") and hasattr(other, "flat_mean"):
        return self.kl_mvn(other.flat_mean(), other.covariance())
    if hasattr(other, "mean") and hasattr(other, "scale"):
        return self.kl_normal(other.mean, other.scale)
    raise TypeError(f"kl needs a GaussianPrior or a Gaussian distribution, got {type(other).__name__}")


def gaussian_log_prob(self, x: PyTree) -> Array:
    """Log-density of one parameter pytree ``x`` (``vmap`` it for several)."""
    if jax.tree.structure(x) != jax.tree.structure(self.mean):
        raise ValueError(f"x must have the parameters' structure {jax.tree.structure(self.mean)}, "
                         f"got {jax.tree.structure(x)}")
    return self.log_prob_flat(flatten(x))


__all__ = ["LOG2PI", "broadcast_prior", "diag_normal_kl", "flatten", "gaussian_entropy",
           "gaussian_flat_mean", "gaussian_kl", "gaussian_kl_mvn", "gaussian_kl_normal", "gaussian_log_prob",
           "gaussian_sample", "mvn_kl"]
