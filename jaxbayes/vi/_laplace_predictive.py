"""Predictive distributions of a Laplace posterior: Monte Carlo and the probit approximation.

* ``pred_type="glm"``: the linearised model ``f(theta, x) ~ f(theta*, x) + J (theta - theta*)`` (Immer, Korzepa &
  Bauer, AISTATS 2021), whose output is Gaussian: ``N(f*, J Sigma J^T)``.
* ``pred_type="nn"``: the network itself at parameters drawn from the posterior.
* ``link="probit"`` (glm only): for a Bernoulli classifier MacKay's (1992) probit approximation
  ``E[sigmoid(f)] ~ sigmoid(mu / sqrt(1 + pi sigma^2 / 8))``; for a categorical one its generalisation
  ``softmax_c(mu_c / sqrt(1 + pi Sigma_cc / 8))`` (the "probit" approximation of laplace-torch: Daxberger et al.,
  "Laplace Redux", NeurIPS 2021; Lu, Ie & Sha, 2020, mean-field approximation to the softmax-Gaussian integral).
* ``link="mc"``: the average of the inverse link over ``num_samples`` draws (of ``f`` for glm, of ``theta``
  for nn).

Gaussian likelihoods return the predictive mean and variance of ``y`` (noise included).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_choice, check_int_range
from jaxbayes.typing import Array, ArrayLike, PRNGKey
from jaxbayes.vi._laplace_likelihoods import inverse_link
from jaxbayes.vi._laplace_posterior import LaplacePosterior


def glm_predictive_moments(post: LaplacePosterior, x: ArrayLike,
                           prior_precision: ArrayLike | None = None) -> tuple[Array, Array]:
    """Mean ``f(theta*, x_n)`` ``(n, C)`` and covariance ``J_n Sigma J_n^T`` ``(n, C, C)`` of the linearised model."""
    s, theta = post.structure, post.theta
    f = lambda v, xi: jnp.reshape(post.apply_fn(s.merge(post.mean, v), xi), (-1,))

    def one(xi):
        jac = jax.jacrev(f)(theta, xi)  # (C, d)
        w = post.whiten(jac, prior_precision)
        return f(theta, xi), w @ w.T

    return jax.lax.map(one, jnp.asarray(x))


def _probit(likelihood: str, mean: Array, cov: Array) -> Array:
    var = jnp.diagonal(cov, axis1=-2, axis2=-1)
    scaled = mean / jnp.sqrt(1.0 + math.pi / 8.0 * var)
    return jax.nn.sigmoid(scaled[:, 0]) if likelihood == "bernoulli" else jax.nn.softmax(scaled, axis=-1)


def laplace_predictive(
    post: LaplacePosterior,
    x: ArrayLike,
    *,
    pred_type: str = "glm",
    link: str = "probit",
    num_samples: int = 100,
    key: PRNGKey | None = None,
    prior_precision: ArrayLike | None = None,
) -> Array | tuple[Array, Array]:
    """The posterior predictive at inputs ``x`` ``(n, ...)``.

    Returns:
      bernoulli: ``p(y = 1 | x)`` ``(n,)``; categorical: class probabilities ``(n, C)``; gaussian:
      ``(mean, variance)`` of ``y``, each ``(n, C)`` (closed form for glm; sample moments for nn).

    ``key`` is needed for ``link="mc"`` and ``pred_type="nn"``. Works under ``jit`` (options static).
    """
    check_choice("pred_type", pred_type, ("glm", "nn"))
    check_choice("link", link, ("probit", "mc"))
    num_samples = check_int_range("num_samples", num_samples, 1)
    x = jnp.asarray(x)
    lik = post.likelihood
    if pred_type == "nn":
        if link == "probit":
            raise ValueError("the probit link needs the linearised model: use pred_type='glm'")
        if key is None:
            raise ValueError("pred_type='nn' needs a key")
        thetas = post.sample(key, num_samples, prior_precision)
        outs = jax.vmap(lambda p: jax.vmap(lambda xi: jnp.reshape(post.apply_fn(p, xi), (-1,)))(x))(thetas)
        if lik == "gaussian":
            return jnp.mean(outs, 0), jnp.var(outs, 0) + post.noise_scale**2
        probs = jnp.mean(inverse_link(lik, outs), 0)
        return probs[:, 0] if lik == "bernoulli" else probs
    mean, cov = glm_predictive_moments(post, x, prior_precision)
    if lik == "gaussian":
        return mean, jnp.diagonal(cov, axis1=-2, axis2=-1) + post.noise_scale**2
    if link == "probit":
        return _probit(lik, mean, cov)
    if key is None:
        raise ValueError("link='mc' needs a key")
    lam, q = jnp.linalg.eigh(cov)
    root = q * jnp.sqrt(jnp.clip(lam, 0.0))[:, None, :]  # (n, C, C): root root^T = cov
    z = jax.random.normal(key, (num_samples,) + mean.shape, mean.dtype)
    f = mean + jnp.einsum("nck,snk->snc", root, z)
    probs = jnp.mean(inverse_link(lik, f), 0)
    return probs[:, 0] if lik == "bernoulli" else probs


__all__ = ["glm_predictive_moments", "laplace_predictive"]
