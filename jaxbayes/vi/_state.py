"""State and per-step info of the optimiser-driven VI algorithms, and the pieces of their steps they share:
the KL warm-up schedule and the check that the parameter structure still matches the optimiser state."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxbayes.base import guarded_update, zero_counters
from jaxbayes.typing import Array, ArrayLike, Family, PRNGKey, PyTree


class VIState(NamedTuple):
    """State of a VI algorithm.

    Attributes:
      q: the variational distribution (its ``mean`` has the model's parameter structure).
      opt_state: the optax optimiser state.
      step: number of steps taken (int32 scalar).
      num_skipped: number of steps whose update was dropped because it was non-finite.
      nonfinite_step: step number of the first non-finite gradient (or objective, with ``nan_policy="raise"``),
        ``-1`` if none.
    """

    q: PyTree
    opt_state: PyTree
    step: Array
    num_skipped: Array
    nonfinite_step: Array


class VIInfo(NamedTuple):
    """Per-step diagnostics.

    Attributes:
      objective: the objective estimate (ELBO or Renyi bound) before the update.
      expected_loglik: Monte-Carlo mean of the (scaled) log-likelihood or log joint.
      kl: the KL term (negative entropy when no prior is given).
      kl_weight: the warm-up-adjusted KL weight used in this step.
      grad_norm: global norm of the gradient.
      finite: whether the gradient (and, with ``nan_policy="raise"``, the objective) was finite; the update was
        applied when it was.
    """

    objective: Array
    expected_loglik: Array
    kl: Array
    kl_weight: Array
    grad_norm: Array
    finite: Array


def vi_state(q: Family, optimizer: optax.GradientTransformation) -> VIState:
    """The :class:`VIState` of ``q`` before any step."""
    return VIState(q, optimizer.init(q), *zero_counters())


def kl_weight_schedule(kl_weight: ArrayLike, warmup_steps: int, step: ArrayLike) -> Array:
    """The KL weight of step ``t``: ``beta_t = kl_weight * min(1, (t + 1) / warmup_steps)`` (``kl_weight``
    itself when ``warmup_steps`` is 0).

    Example:
      >>> [float(kl_weight_schedule(0.5, 4, t)) for t in range(5)]
      [0.125, 0.25, 0.375, 0.5, 0.5]
    """
    if warmup_steps:
        return kl_weight * jnp.minimum(1.0, (step + 1) / warmup_steps)
    return jnp.asarray(kl_weight, jnp.result_type(float))


def check_structure(optimizer: optax.GradientTransformation, state: NamedTuple) -> None:
    """Raise ``ValueError`` when ``state.q``'s pytree structure no longer matches ``state.opt_state`` (a
    state built for another model)."""
    expected = jax.tree.structure(jax.eval_shape(optimizer.init, state.q))
    if expected != jax.tree.structure(state.opt_state):
        raise ValueError("the parameter pytree structure changed since init: q has structure "
                         f"{jax.tree.structure(state.q.mean)}, which does not match the optimiser state; "
                         "call alg.init again for a new parameter structure")


def variational_step(key: PRNGKey, state: VIState, batch: PyTree = None, *,
                     objective_fn: Callable[[PRNGKey, Family, PyTree, Array], tuple[Array, Array, Array]],
                     optimizer: optax.GradientTransformation, kl_weight: ArrayLike, warmup_steps: int,
                     nan_policy: str) -> tuple[VIState, VIInfo]:
    """One step of a VI algorithm: ascend ``objective_fn(key, q, batch, beta) -> (value, expected_loglik, kl)``
    with ``beta`` the warmed-up KL weight, through :func:`jaxbayes.base.guarded_update`.

    The step logic of :func:`jaxbayes.vi.gaussian_vi` and :func:`jaxbayes.vi.bnn_vi` (blackjax's shape: a
    module-level function with explicit configuration; the factories bind it with ``functools.partial``).
    """
    check_structure(optimizer, state)
    beta = kl_weight_schedule(kl_weight, warmup_steps, state.step)

    def loss(q):
        value, expected_loglik, kl = objective_fn(key, q, batch, beta)
        return -value, (value, expected_loglik, kl)

    (_, (value, expected_loglik, kl)), grads = jax.value_and_grad(loss, has_aux=True)(state.q)
    new_state, finite = guarded_update(optimizer, state, grads, value, nan_policy)
    return new_state, VIInfo(value, expected_loglik, kl, beta, optax.tree.norm(grads), finite)


__all__ = ["VIInfo", "VIState", "check_structure", "kl_weight_schedule", "variational_step", "vi_state"]
