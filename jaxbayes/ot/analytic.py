r"""Closed forms for OT between Gaussians: the 2-Wasserstein distance and entropic OT.

* :func:`w2_gaussians` (Dowson & Landau 1982; Givens & Shortt 1984):
  :math:`W_2^2 = \|m_1 - m_2\|^2 + \mathrm{tr}(\Sigma_1 + \Sigma_2 - 2(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2})^{1/2})`.
* :func:`entropic_ot_gaussians` (Janati, Muzellec, Peyré, Cuturi, NeurIPS 2020, Thm. 1; also Mallasto et
  al. 2021): for the squared Euclidean cost and :math:`\varepsilon\,\mathrm{KL}(P\,\|\,\alpha\otimes\beta)`,
  with :math:`\sigma^2 = \varepsilon / 2` and :math:`D_\sigma = (4 A^{1/2} B A^{1/2} + \sigma^4 I)^{1/2}`,

  .. math:: \mathrm{OT}_\varepsilon = \|m_1 - m_2\|^2 + \mathrm{tr} A + \mathrm{tr} B - \mathrm{tr} D_\sigma
     + d\sigma^2(1 - \log 2\sigma^2) + \sigma^2 \log\det(D_\sigma + \sigma^2 I).

  This is the same convention as :func:`jaxbayes.ot.sinkhorn` (reference measure :math:`a \otimes b`).
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxbayes._checks import check_positive
from jaxbayes.typing import Array, ArrayLike

__all__ = ["entropic_ot_gaussians", "sqrtm_psd", "w2_gaussians"]


def sqrtm_psd(s: ArrayLike) -> Array:
    """Symmetric square root of a symmetric PSD matrix (eigendecomposition, eigenvalues clipped at 0)."""
    s = jnp.asarray(s)
    s = 0.5 * (s + s.T)
    w, v = jnp.linalg.eigh(s)
    return (v * jnp.sqrt(jnp.maximum(w, 0.0))) @ v.T


def _as_cov(name: str, c: ArrayLike) -> Array:
    c = jnp.asarray(c)
    if c.ndim == 1:
        c = jnp.diag(c)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"{name} must be a (d, d) covariance or a (d,) diagonal, got shape {c.shape}")
    return c


def _check(m1, c1, m2, c2):
    m1, m2 = jnp.atleast_1d(jnp.asarray(m1)), jnp.atleast_1d(jnp.asarray(m2))
    c1, c2 = _as_cov("cov1", c1), _as_cov("cov2", c2)
    d = m1.shape[0]
    if m2.shape != (d,) or c1.shape != (d, d) or c2.shape != (d, d):
        raise ValueError(f"mean1, mean2 must have shape (d,) and cov1, cov2 shape (d, d) with one d; got "
                         f"{m1.shape}, {m2.shape}, {c1.shape}, {c2.shape}")
    return m1, c1, m2, c2


def w2_gaussians(mean1: ArrayLike, cov1: ArrayLike, mean2: ArrayLike, cov2: ArrayLike) -> Array:
    """Squared 2-Wasserstein distance between two Gaussians.

    Args:
      mean1, mean2: means ``(d,)``; cov1, cov2: covariances ``(d, d)`` (or diagonals ``(d,)``).

    Returns:
      :math:`W_2^2`.

    Example:
      >>> float(w2_gaussians([0.0], [[1.0]], [1.0], [[4.0]]))
      2.0
    """
    m1, c1, m2, c2 = _check(mean1, cov1, mean2, cov2)
    r1 = sqrtm_psd(c1)
    cross = sqrtm_psd(r1 @ c2 @ r1)
    return jnp.sum((m1 - m2) ** 2) + jnp.trace(c1) + jnp.trace(c2) - 2.0 * jnp.trace(cross)


def entropic_ot_gaussians(mean1: ArrayLike, cov1: ArrayLike, mean2: ArrayLike, cov2: ArrayLike, *,
                          epsilon: ArrayLike) -> Array:
    """Entropic OT value between two Gaussians (squared Euclidean cost), see the module docstring.

    Args:
      mean1, mean2: means ``(d,)``; cov1, cov2: covariances ``(d, d)`` (or diagonals ``(d,)``).
      epsilon: absolute entropic regularisation, ``> 0``.

    Returns:
      :math:`\\mathrm{OT}_\\varepsilon`, which tends to :func:`w2_gaussians` as ``epsilon -> 0``.

    Example:
      >>> round(float(entropic_ot_gaussians([0.0], [1.0], [1.0], [4.0], epsilon=1e-4)), 2)
      2.0
    """
    check_positive("epsilon", epsilon)
    m1, c1, m2, c2 = _check(mean1, cov1, mean2, cov2)
    d = m1.shape[0]
    s2 = jnp.asarray(epsilon, c1.dtype) / 2.0
    r1 = sqrtm_psd(c1)
    eye = jnp.eye(d, dtype=c1.dtype)
    ds = sqrtm_psd(4.0 * r1 @ c2 @ r1 + s2**2 * eye)
    _, logdet = jnp.linalg.slogdet(ds + s2 * eye)
    return (jnp.sum((m1 - m2) ** 2) + jnp.trace(c1) + jnp.trace(c2) - jnp.trace(ds)
            + d * s2 * (1.0 - jnp.log(2.0 * s2)) + s2 * logdet)
