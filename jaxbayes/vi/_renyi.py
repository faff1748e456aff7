"""The Renyi variational bound (Li & Turner, 2016); the importance-weighted bound at ``alpha = 0``.

With ``0 <= alpha < 1`` and log weights ``log w_k = ell(theta_k) / T + beta (log p_0(theta_k) - log q(theta_k))``,

``L_alpha = 1 / (1 - alpha) log mean_k w_k^(1 - alpha)``,

the importance-weighted bound of Burda et al. (2016) at ``alpha = 0`` and the ELBO as ``alpha -> 1``. It uses
plain reparameterised gradients: sticking the landing is biased for multi-sample bounds (Tucker et al., 2019).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxbayes._checks import concrete_value
from jaxbayes.typing import Array, ArrayLike, Family, PyTree
from jaxbayes.vi._objective import Objective, ObjectiveTerms, prior_log_prob


@dataclasses.dataclass(frozen=True)
class Renyi(Objective):
    """The Renyi bound of order ``alpha`` (see the module docstring).

    Attributes:
      alpha: order in ``[0, 1)``; ``0`` is the importance-weighted bound. May be a traced array (vmap over it).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbayes.vi import meanfield_init
      >>> q = meanfield_init(jnp.zeros(2), init_scale=1.0)
      >>> logp = lambda t: -0.5 * jnp.sum(t**2)                  # q is exact: every bound is log Z = log 2 pi
      >>> round(float(Renyi(alpha=0.5).terms(jax.random.key(0), q, logp, num_samples=8).value), 4)
      1.8379
    """

    alpha: ArrayLike = 0.0

    def __post_init__(self):
        a = concrete_value(self.alpha)
        if a is not None and not (0.0 <= float(a) < 1.0):
            raise ValueError(f"alpha must be in [0, 1), got {float(a)}")

    def from_draws(self, q: Family, thetas: PyTree, ell: Array, *, prior: Any, kl_weight: ArrayLike,
                   temperature: ArrayLike, log_q: Array | None = None) -> ObjectiveTerms:
        a = jnp.asarray(self.alpha)
        num_samples = ell.shape[0]
        log_q = jax.vmap(q.log_prob)(thetas) if log_q is None else log_q
        log_p0 = jnp.zeros_like(log_q) if prior is None else jax.vmap(prior_log_prob(prior))(thetas)
        log_w = ell / temperature + kl_weight * (log_p0 - log_q)
        scaled = (1.0 - a) * log_w
        value = (jax.nn.logsumexp(scaled) - jnp.log(num_samples)) / (1.0 - a)
        return ObjectiveTerms(value, jnp.mean(ell), jnp.mean(log_q - log_p0))


__all__ = ["Renyi"]
