r"""The evidence lower bound, with sticking-the-landing gradients.

The tempered, KL-weighted ELBO maximised here is

.. math::

    \mathcal{L}(q) = \frac{1}{T}\,\mathbb{E}_{q}[\ell(\theta)] - \beta\,\mathrm{KL}(q \,\|\, p_0),

estimated with ``num_samples`` reparameterised draws ``theta = m + S eps``. With no prior the KL term is the
negative entropy (``ell`` is then the log joint); with a :class:`jaxbayes.vi.GaussianPrior` it is in closed
form; with a log-prior callable it is a Monte-Carlo estimate.

Sticking the landing (Roeder, Wu & Duvenaud, 2017) drops the score-function term of the entropy gradient by
evaluating ``log q(theta)`` with the variational parameters held constant (``stop_gradient``): the estimator
stays unbiased and its variance vanishes when ``q`` equals the posterior.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxbayes.typing import Array, ArrayLike, Family, PyTree
from jaxbayes.vi._objective import Objective, ObjectiveTerms, prior_log_prob
from jaxbayes.vi._prior import GaussianPrior


@dataclasses.dataclass(frozen=True)
class ELBO(Objective):
    """The ELBO ``E_q[ell] / T - beta KL(q || p_0)`` (see the module docstring).

    Attributes:
      stl: sticking-the-landing gradient (on by default; families whose sampler returns ``log q``, i.e. flows,
        take the plain reparameterisation gradient through it).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbayes.vi import meanfield_init
      >>> q = meanfield_init({"x": jnp.zeros(2)}, init_scale=1.0)
      >>> logp = lambda t: -0.5 * jnp.sum(t["x"] ** 2)                 # unnormalised N(0, I)
      >>> round(float(ELBO().terms(jax.random.key(0), q, logp, num_samples=4).value), 4)  # log Z = log 2 pi
      1.8379
    """

    stl: bool = True

    def from_draws(self, q: Family, thetas: PyTree, ell: Array, *, prior: Any, kl_weight: ArrayLike,
                   temperature: ArrayLike, log_q: Array | None = None) -> ObjectiveTerms:
        q_const = jax.lax.stop_gradient(q)
        if isinstance(prior, GaussianPrior) and hasattr(q, "kl_normal"):
            kl = q.kl_normal(prior.mean, prior.scale)
        else:  # Monte Carlo (also for families without a closed-form KL or entropy, e.g. flows)
            if log_q is None:
                log_q = jax.vmap((q_const if self.stl else q).log_prob)(thetas)
            if prior is None:
                kl = -q.entropy() if not self.stl and hasattr(q, "entropy") else jnp.mean(log_q)
            else:
                kl = jnp.mean(log_q - jax.vmap(prior_log_prob(prior))(thetas))
        exp_ll = jnp.mean(ell)
        return ObjectiveTerms(exp_ll / temperature - kl_weight * kl, exp_ll, kl)


__all__ = ["ELBO"]
