"""Denoising score-matching losses and an optax train-step factory with a parameter EMA.

Losses take a per-point ``score_fn(x, t)`` (vmapped inside) and a batch ``x0`` of shape ``(B, ...)``.

References: Vincent (2011) for denoising score matching; Song et al. (2021) eq. 7 for the continuous
loss; Song, Durkan, Murray, Ermon, "Maximum Likelihood Training of Score-Based Diffusion Models" (2021) for
the likelihood weighting ``lambda(t) = g(t)^2``; Song & Ermon (2019) SMLD; Ho et al. (2020) DDPM;
Karras et al. (2022) for the EDM loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxbayes._checks import check_choice
from jaxbayes.sde._edm import edm_precond
from jaxbayes.sde._sdes import VESDE, VPSDE
from jaxbayes.typing import Array, ArrayLike, PRNGKey, PyTree


def _reduce(sq: Array, reduce: str) -> Array:
    return jnp.mean(sq) if reduce == "mean" else jnp.sum(sq)


def _batch(x0):
    x0 = jnp.asarray(x0)
    if x0.ndim < 2:
        raise ValueError(f"x0 must be a batch of shape (B, ...) with ndim >= 2, got shape {x0.shape}")
    return x0


def dsm_loss(key: PRNGKey, score_fn: Callable, sde, x0: Array, *, likelihood_weighting: bool = False,
             reduce: str = "mean") -> Array:
    r"""Continuous-time denoising score matching, averaged over the batch.

    ``t ~ U(eps, T)``, ``x_t = m x_0 + s z``; the per-sample loss is
    ``||s score(x_t, t) + z||^2`` (``lambda(t) = s^2``) or, with ``likelihood_weighting``,
    ``g(t)^2 ||score(x_t, t) + z / s||^2``, which makes the loss an upper bound on the negative
    log-likelihood. ``reduce`` ("mean" or "sum") combines the data dimensions.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbayes.sde import VPSDE, gaussian_score
      >>> sde = VPSDE()
      >>> score = gaussian_score(sde, jnp.zeros(2), jnp.eye(2))
      >>> x0 = jax.random.normal(jax.random.key(1), (4096, 2))
      >>> loss = dsm_loss(jax.random.key(0), score, sde, x0)
      >>> bool(loss < 1.0)  # the exact score gives the minimal loss (< 1, the zero-score loss)
      True
    """
    check_choice("reduce", reduce, ("mean", "sum"))
    x0 = _batch(x0)
    b = x0.shape[0]
    kt, kz = jax.random.split(key)
    t = jax.random.uniform(kt, (b,), x0.dtype, sde.eps, sde.T)
    z = jax.random.normal(kz, x0.shape, x0.dtype)

    def one(x, zi, ti):
        xt = sde.mean_coeff(ti) * x + sde.std(ti) * zi
        score = score_fn(xt, ti)
        if score.shape != x.shape:
            raise ValueError(f"score_fn(x, t) must return an array of the shape of x {x.shape}, got {score.shape}")
        if likelihood_weighting:
            return sde.diffusion(ti) ** 2 * _reduce((score + zi / sde.std(ti)) ** 2, reduce)
        return _reduce((sde.std(ti) * score + zi) ** 2, reduce)

    return jnp.mean(jax.vmap(one)(x0, z, t))


def smld_loss(key: PRNGKey, score_fn: Callable, sde: VESDE, x0: Array, *, reduce: str = "mean") -> Array:
    """SMLD/NCSN loss on the ``sde.N`` discrete noise levels ``sigma_i = sde.std(t_i)``, ``t_i = i T / (N - 1)``.

    Per sample ``||sigma_i score(x_0 + sigma_i z, t_i) + z||^2`` (Song & Ermon 2019, weight ``sigma^2``).
    """
    if not isinstance(sde, VESDE):
        raise TypeError(f"smld_loss needs a VESDE, got {type(sde).__name__}")
    check_choice("reduce", reduce, ("mean", "sum"))
    x0 = _batch(x0)
    ki, kz = jax.random.split(key)
    idx = jax.random.randint(ki, (x0.shape[0],), 0, sde.N)
    t = idx.astype(x0.dtype) * sde.T / max(sde.N - 1, 1)
    z = jax.random.normal(kz, x0.shape, x0.dtype)

    def one(x, zi, ti):
        sigma = sde.std(ti)
        return _reduce((sigma * score_fn(x + sigma * zi, ti) + zi) ** 2, reduce)

    return jnp.mean(jax.vmap(one)(x0, z, t))


def ddpm_loss(key: PRNGKey, score_fn: Callable, sde: VPSDE, x0: Array, *, reduce: str = "mean") -> Array:
    """DDPM's noise-prediction loss on ``sde.N`` discrete times ``t_i = eps + i (T - eps) / (N - 1)``.

    With ``eps_pred = -s score``, per sample ``||eps_pred(x_t, t_i) - z||^2`` (Ho et al. 2020, L_simple).
    """
    if not isinstance(sde, VPSDE):
        raise TypeError(f"ddpm_loss needs a VPSDE, got {type(sde).__name__}")
    check_choice("reduce", reduce, ("mean", "sum"))
    x0 = _batch(x0)
    ki, kz = jax.random.split(key)
    idx = jax.random.randint(ki, (x0.shape[0],), 0, sde.N)
    t = sde.eps + idx.astype(x0.dtype) * (sde.T - sde.eps) / max(sde.N - 1, 1)
    z = jax.random.normal(kz, x0.shape, x0.dtype)

    def one(x, zi, ti):
        s = sde.std(ti)
        return _reduce((-s * score_fn(sde.mean_coeff(ti) * x + s * zi, ti) - zi) ** 2, reduce)

    return jnp.mean(jax.vmap(one)(x0, z, t))


def edm_loss(key: PRNGKey, denoise_fn: Callable, x0: Array, *, p_mean: ArrayLike = -1.2,
             p_std: ArrayLike = 1.2, sigma_data: ArrayLike = 0.5, reduce: str = "mean") -> Array:
    """EDM's loss: ``log sigma ~ N(p_mean, p_std^2)``, ``lambda(sigma) ||D(x_0 + sigma z, sigma) - x_0||^2``.

    ``lambda = (sigma^2 + sd^2) / (sigma sd)^2`` (Karras et al. 2022, Table 1).
    """
    check_choice("reduce", reduce, ("mean", "sum"))
    x0 = _batch(x0)
    ks, kz = jax.random.split(key)
    sigma = jnp.exp(p_mean + p_std * jax.random.normal(ks, (x0.shape[0],), x0.dtype))
    z = jax.random.normal(kz, x0.shape, x0.dtype)

    def one(x, zi, si):
        return edm_precond(si, sigma_data).weight * _reduce((denoise_fn(x + si * zi, si) - x) ** 2, reduce)

    return jnp.mean(jax.vmap(one)(x0, z, sigma))


class TrainState(NamedTuple):
    """Training state: ``params``, optax ``opt_state``, ``ema_params`` and the ``step`` count."""

    params: PyTree
    opt_state: Any
    ema_params: PyTree
    step: Array


class TrainInfo(NamedTuple):
    """Per-step diagnostics: the ``loss`` and the global gradient norm ``grad_norm``."""

    loss: Array
    grad_norm: Array


class Trainer(NamedTuple):
    """``state = trainer.init(params)``; ``state, info = trainer.step(key, state, batch)``."""

    init: Callable[[PyTree], TrainState]
    step: Callable[[PRNGKey, TrainState, Array], tuple[TrainState, TrainInfo]]


def score_trainer(loss_fn: Callable[[PyTree, PRNGKey, Array], Array], optimizer: optax.GradientTransformation,
                  *, ema_decay: ArrayLike = 0.999) -> Trainer:
    """An optax train step for a loss ``loss_fn(params, key, batch)`` with an exponential moving average.

    ``ema <- decay ema + (1 - decay) params`` after each update. Jit ``trainer.step`` yourself; with a batch
    sharded over a mesh XLA computes the data-parallel gradient.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from jaxbayes.sde import VPSDE
      >>> sde = VPSDE()
      >>> loss = lambda p, k, b: dsm_loss(k, lambda x, t: -p * x, sde, b)
      >>> trainer = score_trainer(loss, optax.adam(0.1), ema_decay=0.5)
      >>> state = trainer.init(jnp.array(0.0))
      >>> step = jax.jit(trainer.step)
      >>> for i in range(20):
      ...     state, info = step(jax.random.key(i), state, jnp.zeros((64, 1)))
      >>> int(state.step), bool(state.params > 0.5)
      (20, True)
    """
    if isinstance(ema_decay, int | float) and not 0 <= ema_decay < 1:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")

    def init(params):
        return TrainState(params, optimizer.init(params), params, jnp.zeros((), jnp.int32))

    def step(key, state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(state.params, key, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, state.ema_params, params)
        info = TrainInfo(loss, jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads))))
        return TrainState(params, opt_state, ema, state.step + 1), info

    return Trainer(init, step)


__all__ = ["TrainInfo", "TrainState", "Trainer", "ddpm_loss", "dsm_loss", "edm_loss", "score_trainer",
           "smld_loss"]
