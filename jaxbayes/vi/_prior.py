"""The diagonal Gaussian prior of VI objectives (closed-form KL terms)."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp

from jaxbayes.typing import Array, ArrayLike, PyTree
from jaxbayes.vi._gaussian import broadcast_prior, flatten


class GaussianPrior(NamedTuple):
    """Diagonal Gaussian prior ``N(mean, diag(scale^2))``; ``mean``/``scale`` are scalars or parameter pytrees.

    With this prior the KL term of the ELBO is computed in closed form.

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(GaussianPrior(0.0, 1.0).log_prob({"w": jnp.zeros(2)})), 4)   # -log(2 pi)
      -1.8379
    """

    mean: ArrayLike | PyTree = 0.0
    scale: ArrayLike | PyTree = 1.0

    def log_prob(self, x: PyTree) -> Array:
        """Log-density of one parameter pytree."""
        flat = flatten(x)
        m = broadcast_prior(self.mean, x)
        s = broadcast_prior(self.scale, x)
        return jnp.sum(-0.5 * ((flat - m) / s) ** 2 - jnp.log(s) - 0.5 * math.log(2 * math.pi))


__all__ = ["GaussianPrior"]
