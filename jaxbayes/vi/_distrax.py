"""distrax views of the variational Gaussians: ``q.to_distrax()``, and KL against distrax Gaussians.

Each distribution class has its ``to_distrax`` method; this module holds the low-rank scale factorisation
and the KL against a distrax distribution that they share.

The view is a distribution over the **flattened** parameters (``ravel_pytree`` order, event shape ``(d,)``),
with distrax's ``sample``, ``log_prob``, ``entropy``, ``mean``, ``covariance`` and ``kl_divergence``:

* :class:`MeanFieldNormal` ``N(m, diag(s^2))`` → ``distrax.MultivariateNormalDiag(m, s)``;
* :class:`FullRankNormal` ``N(m, L L^T)`` → ``distrax.MultivariateNormalTri(m, L)``;
* :class:`LowRankNormal` ``N(m, D^2 + F F^T)`` → ``distrax.MultivariateNormalDiagPlusLowRank(m, d, U, V)``,
  whose scale ``S = D + U V^T`` satisfies ``S S^T = D^2 + F F^T``. With ``G = D^-1 F`` and ``A = G^T G``
  (``r x r``), ``(I + G M G^T)^2 = I + G G^T`` for ``M = (I + (I + A)^{1/2})^{-1}`` (a function of ``A``
  solving ``A M^2 + 2 M = I``), so ``S = D (I + G M G^T)``: ``U = F M``, ``V = D^-1 F``. It costs
  ``O(d r^2)`` and keeps the view a distrax Gaussian, so distrax's closed-form KL applies to it.

The samples of the view follow the same law as ``q.sample`` but not the same draws for a given key (distrax
draws ``S eps``; the low-rank family draws ``D e1 + F e2``).

Example:
  >>> import jax.numpy as jnp
  >>> from jaxbayes.vi import LowRankNormal
  >>> q = LowRankNormal(jnp.zeros(2), jnp.zeros(2), jnp.ones((2, 1)))
  >>> q.to_distrax().covariance().round(6).tolist()
  [[2.0, 1.0], [1.0, 2.0]]
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jaxbayes.typing import Array


def lowrank_scale_factors(log_diag: Array, factor: Array) -> tuple[Array, Array, Array]:
    """``(d, U, V)`` with ``(diag(d) + U V^T)(diag(d) + U V^T)^T = diag(d^2) + F F^T`` (module docstring)."""
    d = jnp.exp(log_diag)
    g = factor / d[:, None]
    evals, evecs = jnp.linalg.eigh(g.T @ g)
    m = (evecs / (1.0 + jnp.sqrt(1.0 + jnp.maximum(evals, 0.0)))) @ evecs.T
    return d, factor @ m, g


def is_distribution(obj: Any) -> bool:
    """Whether ``obj`` is a distrax (or TFP) distribution: it has ``event_shape`` and ``kl_divergence``."""
    return hasattr(obj, "event_shape") and hasattr(obj, "kl_divergence")


def kl_to_distribution(q: Any, other: Any) -> Array:
    """``KL(q || other)`` for a distrax distribution ``other`` over the flattened parameters: distrax's closed
    form when it has one for the pair (Gaussians), else the closed form of ``q`` against ``N(other.mean(),
    other.covariance())`` when ``other`` is a TFP/distrax Gaussian without a registered KL."""
    if tuple(other.event_shape) != (q.flat_mean().size,):
        raise ValueError(f"other has event shape {tuple(other.event_shape)}; q is over "
                         f"{q.flat_mean().size} flattened parameters")
    try:
        return q.to_distrax().kl_divergence(other)
    except NotImplementedError:
        name = getattr(other, "name", type(other).__name__)
        if "Normal" not in str(name) and "Normal" not in type(other).__name__:
            raise TypeError(f"no closed-form KL from a Gaussian to {name}; estimate it by Monte Carlo "
                            "(q.sample + log_prob)") from None
        return q.kl_mvn(other.mean(), other.covariance())


__all__ = ["is_distribution", "kl_to_distribution", "lowrank_scale_factors"]
