"""Denoising score-matching losses: continuous DSM, SMLD, DDPM and EDM.

Losses take a per-point ``score_fn(x, t)`` (vmapped inside) and a batch ``x0`` of shape ``(B, ...)``.

References: Vincent (2011) for denoising score matching; Song et al. (2021) eq. 7 for the continuous
loss; Song, Durkan, Murray, Ermon, "Maximum Likelihood Training of Score-Based Diffusion Models" (2021) for
the likelihood weighting ``lambda(t) = g(t)^2``; Song & Ermon (2019) SMLD; Ho et al. (2020) DDPM;
Karras et al. (2022) for the EDM loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_choice
from jaxbayes.parallel import shard_rows_like
from jaxbayes.sde._edm import edm_precond
from jaxbayes.sde._sdes import VESDE, VPSDE
from jaxbayes.typing import SDE, Array, ArrayLike, DenoiseFn, PRNGKey, ScoreFn

# How the squared error of one sample combines its data dimensions.
REDUCTIONS = {"mean": jnp.mean, "sum": jnp.sum}


def _reduce(sq: Array, reduce: str) -> Array:
    return REDUCTIONS[reduce](sq)


def _batch(x0):
    x0 = jnp.asarray(x0)
    if x0.ndim < 2:
        raise ValueError(f"x0 must be a batch of shape (B, ...) with ndim >= 2, got shape {x0.shape}")
    if x0.shape[0] == 0:
        raise ValueError("x0 is an empty batch (shape (0, ...)); a loss needs at least one example")
    return x0


def dsm_loss(key: PRNGKey, score_fn: ScoreFn, sde: SDE, x0: Array, *, likelihood_weighting: bool = False,
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
    check_choice("reduce", reduce, REDUCTIONS)
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

    return jnp.mean(jax.vmap(one)(*shard_rows_like((x0, z, t), x0)))


def smld_loss(key: PRNGKey, score_fn: ScoreFn, sde: VESDE, x0: Array, *, reduce: str = "mean") -> Array:
    """SMLD/NCSN loss on the ``sde.N`` discrete noise levels ``sigma_i = sde.std(t_i)``, ``t_i = i T / (N - 1)``.

    Per sample ``||sigma_i score(x_0 + sigma_i z, t_i) + z||^2`` (Song & Ermon 2019, weight ``sigma^2``).
    """
    if not isinstance(sde, VESDE):
        raise TypeError(f"smld_loss needs a VESDE, got {type(sde).__name__}")
    check_choice("reduce", reduce, REDUCTIONS)
    x0 = _batch(x0)
    ki, kz = jax.random.split(key)
    idx = jax.random.randint(ki, (x0.shape[0],), 0, sde.N)
    t = idx.astype(x0.dtype) * sde.T / max(sde.N - 1, 1)
    z = jax.random.normal(kz, x0.shape, x0.dtype)

    def one(x, zi, ti):
        sigma = sde.std(ti)
        return _reduce((sigma * score_fn(x + sigma * zi, ti) + zi) ** 2, reduce)

    return jnp.mean(jax.vmap(one)(*shard_rows_like((x0, z, t), x0)))


def ddpm_loss(key: PRNGKey, score_fn: ScoreFn, sde: VPSDE, x0: Array, *, reduce: str = "mean") -> Array:
    """DDPM's noise-prediction loss on ``sde.N`` discrete times ``t_i = eps + i (T - eps) / (N - 1)``.

    With ``eps_pred = -s score``, per sample ``||eps_pred(x_t, t_i) - z||^2`` (Ho et al. 2020, L_simple).
    """
    if not isinstance(sde, VPSDE):
        raise TypeError(f"ddpm_loss needs a VPSDE, got {type(sde).__name__}")
    check_choice("reduce", reduce, REDUCTIONS)
    x0 = _batch(x0)
    ki, kz = jax.random.split(key)
    idx = jax.random.randint(ki, (x0.shape[0],), 0, sde.N)
    t = sde.eps + idx.astype(x0.dtype) * (sde.T - sde.eps) / max(sde.N - 1, 1)
    z = jax.random.normal(kz, x0.shape, x0.dtype)

    def one(x, zi, ti):
        s = sde.std(ti)
        return _reduce((-s * score_fn(sde.mean_coeff(ti) * x + s * zi, ti) - zi) ** 2, reduce)

    return jnp.mean(jax.vmap(one)(*shard_rows_like((x0, z, t), x0)))


def edm_loss(key: PRNGKey, denoise_fn: DenoiseFn, x0: Array, *, p_mean: ArrayLike = -1.2,
             p_std: ArrayLike = 1.2, sigma_data: ArrayLike = 0.5, reduce: str = "mean") -> Array:
    """EDM's loss: ``log sigma ~ N(p_mean, p_std^2)``, ``lambda(sigma) ||D(x_0 + sigma z, sigma) - x_0||^2``.

    ``lambda = (sigma^2 + sd^2) / (sigma sd)^2`` (Karras et al. 2022, Table 1).
    """
    check_choice("reduce", reduce, REDUCTIONS)
    x0 = _batch(x0)
    ks, kz = jax.random.split(key)
    sigma = jnp.exp(p_mean + p_std * jax.random.normal(ks, (x0.shape[0],), x0.dtype))
    z = jax.random.normal(kz, x0.shape, x0.dtype)

    def one(x, zi, si):
        return edm_precond(si, sigma_data).weight * _reduce((denoise_fn(x + si * zi, si) - x) ** 2, reduce)

    return jnp.mean(jax.vmap(one)(*shard_rows_like((x0, z, sigma), x0)))


__all__ = ["ddpm_loss", "dsm_loss", "edm_loss", "smld_loss"]
