"""distrax views of the GP and Student-t predictives: ``posterior.to_distrax()``.

* A full-covariance GP predictive ``N(mean, cov)`` → ``distrax.MultivariateNormalTri(mean, L)`` with ``L``
  the Cholesky factor of ``cov`` under the library's jitter policy (none unless ``cov`` fails to factor; a
  test covariance next to the training inputs is often numerically singular); with ``full_cov=False``,
  ``distrax.Normal(mean, sqrt(var))``, the marginals (batch shape ``(m,)``).
* A Student-t predictive with scale matrix ``S`` and ``df`` → TFP's ``MultivariateStudentTLinearOperator``
  (distrax has no multivariate t) wrapped by ``distrax.as_distribution``; with ``full_cov=False`` the
  marginal ``StudentT(df, mean, sqrt(diag S))``.

A multi-output mean ``(m, k)`` (one covariance shared by the ``k`` outputs) gives batch shape ``(k,)`` over
events of shape ``(m,)`` (marginals: batch shape ``(k, m)``).

Example:
  >>> import jax.numpy as jnp
  >>> from jaxbayes.kernels import gp_posterior
  >>> post = gp_posterior(jnp.eye(2), jnp.ones(2), jnp.eye(2), jnp.eye(2), noise=1.0)  # N(0.5, 0.5 I)
  >>> round(float(post.to_distrax().log_prob(jnp.full(2, 0.5))), 4)  # -log(pi)
  -1.1447
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jaxbayes.kernels._linalg import jittered_cholesky
from jaxbayes.typing import Array


def _columns(mean: Array) -> Array:
    return mean if mean.ndim == 1 else mean.T


def gaussian_predictive(mean: Array, cov: Array | None, var: Array) -> Any:
    """The GP predictive as a distrax distribution (module docstring)."""
    import distrax

    loc = _columns(mean)
    if cov is None:
        return distrax.Normal(loc, jnp.sqrt(var))
    return distrax.MultivariateNormalTri(loc, jittered_cholesky(cov, name="cov").chol)


def student_t_predictive(mean: Array, scale: Array, df: Array) -> Any:
    """The Student-t predictive as a distrax-wrapped TFP distribution (module docstring)."""
    import distrax
    from tensorflow_probability.substrates import jax as tfp

    loc = _columns(mean)
    if scale.ndim == 1:
        return distrax.as_distribution(tfp.distributions.StudentT(df, loc, jnp.sqrt(scale)))
    chol = jittered_cholesky(scale, name="scale").chol
    return distrax.as_distribution(tfp.distributions.MultivariateStudentTLinearOperator(
        df, loc, tfp.tf2jax.linalg.LinearOperatorLowerTriangular(chol)))


__all__ = ["gaussian_predictive", "student_t_predictive"]
