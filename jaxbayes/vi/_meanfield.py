"""The mean-field Gaussian: ``q(theta) = N(m, diag(s^2))``, ``s = exp(log_scale)``, and its family object."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_positive
from jaxbayes.typing import Array, ArrayLike, PRNGKey, PyTree
from jaxbayes.vi._family import VariationalFamily
from jaxbayes.vi._gaussian import (
    LOG2PI,
    flatten,
    gaussian_entropy,
    gaussian_flat_mean,
    gaussian_kl,
    gaussian_kl_mvn,
    gaussian_kl_normal,
    gaussian_log_prob,
    gaussian_sample,
)


class MeanFieldNormal(NamedTuple):
    """Fully factorised Gaussian ``N(mean, diag(exp(log_scale)^2))`` over a parameter pytree.

    Attributes:
      mean: pytree of means (the model's parameter structure).
      log_scale: pytree of log standard deviations, same structure.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> q = MeanFieldNormal({"w": jnp.zeros(2)}, {"w": jnp.zeros(2)})
      >>> round(float(q.kl_normal(0.0, 1.0)), 6), q.sample(jax.random.key(0), 3)["w"].shape
      (0.0, (3, 2))
    """

    mean: PyTree
    log_scale: PyTree

    sample = gaussian_sample
    log_prob = gaussian_log_prob
    entropy = gaussian_entropy
    kl = gaussian_kl
    kl_normal = gaussian_kl_normal
    kl_mvn = gaussian_kl_mvn
    flat_mean = gaussian_flat_mean

    def to_distrax(self):
        """``distrax.MultivariateNormalDiag(m, s)`` over the flattened parameters (:mod:`jaxbayes.vi._distrax`)."""
        import distrax

        return distrax.MultivariateNormalDiag(self.flat_mean(), jnp.exp(flatten(self.log_scale)))

    def scale(self) -> PyTree:
        """Standard deviations as a pytree."""
        return jax.tree.map(jnp.exp, self.log_scale)

    def reparameterize(self, key: PRNGKey, mean: Array, batch: tuple[int, ...]) -> Array:
        """``mean + s * eps`` for ``eps ~ N(0, I)`` of shape ``(*batch, d)``."""
        s = jnp.exp(flatten(self.log_scale))
        eps = jax.random.normal(key, (*batch, mean.size), mean.dtype)
        return mean + s * eps

    def log_det_covariance(self) -> Array:
        """``log det Sigma = 2 sum log s``."""
        return 2.0 * jnp.sum(flatten(self.log_scale))

    def covariance_diagonal(self) -> Array:
        """``diag(Sigma) = s^2``."""
        return jnp.exp(2.0 * flatten(self.log_scale))

    def covariance(self) -> Array:
        """Dense ``(d, d)`` covariance of the flattened parameters."""
        return jnp.diag(self.covariance_diagonal())

    def log_prob_flat(self, x: Array) -> Array:
        """``log q(x)`` of one flat vector."""
        m = self.flat_mean()
        ls = flatten(self.log_scale)
        z = (x - m) * jnp.exp(-ls)
        return -0.5 * jnp.sum(z**2) - jnp.sum(ls) - 0.5 * m.size * LOG2PI


def meanfield_init(position: PyTree, *, init_scale: ArrayLike = 0.1) -> MeanFieldNormal:
    """A :class:`MeanFieldNormal` centred on ``position`` with every standard deviation ``init_scale``.

    Example:
      >>> import jax.numpy as jnp
      >>> q = meanfield_init({"b": jnp.ones(3)}, init_scale=0.5)
      >>> [round(float(v), 3) for v in q.scale()["b"]]
      [0.5, 0.5, 0.5]
    """
    check_positive("init_scale", init_scale)
    mean = jax.tree.map(jnp.asarray, position)
    log_scale = jax.tree.map(lambda p: jnp.full(jnp.shape(p), jnp.log(init_scale), jnp.result_type(p)), mean)
    return MeanFieldNormal(mean, log_scale)


@dataclasses.dataclass(frozen=True)
class MeanField(VariationalFamily):
    """The mean-field family: builds a :class:`MeanFieldNormal` (``O(d)`` parameters and cost).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> MeanField().init(jax.random.key(0), jnp.zeros(2), 0.5).scale().tolist()
      [0.5, 0.5]
    """

    distribution = MeanFieldNormal

    def init(self, key: PRNGKey, position: PyTree, init_scale: ArrayLike = 0.1) -> MeanFieldNormal:
        del key
        return meanfield_init(position, init_scale=init_scale)


__all__ = ["MeanField", "MeanFieldNormal", "meanfield_init"]
