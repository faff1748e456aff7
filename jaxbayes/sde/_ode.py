"""One ODE integrator for samplers and likelihoods: fixed-step Euler/Heun/RK4 in ``lax.scan``, or diffrax.

Fixed-step solvers are written out here (a ``lax.scan`` of a few lines has no per-step overhead); the
adaptive ones are diffrax's Tsit5 and Dopri5 with a PID step-size controller.
"""

from __future__ import annotations

from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp

from jaxbayes._checks import check_choice, check_int_range, check_positive
from jaxbayes.typing import Array, PyTree


def _axpy(a, x, y):
    return jax.tree.map(lambda xi, yi: yi + a * xi, x, y)


def euler_step(vf: Callable, y: PyTree, t: Array, dt: Array) -> PyTree:
    """One explicit Euler step (first order, one evaluation)."""
    return _axpy(dt, vf(y, t), y)


def heun_step(vf: Callable, y: PyTree, t: Array, dt: Array) -> PyTree:
    """One Heun (explicit trapezoidal) step (second order, two evaluations)."""
    k1 = vf(y, t)
    k2 = vf(_axpy(dt, k1, y), t + dt)
    return _axpy(dt / 2, jax.tree.map(jnp.add, k1, k2), y)


def rk4_step(vf: Callable, y: PyTree, t: Array, dt: Array) -> PyTree:
    """One classical Runge-Kutta step (fourth order, four evaluations)."""
    k1 = vf(y, t)
    k2 = vf(_axpy(dt / 2, k1, y), t + dt / 2)
    k3 = vf(_axpy(dt / 2, k2, y), t + dt / 2)
    k4 = vf(_axpy(dt, k3, y), t + dt)
    incr = jax.tree.map(lambda a, b, c, d: (a + 2 * b + 2 * c + d) / 6, k1, k2, k3, k4)
    return _axpy(dt, incr, y)


# Fixed-step solvers: name -> (step function, evaluations per step). A new one is a step function and a row.
FIXED = {"euler": (euler_step, 1), "heun": (heun_step, 2), "rk4": (rk4_step, 4)}
# Adaptive solvers: name -> diffrax solver class (seven-stage first-same-as-last tableaus).
ADAPTIVE = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5}
SOLVERS = (*FIXED, *ADAPTIVE)


def integrate(vf: Callable[[PyTree, Array], PyTree], y0: PyTree, t0: float, t1: float, *, solver: str,
              num_steps: int, rtol: float, atol: float, max_iterations: int) -> tuple[PyTree, Array, Array]:
    """Integrate ``dy/dt = vf(y, t)`` from ``t0`` to ``t1``; returns ``(y1, nfe, converged)``.

    Fixed-step solvers take ``num_steps`` uniform steps (``nfe = num_steps * stages``). Adaptive solvers
    start with ``dt0 = (t1 - t0) / num_steps`` and count ``nfe = 6 * steps_tried + 1`` (seven-stage
    first-same-as-last tableaus); ``converged`` is false if ``max_iterations`` ran out.
    """
    check_choice("solver", solver, SOLVERS)
    num_steps = check_int_range("num_steps", num_steps, 1)
    dtype = jax.tree.leaves(y0)[0].dtype
    if solver in FIXED:
        ts = jnp.linspace(t0, t1, num_steps + 1, dtype=dtype)

        step, evals = FIXED[solver]

        def body(y, i):
            return step(vf, y, ts[i], ts[i + 1] - ts[i]), None

        y1, _ = jax.lax.scan(body, y0, jnp.arange(num_steps))
        return y1, jnp.asarray(num_steps * evals, jnp.int32), jnp.asarray(True)
    check_positive("rtol", rtol)
    check_positive("atol", atol)
    max_iterations = check_int_range("max_iterations", max_iterations, 1)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: vf(y, t)), ADAPTIVE[solver](), t0=t0, t1=t1,
        dt0=(t1 - t0) / num_steps, y0=y0, stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_iterations, saveat=diffrax.SaveAt(t1=True), throw=False)
    y1 = jax.tree.map(lambda a: a[-1], sol.ys)
    nfe = 6 * jnp.asarray(sol.stats["num_steps"], jnp.int32) + 1
    return y1, nfe, sol.result == diffrax.RESULTS.successful


__all__ = ["ADAPTIVE", "FIXED", "SOLVERS", "euler_step", "heun_step", "integrate", "rk4_step"]
