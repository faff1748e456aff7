"""Exact log-likelihood through the probability-flow ODE, and encode / decode between data and latents.

With ``v(x, t) = f(x, t) - g(t)^2 score(x, t) / 2`` the instantaneous change of variables gives
``log p_eps(x) = log p_T(x_T) + int_eps^T div v(x_t, t) dt`` along the ODE path from ``x_eps = x``
(Song et al. 2021, section 4.3; Chen et al. 2018; Grathwohl et al. 2019). The divergence is exact
(``trace`` of the Jacobian) or Hutchinson's ``e^T (dv/dx) e`` with one probe ``e`` held fixed for the whole
solve, so the integrand is a smooth function of ``t`` and adaptive solvers stay efficient. Everything is one
jittable function of one data point: batch with ``jax.vmap`` or ``jaxbayes.parallel.data_parallel``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_choice, check_finite, check_int_range, check_positive
from jaxbayes._deprecation import renamed_arguments
from jaxbayes.sde._ode import SOLVERS, integrate
from jaxbayes.sde._ode_sampler import ode_sampler
from jaxbayes.sde._sampling import SamplerOutput
from jaxbayes.sde._sdes import check_score_fn
from jaxbayes.typing import Array, PRNGKey


class LikelihoodOutput(NamedTuple):
    """Log-likelihood of one data point.

    Attributes:
      logp: ``log p_eps(x)`` in nats.
      bpd: bits per dimension ``(-logp / n + log(num_levels / width)) / log 2`` (the offset is 0 when
        ``num_levels`` is ``None``).
      z: the latent ``x_T``.
      prior_logp: ``log p_T(z)`` under the prior.
      delta_logp: ``int div v dt`` (so ``logp = prior_logp + delta_logp``).
      nfe: number of ODE right-hand-side evaluations (each one score evaluation plus its JVP/Jacobian).
      converged: ``False`` if the adaptive solve ran out of ``max_iterations``.
    """

    logp: Array
    bpd: Array
    z: Array
    prior_logp: Array
    delta_logp: Array
    nfe: Array
    converged: Array


def bits_per_dim(logp: Array, num_dims: int, *, num_levels: int | None = None,
                 data_range: tuple[float, float] = (0.0, 1.0)) -> Array:
    """Bits per dimension of a continuous log-density, with the uniform-dequantisation offset.

    For data quantised to ``num_levels`` levels spread over ``data_range = (lo, hi)`` and dequantised with
    uniform noise, ``bpd = (-logp / n + log(num_levels / (hi - lo))) / log 2``: 8 for 8-bit data in
    ``[0, 1]``, 7 for ``[-1, 1]``.

    Example:
      >>> round(float(bits_per_dim(0.0, 10, num_levels=256)), 6)
      8.0
    """
    offset = 0.0
    if num_levels is not None:
        num_levels = check_int_range("num_levels", num_levels, 2)
        lo, hi = data_range
        if not hi > lo:
            raise ValueError(f"data_range must be (lo, hi) with hi > lo, got {data_range}")
        offset = math.log(num_levels / (hi - lo))
    return (-jnp.asarray(logp) / num_dims + offset) / math.log(2)


@renamed_arguments(max_steps="max_iterations")
def log_likelihood(key: PRNGKey | None, score_fn: Callable, sde, x: Array, *, trace: str = "hutchinson",
                   probe: str = "rademacher", solver: str = "tsit5", num_steps: int = 100, rtol: float = 1e-5,
                   atol: float = 1e-5, max_iterations: int = 4096, num_levels: int | None = None,
                   data_range: tuple[float, float] = (0.0, 1.0),
                   prior_logp_fn: Callable[[Array], Array] | None = None) -> LikelihoodOutput:
    r"""Log-density of one data point ``x`` under the probability-flow ODE of ``score_fn``.

    Args:
      key: PRNG key for the Hutchinson probe (unused, may be ``None``, with ``trace="exact"``).
      score_fn: ``score_fn(x, t)`` for one point. sde: the forward SDE.
      x: one data point (any shape).
      trace: ``"hutchinson"`` (``e^T J e`` with a JVP, cost of one extra forward pass) or ``"exact"``
        (the full Jacobian: ``n`` JVPs; fine for small ``n``).
      probe: ``"rademacher"`` (exact when the Jacobian is diagonal) or ``"gaussian"``.
      solver: ``"tsit5"``/``"dopri5"`` (adaptive, ``rtol``, ``atol``, ``max_iterations``) or ``"euler"``/
        ``"heun"``/``"rk4"`` with ``num_steps`` uniform steps.
      num_levels, data_range: dequantisation offset for ``bpd`` (e.g. ``256`` and ``(0, 1)`` for 8-bit data).
      prior_logp_fn: log-density of ``x_T`` (default ``sde.prior_logp``, which only approximates ``p_T``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbayes.sde import VPSDE, gaussian_score, gaussian_logpdf
      >>> sde = VPSDE()
      >>> mu, cov = jnp.zeros(2), jnp.diag(jnp.array([0.5, 2.0]))
      >>> out = log_likelihood(jax.random.key(0), gaussian_score(sde, mu, cov), sde, jnp.zeros(2))
      >>> exact = gaussian_logpdf(sde, mu, cov, jnp.zeros(2), sde.eps)
      >>> bool(abs(out.logp - exact) < 1e-3)
      True
    """
    check_choice("trace", trace, ("hutchinson", "exact"))
    check_choice("probe", probe, ("rademacher", "gaussian"))
    check_choice("solver", solver, SOLVERS)
    check_positive("rtol", rtol)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    check_finite("x", x)
    check_score_fn(score_fn, x, sde.eps)

    def v(y, t):
        return sde.reverse_drift(score_fn, y, t, ode=True)

    e = None
    if trace == "hutchinson":
        if key is None:
            raise ValueError("key is required for trace='hutchinson' (the probe is random)")
        if probe == "rademacher":
            e = jax.random.rademacher(key, x.shape, x.dtype)
        else:
            e = jax.random.normal(key, x.shape, x.dtype)

    def div(y, t):
        flat = lambda u: v(u.reshape(x.shape), t).ravel()
        return jnp.trace(jax.jacfwd(flat)(y.ravel()))

    def vf(state, t):
        y, _ = state
        if trace == "hutchinson":
            dy, jvp = jax.jvp(lambda u: v(u, t), (y,), (e,))
            return dy, jnp.sum(e * jvp)
        return v(y, t), div(y, t)

    (z, delta), nfe, ok = integrate(vf, (x, jnp.zeros((), x.dtype)), sde.eps, sde.T, solver=solver,
                                    num_steps=num_steps, rtol=rtol, atol=atol, max_iterations=max_iterations)
    prior = sde.prior_logp(z) if prior_logp_fn is None else prior_logp_fn(z)
    logp = prior + delta
    bpd = bits_per_dim(logp, x.size, num_levels=num_levels, data_range=data_range)
    return LikelihoodOutput(logp, bpd, z, prior, delta, nfe, ok)


@renamed_arguments(max_steps="max_iterations")
def encode(score_fn: Callable, sde, x: Array, *, solver: str = "tsit5", num_steps: int = 100,
           rtol: float = 1e-5, atol: float = 1e-5, max_iterations: int = 4096) -> SamplerOutput:
    """Map a data point to its latent ``x_T`` along the probability-flow ODE (eps -> T); ``samples`` is ``z``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbayes.sde import VPSDE, gaussian_score
      >>> sde = VPSDE()
      >>> score = gaussian_score(sde, jnp.zeros(2), jnp.eye(2))
      >>> encode(score, sde, jnp.ones(2), solver="rk4", num_steps=10).samples.round(3).tolist()
      [1.0, 1.0]
    """
    x = jnp.asarray(x)
    check_finite("x", x)
    check_score_fn(score_fn, x, sde.eps)
    check_int_range("num_steps", num_steps, 1)
    z, nfe, ok = integrate(lambda y, t: sde.reverse_drift(score_fn, y, t, ode=True), x, sde.eps, sde.T,
                           solver=solver, num_steps=num_steps, rtol=rtol, atol=atol, max_iterations=max_iterations)
    return SamplerOutput(z, nfe, ok)


@renamed_arguments(max_steps="max_iterations")
def decode(score_fn: Callable, sde, z: Array, *, solver: str = "tsit5", num_steps: int = 100,
           rtol: float = 1e-5, atol: float = 1e-5, max_iterations: int = 4096) -> SamplerOutput:
    """Map a latent ``z = x_T`` back to data (T -> eps); the inverse of :func:`encode`."""
    z = jnp.asarray(z)
    return ode_sampler(jax.random.key(0), score_fn, sde, z.shape, solver=solver, num_steps=num_steps, rtol=rtol,
                       atol=atol, max_iterations=max_iterations, x_init=z, dtype=z.dtype)
