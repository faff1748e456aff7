"""PFGM++: Poisson-flow generative models with an augmented dimension ``D``.

With the alignment ``r = sigma sqrt(D)`` the PFGM++ perturbation kernel of ``N``-dimensional data,
``p_r(x | y) ∝ (||x - y||^2 + r^2)^{-(N + D)/2}``, is the multivariate Student-t with ``D`` degrees of
freedom and scale ``sigma``: ``x = y + sigma z / sqrt(chi^2_D / D)``. Training and sampling then reuse
EDM (the denoiser target and ``dx/dsigma = (x - D(x, sigma)) / sigma``); only the noise and the prior
are heavy-tailed. ``D -> infinity`` recovers the Gaussian (EDM/VE) case.

Reference: Xu, Liu, Tian, Tegmark, Jaakkola, "PFGM++: Unlocking the Potential of Physics-Inspired
Generative Models", ICML 2023.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln

from jaxbayes.typing import Array, ArrayLike, PRNGKey


@dataclasses.dataclass(frozen=True)
class PFGMpp:
    """The PFGM++ perturbation kernel and prior for augmented dimension ``D`` (``D > 2``).

    Attributes:
      D: augmented dimension (static); larger is closer to Gaussian diffusion.
      sigma_max: the prior's scale (EDM's ``sigma_max``).

    Example:
      >>> import jax.numpy as jnp
      >>> pf = PFGMpp(D=128)
      >>> float(pf.kernel_logp(jnp.zeros(2), jnp.zeros(2), 1.0)) > -2.0
      True
    """

    D: float = 128.0
    sigma_max: ArrayLike = 80.0

    def __post_init__(self):
        if not (isinstance(self.D, int | float) and self.D > 2):
            raise ValueError(f"PFGMpp: D must be a number > 2 (finite variance), got {self.D!r}")

    def perturb(self, key: PRNGKey, y: Array, sigma: ArrayLike) -> Array:
        """Draw ``x ~ p_r(x | y)`` with ``r = sigma sqrt(D)``: ``y + sigma z / sqrt(chi^2_D / D)``."""
        kz, kg = jax.random.split(key)
        z = jax.random.normal(kz, jnp.shape(y), jnp.result_type(y))
        chi2 = 2 * jax.random.gamma(kg, self.D / 2, (), jnp.result_type(y))
        return y + sigma * z * jax.lax.rsqrt(chi2 / self.D)

    def prior_sample(self, key: PRNGKey, shape: tuple[int, ...], dtype=None) -> Array:
        """A draw from the prior ``p_{r_max}(x | 0)`` (starting point for :func:`edm_sampler`)."""
        dtype = jnp.result_type(float) if dtype is None else dtype
        return self.perturb(key, jnp.zeros(shape, dtype), self.sigma_max)

    def kernel_logp(self, x: Array, y: Array, sigma: ArrayLike) -> Array:
        """``log p_r(x | y)``: the multivariate-t log-density with ``D`` degrees of freedom and scale ``sigma``."""
        n = jnp.size(x)
        d = self.D
        sq = jnp.sum((x - y) ** 2) / sigma**2
        return (gammaln((n + d) / 2) - gammaln(d / 2) - 0.5 * n * jnp.log(d * jnp.pi) - n * jnp.log(sigma)
                - 0.5 * (n + d) * jnp.log1p(sq / d))

    def radius_std_ratio(self, n: int) -> Array:
        """``E||x - y||^2 / (n sigma^2) = D / (D - 2)``, which tends to 1 (the Gaussian value) as D grows."""
        return jnp.asarray(self.D / (self.D - 2))


jax.tree_util.register_dataclass(PFGMpp, data_fields=["sigma_max"], meta_fields=["D"])
