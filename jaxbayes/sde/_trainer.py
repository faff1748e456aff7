"""Score-model training as a :class:`jaxbayes.base.Algorithm`: a guarded optax step plus a parameter EMA.

The step is :func:`jaxbayes.base.optimizer_step` (non-finite gradients are skipped, or raised with
``nan_policy="raise"``, like every other algorithm of the library) followed by the exponential moving average
``ema <- decay ema + (1 - decay) params`` that score-based models are sampled with (Song & Ermon 2020,
"Improved Techniques for Training Score-Based Generative Models", section 3.5). Run it with
:func:`jaxbayes.base.fit` or your own loop.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import optax

from jaxbayes._checks import check_choice
from jaxbayes.base import NAN_POLICIES, Algorithm, OptState, optimizer_init, optimizer_step
from jaxbayes.typing import Array, ArrayLike, PRNGKey, PyTree

_MISSING = object()


class TrainState(NamedTuple):
    """State of :func:`score_trainer`.

    Attributes:
      params: the model parameters being optimised.
      opt_state: the optax state.
      ema_params: the exponential moving average of ``params`` (what to sample with).
      step: steps taken (int32).
      num_skipped: steps whose update was dropped because the gradient was non-finite.
      nonfinite_step: first such step, ``-1`` if none.
    """

    params: PyTree
    opt_state: PyTree
    ema_params: PyTree
    step: Array
    num_skipped: Array
    nonfinite_step: Array


class TrainInfo(NamedTuple):
    """Per-step diagnostics of :func:`score_trainer`.

    Attributes:
      loss: the loss at the parameters before the update.
      grad_norm: the gradient's global norm.
      finite: whether the gradient was finite (the update was applied when it was).
    """

    loss: Array
    grad_norm: Array
    finite: Array


Trainer = Algorithm  # the old name of the trainer's type; it is the library's one algorithm contract


def trainer_init(optimizer: optax.GradientTransformation, params: PyTree) -> TrainState:
    """The :class:`TrainState` of ``params`` before any step (the EMA starts at ``params``)."""
    opt = optimizer_init(optimizer, params)
    return TrainState(params, opt.opt_state, params, opt.step, opt.num_skipped, opt.nonfinite_step)


def trainer_step(loss_fn: Callable[[PyTree, PRNGKey, PyTree], Array], optimizer: optax.GradientTransformation,
                 ema_decay: ArrayLike, key: PRNGKey, state: TrainState, batch: PyTree = None, *,
                 nan_policy: str = "skip") -> tuple[TrainState, TrainInfo]:
    """One guarded optimiser step on ``loss_fn(params, key, batch)``, then the EMA update.

    On a skipped (non-finite) step the parameters do not move and the EMA moves towards them as usual.
    """
    opt = OptState(state.params, state.opt_state, state.step, state.num_skipped, state.nonfinite_step)
    opt, info = optimizer_step(loss_fn, optimizer, key, opt, batch, nan_policy=nan_policy)
    ema = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, state.ema_params, opt.params)
    new = TrainState(opt.params, opt.opt_state, ema, opt.step, opt.num_skipped, opt.nonfinite_step)
    return new, TrainInfo(info.loss, info.grad_norm, info.finite)


def score_trainer(loss_fn: Callable[[PyTree, PRNGKey, PyTree], Array], optimizer: optax.GradientTransformation,
                  *, ema_decay: ArrayLike = 0.999, nan_policy: str = "skip") -> Algorithm:
    """Train a score (or denoiser) model on ``loss_fn(params, key, batch)`` with an optax optimiser and an EMA.

    ``state = trainer.init(key, params)`` (the key is unused: the parameters are given);
    ``state, info = trainer.step(key, state, batch)`` returns a :class:`TrainState` and a :class:`TrainInfo`.
    Each step is ``params <- optimizer update`` (skipped when the gradient is non-finite) and
    ``ema <- decay ema + (1 - decay) params``. Nothing is jitted inside; with a batch sharded over a mesh XLA
    computes the data-parallel gradient. :func:`jaxbayes.base.fit` runs it over minibatches in one scan.

    Args:
      loss_fn: ``loss_fn(params, key, batch) -> scalar``, e.g. a :func:`dsm_loss` of the model.
      optimizer: an optax optimiser.
      ema_decay: the EMA's decay in ``[0, 1)``.
      nan_policy: ``"skip"`` (drop a non-finite update and go on) or ``"raise"`` (freeze and raise
        ``FloatingPointError`` naming the step).

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from jaxbayes.base import fit
      >>> from jaxbayes.sde import VPSDE, dsm_loss
      >>> sde = VPSDE()
      >>> loss = lambda p, k, b: dsm_loss(k, lambda x, t: -p * x, sde, b)
      >>> trainer = score_trainer(loss, optax.adam(0.1), ema_decay=0.5)
      >>> state = trainer.init(jax.random.key(0), jnp.array(0.0))
      >>> state, infos = fit(jax.random.key(1), trainer, state, 20, data=jnp.zeros((64, 1)))
      >>> int(state.step), bool(state.params > 0.5), infos.loss.shape
      (20, True, (20,))
    """
    if isinstance(ema_decay, int | float) and not 0 <= ema_decay < 1:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
    check_choice("nan_policy", nan_policy, NAN_POLICIES)

    def init(key: PRNGKey, params: PyTree = _MISSING) -> TrainState:
        if params is _MISSING:  # the old init(params): deprecated for one release
            warnings.warn("score_trainer(...).init(params) is now init(key, params)", DeprecationWarning,
                          stacklevel=2)
            key, params = None, key
        del key
        return trainer_init(optimizer, params)

    def step(key: PRNGKey, state: TrainState, batch: PyTree = None) -> tuple[TrainState, TrainInfo]:
        return trainer_step(loss_fn, optimizer, ema_decay, key, state, batch, nan_policy=nan_policy)

    return Algorithm(init, step, nan_policy)


__all__ = ["TrainInfo", "TrainState", "Trainer", "score_trainer", "trainer_init", "trainer_step"]
