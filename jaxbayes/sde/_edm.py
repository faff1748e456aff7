"""EDM: the sigma parameterisation, Karras noise levels, preconditioning and the Heun/Euler sampler.

EDM works with ``x = x_0 + sigma z`` and a denoiser ``D(x, sigma) ~ E[x_0 | x]``; the probability-flow ODE
is ``dx / dsigma = (x - D(x, sigma)) / sigma``. Any VE/VP/sub-VP score model becomes such a denoiser with
:func:`jaxbayes.sde.denoiser_from_score`.

Reference: Karras, Aittala, Aila, Laine, "Elucidating the Design Space of Diffusion-Based Generative
Models", NeurIPS 2022 (Algorithm 2 and Table 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_choice, check_int_range, check_positive
from jaxbayes.sde._sampling import SamplerOutput, is_concrete_zero, scan_with_noise, split_key, start_at_sigma
from jaxbayes.typing import Array, ArrayLike, DenoiseFn, PRNGKey, Shape


def karras_sigmas(num_steps: int, *, sigma_min: ArrayLike = 0.002, sigma_max: ArrayLike = 80.0,
                  rho: ArrayLike = 7.0, dtype=None) -> Array:
    r"""Karras noise levels ``sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho``, then 0.

    Returns ``num_steps + 1`` decreasing values ending with ``0``.

    Example:
      >>> karras_sigmas(3, sigma_min=1.0, sigma_max=4.0, rho=1.0).tolist()
      [4.0, 2.5, 1.0, 0.0]
    """
    num_steps = check_int_range("num_steps", num_steps, 1)
    check_positive("sigma_min", sigma_min)
    check_positive("sigma_max", sigma_max)
    check_positive("rho", rho)
    dtype = jnp.result_type(float) if dtype is None else dtype
    frac = jnp.arange(num_steps, dtype=dtype) / max(num_steps - 1, 1)
    lo, hi = jnp.asarray(sigma_min, dtype) ** (1 / rho), jnp.asarray(sigma_max, dtype) ** (1 / rho)
    sigmas = (hi + frac * (lo - hi)) ** rho
    return jnp.concatenate([sigmas, jnp.zeros(1, dtype)])


class Precond(NamedTuple):
    """EDM preconditioning ``D = c_skip x + c_out F(c_in x, c_noise)`` and the loss weight ``1 / c_out^2``."""

    c_skip: Array
    c_out: Array
    c_in: Array
    c_noise: Array
    weight: Array


def edm_precond(sigma: ArrayLike, sigma_data: ArrayLike = 0.5) -> Precond:
    """Karras et al. Table 1: ``c_skip = sd^2 / (sigma^2 + sd^2)``, ``c_out = sigma sd / sqrt(sigma^2 + sd^2)``,
    ``c_in = 1 / sqrt(sigma^2 + sd^2)``, ``c_noise = log(sigma) / 4``, ``weight = 1 / c_out^2``.

    Example:
      >>> round(float(edm_precond(0.5).c_skip), 3)
      0.5
    """
    sigma = jnp.asarray(sigma, float)
    total = sigma**2 + sigma_data**2
    c_out = sigma * sigma_data / jnp.sqrt(total)
    return Precond(sigma_data**2 / total, c_out, 1 / jnp.sqrt(total), jnp.log(sigma) / 4, 1 / c_out**2)


def edm_denoiser(model_fn: Callable[[Array, Array], Array], *, sigma_data: ArrayLike = 0.5) -> DenoiseFn:
    """Wrap a raw network ``F(x_in, c_noise)`` into the preconditioned denoiser ``D(x, sigma)``."""

    def denoise_fn(x, sigma):
        c = edm_precond(sigma, sigma_data)
        return c.c_skip * x + c.c_out * model_fn(c.c_in * x, c.c_noise)

    return denoise_fn


def edm_sampler(key: PRNGKey, denoise_fn: DenoiseFn, shape: Shape, *,
                num_steps: int = 18, solver: str = "heun", sigma_min: ArrayLike = 0.002,
                sigma_max: ArrayLike = 80.0, rho: ArrayLike = 7.0, s_churn: ArrayLike = 0.0,
                s_tmin: ArrayLike = 0.0, s_tmax: ArrayLike = math.inf, s_noise: ArrayLike = 1.0,
                x_init: Array | None = None, dtype=None) -> SamplerOutput:
    r"""EDM's stochastic sampler (Karras et al. 2022, Algorithm 2) with Heun or Euler steps.

    On the Karras levels ``sigma_0 > ... > sigma_{N-1} > sigma_N = 0``: churn
    ``sigma_hat = sigma_i (1 + gamma_i)``, ``gamma_i = min(s_churn / N, sqrt(2) - 1)`` inside
    ``[s_tmin, s_tmax]``, adding noise of std ``s_noise sqrt(sigma_hat^2 - sigma_i^2)``; an Euler step of
    ``dx/dsigma = (x - D) / sigma``; with ``solver="heun"`` a trapezoidal correction, except on the last step
    to ``sigma = 0`` (so the state never divides by zero). ``s_churn = 0`` gives the deterministic sampler.

    Args:
      key: one PRNG key (one sample).
      denoise_fn: ``D(x, sigma)`` for one point.
      shape: shape of one sample. num_steps: number of noise levels ``N``.
      solver: ``"heun"`` (``nfe = 2 N - 1``) or ``"euler"`` (``nfe = N``).
      x_init: starting point (default ``sigma_max * z``); use a PFGM++ prior draw for PFGM++ models.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> point = lambda x, sigma: jnp.full_like(x, 2.0)  # denoiser of data at a single point
      >>> edm_sampler(jax.random.key(0), point, (3,), num_steps=1, solver="euler").samples.tolist()
      [2.0, 2.0, 2.0]
    """
    check_choice("solver", solver, ("heun", "euler"))
    num_steps = check_int_range("num_steps", num_steps, 1)
    check_positive("s_churn", s_churn, strict=False)
    dtype = jnp.result_type(float) if dtype is None else dtype
    sigmas = karras_sigmas(num_steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, dtype=dtype)
    k_init, key = split_key(key, x_init)
    x = start_at_sigma(k_init, sigmas[0], shape, x_init, denoise_fn, "denoise_fn(x, sigma)")
    gamma_max = jnp.minimum(s_churn / num_steps, math.sqrt(2) - 1)
    # A concrete s_churn = 0 is the deterministic sampler: no noise is drawn at all.
    stochastic = not is_concrete_zero(s_churn)

    def churn(x, i, z):
        if not stochastic:
            return x, sigmas[i]
        sigma = sigmas[i]
        gamma = jnp.where((sigma >= s_tmin) & (sigma <= s_tmax), gamma_max, 0.0)
        sigma_hat = sigma * (1 + gamma)
        return x + jnp.sqrt(jnp.maximum(sigma_hat**2 - sigma**2, 0.0)) * s_noise * z[0], sigma_hat

    def heun_step(x, i, z):
        x_hat, sigma_hat = churn(x, i, z)
        d = (x_hat - denoise_fn(x_hat, sigma_hat)) / sigma_hat
        sigma_next = sigmas[i + 1]
        x_next = x_hat + (sigma_next - sigma_hat) * d
        if solver == "heun":
            d2 = (x_next - denoise_fn(x_next, sigma_next)) / sigma_next
            x_next = x_hat + (sigma_next - sigma_hat) * 0.5 * (d + d2)
        return x_next

    # Every step but the last has sigma_next > 0; the last one (to sigma = 0) is an Euler step.
    draws = int(stochastic)
    x = scan_with_noise(heun_step, x, key, num_steps - 1, draws, x) if num_steps > 1 else x
    z_last = jax.random.normal(jax.random.fold_in(key, num_steps), (1, *x.shape), x.dtype) if draws else None
    x_hat, sigma_hat = churn(x, num_steps - 1, z_last)
    x = denoise_fn(x_hat, sigma_hat)  # Euler to sigma = 0: x_hat + (0 - sigma_hat) (x_hat - D) / sigma_hat
    nfe = num_steps if solver == "euler" else 2 * num_steps - 1
    return SamplerOutput(x, jnp.asarray(nfe, jnp.int32), jnp.asarray(True))
