"""Closed-form scores, log-densities, denoisers and probability-flow paths for Gaussian and GMM data.

If ``x_0 ~ sum_k w_k N(mu_k, Sigma_k)`` and ``x_t = m(t) x_0 + s(t) z``, then
``x_t ~ sum_k w_k N(m mu_k, m^2 Sigma_k + s^2 I)``: the score and the density of every noise level are
known exactly. These are the oracles the tests and benchmarks compare samplers and likelihoods against,
and they make good toy score functions.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
from jax.scipy.special import logsumexp

from jaxbayes._checks import check_finite, check_ndim, check_positive, check_shape, concrete_value
from jaxbayes.sde._sdes import check_time
from jaxbayes.typing import Array, ArrayLike


def _mixture(weights, means, covs):
    means = jnp.asarray(means)
    covs = jnp.asarray(covs, means.dtype)
    weights = jnp.asarray(weights, means.dtype)
    check_ndim("means", means, 2)
    k, d = means.shape
    check_shape("weights", weights, (k,))
    check_shape("covs", covs, (k, d, d))
    check_finite("means", means)
    check_finite("covs", covs)
    check_positive("weights", weights, strict=False)
    w = concrete_value(weights)
    if w is not None and not w.sum() > 0:
        raise ValueError(f"weights must not all be zero, got {w}")
    return weights / jnp.sum(weights), means, covs  # normalised: weights proportional to the probabilities


def _eig(covs):
    lam, u = jnp.linalg.eigh(covs)
    return jnp.maximum(lam, 0.0), u


def _mixture_logp_score(x, weights, means, lam, u, m, s):
    """Log-density and score of ``sum_k w_k N(m mu_k, U_k diag(m^2 lam_k + s^2) U_k^T)`` at ``x``.

    The covariances are diagonalised once, so each evaluation is a few matrix-vector products (no solves).
    """
    d = means.shape[1]
    c = m**2 * lam + s**2  # (K, d)
    r = jnp.einsum("kij,ki->kj", u, x - m * means)  # coordinates in each eigenbasis
    logps = -0.5 * jnp.sum(r**2 / c + jnp.log(c), axis=1) - 0.5 * d * jnp.log(2 * jnp.pi)
    logp = logsumexp(logps, b=weights)
    resp = weights * jnp.exp(logps - logp)
    scores = -jnp.einsum("kij,kj->ki", u, r / c)
    return logp, resp @ scores


def gmm_logpdf(sde, weights: ArrayLike, means: ArrayLike, covs: ArrayLike, x: Array, t: ArrayLike) -> Array:
    """``log p_t(x)`` for one point ``x`` of shape ``(d,)`` when the data are a Gaussian mixture.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbayes.sde import VPSDE
      >>> lp = gmm_logpdf(VPSDE(), [1.0], jnp.zeros((1, 2)), jnp.eye(2)[None], jnp.zeros(2), 0.5)
      >>> round(float(lp), 4)  # N(0, I) is invariant under the VP SDE
      -1.8379
    """
    weights, means, covs = _mixture(weights, means, covs)
    check_time(sde, t)
    lam, u = _eig(covs)
    return _mixture_logp_score(x, weights, means, lam, u, sde.mean_coeff(t), sde.std(t))[0]


def gmm_score(sde, weights: ArrayLike, means: ArrayLike, covs: ArrayLike) -> Callable[[Array, Array], Array]:
    """The exact score ``grad_x log p_t(x)`` of Gaussian-mixture data, as ``score_fn(x, t)`` for one point."""
    weights, means, covs = _mixture(weights, means, covs)
    lam, u = _eig(covs)

    def score_fn(x, t):
        return _mixture_logp_score(x, weights, means, lam, u, sde.mean_coeff(t), sde.std(t))[1]

    return score_fn


def gaussian_logpdf(sde, mean: ArrayLike, cov: ArrayLike, x: Array, t: ArrayLike) -> Array:
    """``log p_t(x)`` when the data are ``N(mean, cov)``."""
    mean = jnp.asarray(mean)
    return gmm_logpdf(sde, jnp.ones(1, mean.dtype), mean[None], jnp.asarray(cov)[None], x, t)


def gaussian_score(sde, mean: ArrayLike, cov: ArrayLike) -> Callable[[Array, Array], Array]:
    """The exact score of ``N(mean, cov)`` data under ``sde``: ``-(m^2 cov + s^2 I)^{-1} (x - m mean)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbayes.sde import VESDE
      >>> score = gaussian_score(VESDE(), jnp.zeros(2), jnp.eye(2))
      >>> score(jnp.ones(2), 0.0).round(3).tolist()
      [-1.0, -1.0]
    """
    mean = jnp.asarray(mean)
    lam, u = _eig(jnp.asarray(cov, mean.dtype))

    def score_fn(x, t):
        m, s = sde.mean_coeff(t), sde.std(t)
        return -u @ ((u.T @ (x - m * mean)) / (m**2 * lam + s**2))

    return score_fn


def gmm_denoiser(weights: ArrayLike, means: ArrayLike, covs: ArrayLike) -> Callable[[Array, Array], Array]:
    """The exact EDM denoiser ``D(x, sigma) = E[x_0 | x_0 + sigma z = x]`` of Gaussian-mixture data.

    Computed by Tweedie's formula ``D = x + sigma^2 grad log p_sigma(x)``; finite at ``sigma = 0``.
    """
    weights, means, covs = _mixture(weights, means, covs)
    lam, u = _eig(covs)

    def denoise_fn(x, sigma):
        return x + sigma**2 * _mixture_logp_score(x, weights, means, lam, u, 1.0, sigma)[1]

    return denoise_fn


def gaussian_pf_trajectory(sde, mean: ArrayLike, cov: ArrayLike, x_T: Array, t: ArrayLike,
                           *, t_start: ArrayLike | None = None) -> Array:
    """Exact solution at time ``t`` of the probability-flow ODE started at ``x_T`` (time ``t_start``).

    For Gaussian data every marginal covariance ``C_t = m^2 Sigma + s^2 I`` shares the eigenvectors ``U`` of
    ``Sigma``, and the flow is ``x_t = m_t mu + U diag(sqrt(c_t / c_T)) U^T (x_T - m_T mu)`` with
    ``c_t = m_t^2 lambda + s_t^2`` (it solves ``dx/dt = f x - g^2 score / 2`` since ``c' = 2 f c + g^2``).
    """
    mean = jnp.asarray(mean)
    cov = jnp.asarray(cov, mean.dtype)
    t_start = sde.T if t_start is None else t_start
    lam, u = jnp.linalg.eigh(cov)
    m0, s0 = sde.mean_coeff(t_start), sde.std(t_start)
    m1, s1 = sde.mean_coeff(t), sde.std(t)
    ratio = jnp.sqrt((m1**2 * lam + s1**2) / (m0**2 * lam + s0**2))
    return m1 * mean + u @ (ratio * (u.T @ (x_T - m0 * mean)))


def gaussian_pushforward(sde, mean: ArrayLike, cov: ArrayLike, t: ArrayLike) -> tuple[Array, Array]:
    """Mean and covariance of ``x_t`` for ``N(mean, cov)`` data: ``(m mean, m^2 cov + s^2 I)``."""
    mean = jnp.asarray(mean)
    cov = jnp.asarray(cov, mean.dtype)
    m, s = sde.mean_coeff(t), sde.std(t)
    return m * mean, m**2 * cov + s**2 * jnp.eye(mean.shape[0], dtype=cov.dtype)


__all__ = [
    "gaussian_logpdf",
    "gaussian_pf_trajectory",
    "gaussian_pushforward",
    "gaussian_score",
    "gmm_denoiser",
    "gmm_logpdf",
    "gmm_score",
]
