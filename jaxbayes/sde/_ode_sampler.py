"""Sampling by integrating the probability-flow ODE (Song et al. 2021, section 4.3)."""

from __future__ import annotations

from jaxbayes._checks import check_choice
from jaxbayes._deprecation import renamed_arguments
from jaxbayes.sde._ode import SOLVERS, integrate
from jaxbayes.sde._sampling import SamplerOutput, finish, prepare
from jaxbayes.typing import SDE, Array, DTypeLike, PRNGKey, ScoreFn, Shape


@renamed_arguments(max_steps="max_iterations")
def ode_sampler(key: PRNGKey, score_fn: ScoreFn, sde: SDE, shape: Shape, *, solver: str = "rk4",
                num_steps: int = 100, rtol: float = 1e-5, atol: float = 1e-5, max_iterations: int = 4096,
                denoise: bool = False, x_init: Array | None = None, dtype: DTypeLike | None = None) -> SamplerOutput:
    r"""Sample by integrating the probability-flow ODE ``dx/dt = f(x, t) - g(t)^2 score(x, t) / 2`` from T to eps.

    The ODE has the same marginals as the SDE, is deterministic given ``x_T`` and is what the exact
    likelihood uses (Song et al. 2021, section 4.3).

    Args:
      solver: ``"euler"``, ``"heun"``, ``"rk4"`` (``num_steps`` uniform steps) or ``"tsit5"``, ``"dopri5"``
        (diffrax, adaptive with ``PIDController(rtol, atol)``, at most ``max_iterations`` steps).
      denoise: end with Tweedie's denoising step. Other arguments as :func:`jaxbayes.sde.pc_sampler`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbayes.sde import VESDE, gaussian_score
      >>> sde = VESDE(sigma_max=10.0)
      >>> out = ode_sampler(jax.random.key(0), gaussian_score(sde, jnp.zeros(1), jnp.eye(1)), sde, (1,),
      ...                   solver="heun", num_steps=8)
      >>> int(out.nfe)
      16
    """
    check_choice("solver", solver, SOLVERS)
    x, _, _, num_steps = prepare(key, score_fn, sde, shape, x_init, dtype, num_steps)

    def vf(y, t):
        return sde.reverse_drift(score_fn, y, t, ode=True)

    x, nfe, ok = integrate(vf, x, sde.T, sde.eps, solver=solver, num_steps=num_steps, rtol=rtol, atol=atol,
                           max_iterations=max_iterations)
    return finish(score_fn, sde, x, sde.eps, nfe, denoise, ok)


__all__ = ["ode_sampler"]
