"""Reparameterised variational objectives: the ELBO (with sticking-the-landing gradients) and the Renyi bound.

The tempered, KL-weighted evidence lower bound maximised here is

.. math::

    \\mathcal{L}(q) = \\frac{1}{T}\\,\\mathbb{E}_{q}[\\ell(\\theta)] - \\beta\\,\\mathrm{KL}(q \\,\\|\\, p_0),

estimated with ``num_samples`` reparameterised draws ``theta = m + S eps``. ``ell`` is the user's
``logdensity_fn``: with no prior given it is the full log joint and the KL term is the negative entropy; with a
prior it is the log-likelihood. When ``num_data`` is set, ``logdensity_fn(theta, batch)`` returns per-example
log-likelihoods of a minibatch of ``B`` examples and ``ell = (N / B) sum_b ell_b`` (an unbiased estimate of the
full-data log-likelihood).

Sticking the landing (Roeder, Wu & Duvenaud, 2017) drops the score-function term of the entropy gradient by
evaluating ``log q(theta)`` with the variational parameters held constant (``stop_gradient``): the estimator stays
unbiased and its variance vanishes when ``q`` equals the posterior.

The Renyi bound (Li & Turner, 2016) with ``0 <= alpha < 1``,
``L_alpha = 1/(1-alpha) log mean_k w_k^(1-alpha)``, ``log w = ell/T + beta (log p_0 - log q)``, is the
importance-weighted bound (Burda et al., 2016) at ``alpha = 0``. It uses plain reparameterised gradients: STL is
biased for multi-sample bounds (Tucker et al., 2019).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxbayes._checks import check_choice, check_int_range, check_positive, concrete_value
from jaxbayes.typing import Array, ArrayLike, PRNGKey, PyTree
from jaxbayes.vi._families import _broadcast_prior


class GaussianPrior(NamedTuple):
    """Diagonal Gaussian prior ``N(mean, diag(scale^2))``; ``mean``/``scale`` are scalars or parameter pytrees.

    With this prior the KL term of the ELBO is computed in closed form.
    """

    mean: ArrayLike | PyTree = 0.0
    scale: ArrayLike | PyTree = 1.0

    def log_prob(self, x: PyTree) -> Array:
        """Log-density of one parameter pytree."""
        flat = ravel_pytree(x)[0]
        m = _broadcast_prior(self.mean, x)
        s = _broadcast_prior(self.scale, x)
        return jnp.sum(-0.5 * ((flat - m) / s) ** 2 - jnp.log(s) - 0.5 * math.log(2 * math.pi))


class ObjectiveTerms(NamedTuple):
    """Pieces of an objective estimate.

    Attributes:
      value: the objective (ELBO or Renyi bound) estimate to be maximised.
      expected_loglik: Monte-Carlo mean of ``ell(theta)`` (scaled by ``N/B`` when minibatched).
      kl: the KL term (closed form, or Monte-Carlo; the negative entropy when no prior is given).
    """

    value: Array
    expected_loglik: Array
    kl: Array


def _loglik(logdensity_fn: Callable, theta: PyTree, batch, num_data: int | None) -> Array:
    out = logdensity_fn(theta) if batch is None else logdensity_fn(theta, batch)
    if num_data is None:
        if jnp.ndim(out) != 0:
            raise ValueError(f"logdensity_fn must return a scalar, got shape {jnp.shape(out)}; for per-example "
                             "log-likelihoods of a minibatch pass num_data")
        return out
    if jnp.ndim(out) != 1:
        raise ValueError(f"with num_data set, logdensity_fn(theta, batch) must return per-example "
                         f"log-likelihoods of shape (B,), got {jnp.shape(out)}")
    b = out.shape[0]
    if b > num_data:
        raise ValueError(f"batch size {b} is larger than num_data={num_data}")
    return (num_data / b) * jnp.sum(out)


def objective_terms(
    key: PRNGKey,
    q,
    logdensity_fn: Callable,
    batch: PyTree = None,
    *,
    num_samples: int = 1,
    stl: bool = True,
    objective: str = "elbo",
    alpha: ArrayLike = 0.0,
    prior: GaussianPrior | Callable | None = None,
    num_data: int | None = None,
    kl_weight: ArrayLike = 1.0,
    temperature: ArrayLike = 1.0,
) -> ObjectiveTerms:
    """Monte-Carlo estimate of the ELBO or Renyi bound and its parts (see the module docstring for the math).

    Args:
      key: PRNG key for the reparameterised draws.
      q: a variational family (:class:`MeanField`, :class:`LowRank`, :class:`FullRank`).
      logdensity_fn: ``theta -> scalar`` (or ``(theta, batch) -> scalar``): the log joint when ``prior`` is
        ``None``, the log-likelihood otherwise; with ``num_data`` it returns per-example values ``(B,)``.
      batch: optional data passed as the second argument of ``logdensity_fn``.
      num_samples: number of reparameterised draws.
      stl: sticking-the-landing gradient (ELBO only).
      objective: ``"elbo"`` or ``"renyi"``.
      alpha: Renyi order in ``[0, 1)``; ``0`` is the importance-weighted bound.
      prior: ``None`` (``logdensity_fn`` is the joint), a :class:`GaussianPrior` (closed-form KL) or a callable
        ``theta -> log p_0(theta)`` (Monte-Carlo KL).
      num_data: total number of examples ``N`` when ``batch`` is a minibatch.
      kl_weight: ``beta`` multiplying the KL term.
      temperature: ``T`` dividing the expected log-likelihood.

    Returns:
      :class:`ObjectiveTerms`; ``value`` is differentiable with respect to ``q``.
    """
    num_samples = check_int_range("num_samples", num_samples, 1)
    check_choice("objective", objective, ("elbo", "renyi"))
    check_positive("temperature", temperature)
    check_positive("kl_weight", kl_weight, strict=False)
    if num_data is not None:
        num_data = check_int_range("num_data", num_data, 1)
        if batch is None:
            raise ValueError("num_data is set, so step/objective needs a minibatch `batch`")
    thetas = q.sample(key, num_samples)
    ell = jax.vmap(lambda t: _loglik(logdensity_fn, t, batch, num_data))(thetas)
    q_const = jax.lax.stop_gradient(q)
    if objective == "renyi":
        a = jnp.asarray(alpha)
        av = concrete_value(a)
        if av is not None and not (0.0 <= float(av) < 1.0):
            raise ValueError(f"alpha must be in [0, 1), got {float(av)}")
        log_q = jax.vmap(q.log_prob)(thetas)
        log_p0 = jnp.zeros_like(log_q) if prior is None else jax.vmap(_prior_log_prob(prior))(thetas)
        log_w = ell / temperature + kl_weight * (log_p0 - log_q)
        scaled = (1.0 - a) * log_w
        value = (jax.nn.logsumexp(scaled) - jnp.log(num_samples)) / (1.0 - a)
        return ObjectiveTerms(value, jnp.mean(ell), jnp.mean(log_q - log_p0))
    if isinstance(prior, GaussianPrior):
        kl = q.kl_normal(prior.mean, prior.scale)
    else:
        log_q = jax.vmap((q_const if stl else q).log_prob)(thetas)
        if prior is None:
            kl = jnp.mean(log_q) if stl else -q.entropy()
        else:
            kl = jnp.mean(log_q - jax.vmap(prior)(thetas))
    exp_ll = jnp.mean(ell)
    return ObjectiveTerms(exp_ll / temperature - kl_weight * kl, exp_ll, kl)


def _prior_log_prob(prior) -> Callable:
    return prior.log_prob if isinstance(prior, GaussianPrior) else prior


def elbo(key: PRNGKey, q, logdensity_fn: Callable, batch: PyTree = None, **options) -> Array:
    """The objective value of :func:`objective_terms` (same arguments): an ELBO or Renyi-bound estimate.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbayes.vi import meanfield_init
      >>> logp = lambda t: -0.5 * jnp.sum(t["x"] ** 2)       # unnormalised N(0, I)
      >>> q = meanfield_init({"x": jnp.zeros(2)}, init_scale=1.0)
      >>> round(float(elbo(jax.random.key(0), q, logp, num_samples=4)), 4)  # = log Z = log(2 pi)
      1.8379
    """
    return objective_terms(key, q, logdensity_fn, batch, **options).value


__all__ = ["GaussianPrior", "ObjectiveTerms", "elbo", "objective_terms"]
