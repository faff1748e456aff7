"""Names of the variational objectives, :func:`as_objective`, and the function forms :func:`objective_terms`
and :func:`elbo`.

* :class:`jaxbayes.vi.ELBO` (``"elbo"``): the tempered, KL-weighted ELBO, sticking-the-landing gradients;
* :class:`jaxbayes.vi.Renyi` (``"renyi"``): the Renyi bound, importance weighted at ``alpha = 0``.

A new objective is a :class:`jaxbayes.vi.Objective` subclass in its own file, passed as an object.
"""

from __future__ import annotations

from collections.abc import Callable

from jaxbayes.typing import Array, ArrayLike, Family, PRNGKey, PyTree
from jaxbayes.vi._elbo import ELBO
from jaxbayes.vi._objective import Objective, ObjectiveTerms
from jaxbayes.vi._prior import GaussianPrior
from jaxbayes.vi._renyi import Renyi

OBJECTIVES: dict[str, type[Objective]] = {"elbo": ELBO, "renyi": Renyi}


def as_objective(objective: str | Objective, *, stl: bool | None = None, alpha: ArrayLike | None = None) -> Objective:
    """Turn ``objective`` into an :class:`Objective` object.

    Args:
      objective: ``"elbo"``, ``"renyi"`` or an objective object (returned as is).
      stl: for ``"elbo"``: sticking-the-landing gradients (default ``True``); ignored by ``"renyi"``.
      alpha: for ``"renyi"``: the order in ``[0, 1)`` (default ``0``, importance weighted); ignored by ``"elbo"``.

    Example:
      >>> as_objective("renyi", alpha=0.5)
      Renyi(alpha=0.5)
    """
    if isinstance(objective, Objective):
        if stl is not None or alpha is not None:
            raise ValueError(f"stl and alpha are options of the 'elbo' and 'renyi' shorthands; {objective!r} "
                             "carries its own options")
        return objective
    if isinstance(objective, str):
        if objective == "elbo":
            return ELBO() if stl is None else ELBO(stl=stl)
        if objective == "renyi":
            return Renyi() if alpha is None else Renyi(alpha=alpha)
        raise ValueError(f"objective must be one of {sorted(OBJECTIVES)} or an Objective, got {objective!r}")
    raise TypeError(f"objective must be a name or an Objective, got {type(objective).__name__}")


def objective_terms(
    key: PRNGKey,
    q: Family,
    logdensity_fn: Callable,
    batch: PyTree = None,
    *,
    num_samples: int = 1,
    stl: bool | None = None,
    objective: str | Objective = "elbo",
    alpha: ArrayLike | None = None,
    prior: GaussianPrior | Callable | None = None,
    num_data: int | None = None,
    kl_weight: ArrayLike = 1.0,
    temperature: ArrayLike = 1.0,
) -> ObjectiveTerms:
    """Monte-Carlo estimate of a variational objective and its parts (the math is in :mod:`jaxbayes.vi`'s
    :class:`ELBO` and :class:`Renyi`).

    Args:
      key: PRNG key for the reparameterised draws.
      q: a variational distribution (:class:`MeanFieldNormal`, :class:`LowRankNormal`, :class:`FullRankNormal`).
      logdensity_fn: ``theta -> scalar`` (or ``(theta, batch) -> scalar``): the log joint when ``prior`` is
        ``None``, the log-likelihood otherwise; with ``num_data`` it returns per-example values ``(B,)``.
      batch: optional data passed as the second argument of ``logdensity_fn``.
      num_samples: number of reparameterised draws.
      stl: sticking-the-landing gradient (``"elbo"`` shorthand; default on).
      objective: ``ELBO(...)``, ``Renyi(...)``, or the shorthands ``"elbo"`` / ``"renyi"``.
      alpha: Renyi order in ``[0, 1)`` (``"renyi"`` shorthand; default ``0``, the importance-weighted bound).
      prior: ``None`` (``logdensity_fn`` is the joint), a :class:`GaussianPrior` (closed-form KL) or a callable
        ``theta -> log p_0(theta)`` (Monte-Carlo KL).
      num_data: total number of examples ``N`` when ``batch`` is a minibatch.
      kl_weight: ``beta`` multiplying the KL term.
      temperature: ``T`` dividing the expected log-likelihood.

    Returns:
      :class:`ObjectiveTerms`; ``value`` is differentiable with respect to ``q``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbayes.vi import meanfield_init
      >>> q = meanfield_init(jnp.zeros(2), init_scale=1.0)
      >>> t = objective_terms(jax.random.key(0), q, lambda w: -0.5 * jnp.sum(w**2), prior=GaussianPrior())
      >>> round(float(t.kl), 6)                                          # q equals the prior
      0.0
    """
    obj = as_objective(objective, stl=stl, alpha=alpha)
    return obj.terms(key, q, logdensity_fn, batch, num_samples=num_samples, prior=prior, num_data=num_data,
                     kl_weight=kl_weight, temperature=temperature)


def elbo(key: PRNGKey, q: Family, logdensity_fn: Callable, batch: PyTree = None, **options) -> Array:
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


__all__ = ["OBJECTIVES", "as_objective", "elbo", "objective_terms"]
