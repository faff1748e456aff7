"""The variational-objective interface and its shared pieces (the scaled log-likelihood of a draw).

An objective is a small frozen object (``ELBO(stl=True)``, ``Renyi(alpha=0.5)``, or a user's own subclass).
:meth:`Objective.terms` draws ``num_samples`` reparameterised samples ``theta_k ~ q``, evaluates the
(tempered, minibatch-scaled) log-likelihood ``ell(theta_k)`` of each, and hands them to the subclass's
:meth:`Objective.from_draws`, which combines them with ``log q`` and the prior into an estimate to maximise.
A new objective is one subclass in one file implementing ``from_draws``.

``ell`` is the user's ``logdensity_fn``: with no prior given it is the full log joint; with a prior it is the
log-likelihood. When ``num_data`` is set, ``logdensity_fn(theta, batch)`` returns per-example log-likelihoods
of a minibatch of ``B`` examples and ``ell = (N / B) sum_b ell_b`` (an unbiased estimate of the full-data
log-likelihood).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_int_range, check_positive
from jaxbayes.typing import Array, ArrayLike, Family, PRNGKey, PyTree
from jaxbayes.vi._prior import GaussianPrior


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


def scaled_loglik(logdensity_fn: Callable, theta: PyTree, batch: PyTree, num_data: int | None) -> Array:
    """``logdensity_fn(theta[, batch])``; with ``num_data`` the per-example values ``(B,)`` summed and scaled
    by ``N / B``.

    Example:
      >>> import jax.numpy as jnp
      >>> float(scaled_loglik(lambda t, b: -b * t, 1.0, jnp.array([1.0, 3.0]), 10))   # 10/2 * (-4)
      -20.0
    """
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


def prior_log_prob(prior: GaussianPrior | Callable) -> Callable:
    """``theta -> log p_0(theta)`` of a :class:`GaussianPrior` or of a log-prior callable."""
    return prior.log_prob if isinstance(prior, GaussianPrior) else prior


class Objective:
    """Base class of the variational objectives (see the module docstring); subclasses are frozen dataclasses
    and implement :meth:`from_draws`."""

    def terms(
        self,
        key: PRNGKey,
        q: Family,
        logdensity_fn: Callable,
        batch: PyTree = None,
        *,
        num_samples: int = 1,
        prior: GaussianPrior | Callable | None = None,
        num_data: int | None = None,
        kl_weight: ArrayLike = 1.0,
        temperature: ArrayLike = 1.0,
    ) -> ObjectiveTerms:
        """Monte-Carlo estimate of the objective and its parts; arguments as in
        :func:`jaxbayes.vi.objective_terms`."""
        num_samples = check_int_range("num_samples", num_samples, 1)
        check_positive("temperature", temperature)
        check_positive("kl_weight", kl_weight, strict=False)
        if num_data is not None:
            num_data = check_int_range("num_data", num_data, 1)
            if batch is None:
                raise ValueError("num_data is set, so step/objective needs a minibatch `batch`")
        extra = {}
        if hasattr(q, "sample_and_log_prob"):  # flows: log q from the forward pass, no inverse needed
            thetas, extra["log_q"] = q.sample_and_log_prob(key, num_samples)
        else:
            thetas = q.sample(key, num_samples)
        ell = jax.vmap(lambda t: scaled_loglik(logdensity_fn, t, batch, num_data))(thetas)
        return self.from_draws(q, thetas, ell, prior=prior, kl_weight=kl_weight, temperature=temperature, **extra)

    def from_draws(self, q: Family, thetas: PyTree, ell: Array, *, prior: Any, kl_weight: ArrayLike,
                   temperature: ArrayLike, log_q: Array | None = None) -> ObjectiveTerms:
        """Combine the draws ``thetas`` (leading axis ``num_samples``) and their log-likelihoods ``ell`` into
        :class:`ObjectiveTerms` (differentiable with respect to ``q``). ``log_q`` (passed only for families
        with ``sample_and_log_prob``, e.g. flows) is the draws' ``log q`` from the sampler's forward pass, to be
        used instead of ``q.log_prob(thetas)``."""
        raise NotImplementedError


__all__ = ["Objective", "ObjectiveTerms", "prior_log_prob", "scaled_loglik"]
