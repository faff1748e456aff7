"""DPM-Solver++(2M) (Lu et al. 2022), the second-order multistep solver of the probability-flow ODE."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_choice, check_int_range
from jaxbayes.sde._sampling import SamplerOutput, default_dtype, finish, init_state, split_key, tweedie_denoise
from jaxbayes.sde._sdes import check_score_fn
from jaxbayes.typing import SDE, Array, DTypeLike, PRNGKey, ScoreFn, Shape


def logsnr_grid(sde: SDE, num_steps: int, dtype: DTypeLike | None = None) -> Array:
    """``num_steps + 1`` times from ``T`` to ``eps``, uniform in ``lambda = log(m / s)``.

    Example:
      >>> from jaxbayes.sde import VPSDE
      >>> ts = logsnr_grid(VPSDE(), 4)
      >>> ts.shape, float(ts[0]), round(float(ts[-1]), 6)
      ((5,), 1.0, 1e-05)
    """
    dtype = default_dtype(dtype)
    lam = lambda t: jnp.log(sde.mean_coeff(t) / sde.std(t))
    lams = jnp.linspace(lam(jnp.asarray(sde.T, dtype)), lam(jnp.asarray(sde.eps, dtype)), num_steps + 1)
    ts = sde.t_from_sigma(jnp.exp(-lams)).astype(dtype)
    return ts.at[0].set(sde.T).at[-1].set(sde.eps)


def dpm_solver_pp_2m(key: PRNGKey, score_fn: ScoreFn, sde: SDE, shape: Shape, *, num_steps: int = 20,
                     grid: str = "logsnr", denoise: bool = False, x_init: Array | None = None,
                     dtype: DTypeLike | None = None) -> SamplerOutput:
    r"""DPM-Solver++(2M), the second-order multistep solver of the probability-flow ODE in data prediction.

    With ``lambda = log(m / s)``, ``h_i = lambda_{i+1} - lambda_i`` and ``x0_i = (x_i + s_i^2 score) / m_i``:
    ``x_{i+1} = (s_{i+1}/s_i) x_i - m_{i+1} expm1(-h_i) D_i``, ``D_i = (1 + 1/(2 r)) x0_i - x0_{i-1}/(2 r)``,
    ``r = h_{i-1} / h_i`` (first order on the first step, and on the last when ``num_steps < 15``).
    Lu, Zhou, Bao, Chen, Li, Zhu, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
    Models" (2022), Algorithm 2.

    Args:
      grid: ``"logsnr"`` (uniform in ``lambda``, the paper's choice) or ``"time"`` (uniform in ``t``).
      denoise: end with Tweedie's step at ``eps``. ``nfe = num_steps + denoise``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbayes.sde import VPSDE, gaussian_score
      >>> sde = VPSDE()
      >>> out = dpm_solver_pp_2m(jax.random.key(0), gaussian_score(sde, jnp.zeros(2), jnp.eye(2)), sde, (2,),
      ...                        num_steps=10)
      >>> int(out.nfe)
      10
    """
    check_choice("grid", grid, ("logsnr", "time"))
    num_steps = check_int_range("num_steps", num_steps, 1)
    k_init, _ = split_key(key, x_init)
    x = init_state(k_init, sde, shape, x_init, dtype)
    check_score_fn(score_fn, x, sde.T)
    if grid == "logsnr":
        ts = logsnr_grid(sde, num_steps, x.dtype)
    else:
        ts = jnp.linspace(sde.T, sde.eps, num_steps + 1, dtype=x.dtype)
    m, s = sde.mean_coeff(ts), sde.std(ts)
    lam = jnp.log(m) - jnp.log(s)
    h = jnp.diff(lam)
    lower_final = num_steps < 15

    def body(carry, i):
        x, x0_prev, h_prev = carry
        x0 = tweedie_denoise(score_fn, sde, x, ts[i])
        r = h_prev / h[i]
        d2 = (1 + 0.5 / r) * x0 - (0.5 / r) * x0_prev
        first = (i == 0) | (lower_final & (i == num_steps - 1))
        d = jnp.where(first, x0, d2)
        x = (s[i + 1] / s[i]) * x - m[i + 1] * jnp.expm1(-h[i]) * d
        return (x, x0, h[i]), None

    (x, _, _), _ = jax.lax.scan(body, (x, x, h[0]), jnp.arange(num_steps))
    return finish(score_fn, sde, x, sde.eps, num_steps, denoise)


__all__ = ["dpm_solver_pp_2m", "logsnr_grid"]
