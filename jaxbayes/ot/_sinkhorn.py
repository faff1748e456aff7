r"""Log-domain Sinkhorn for balanced and unbalanced entropic OT, dense or matrix-free, with implicit gradients.

Problem (Cuturi 2013; unbalanced: Chizat et al. 2018; Séjourné et al. 2019). With reference measure
:math:`a \otimes b`, entropic regularisation :math:`\varepsilon` and KL marginal penalties
:math:`\rho_a, \rho_b` (per coordinate allowed):

.. math::
   \mathrm{OT}_\varepsilon = \min_{P \ge 0} \langle P, C\rangle + \varepsilon\,\mathrm{KL}(P \,\|\, a\otimes b)
   + \rho_a \mathrm{KL}(P\mathbf 1 \,\|\, a) + \rho_b \mathrm{KL}(P^\top\mathbf 1 \,\|\, b).

Optimal plans have the form :math:`P_{ij} = a_i b_j \exp((f_i + g_j - C_{ij})/\varepsilon)`. The
iterations are :math:`f \leftarrow -\tau_a \varepsilon\, \mathrm{LSE}_j(\log b_j + (g_j - C_{ij})/\varepsilon)`
and symmetrically for :math:`g`, with :math:`\tau = \rho / (\rho + \varepsilon) \in (0, 1]`
(:math:`\tau = 1`: the marginal is enforced exactly). Potentials stay finite for zero-weight points,
because weights enter through :math:`\log b` in the soft-min, not through the potentials.

Why hand-written rather than ``ott.solvers.linear.sinkhorn``: in ott-jax 0.6 on jax 0.10 the matrix-free
point-cloud mode fails, ``tau`` is one scalar per side (SP^2OT needs per-column relaxation), and explicitly
sharded meshes only work in fixed-iteration mode.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbayes._checks import check_int_range, check_positive
from jaxbayes._deprecation import renamed_arguments
from jaxbayes._implicit import LinearSolve, implicit_tol, root_solve
from jaxbayes.ot._geometry import Geometry
from jaxbayes.ot._problem import Problem, as_problem
from jaxbayes.ot._sinkhorn_loop import (
    SolverConfig,
    exp_neg_over_rho,
    kl_strength,
    log_weights,
    marginals,
    residual,
    solve,
)
from jaxbayes.parallel import shard_rows_like
from jaxbayes.typing import Array, ArrayLike
from jaxbayes.typing import Geometry as GeometryLike


class SinkhornOutput(NamedTuple):
    """Result of :func:`sinkhorn`.

    Attributes:
      f: source potential ``(n,)`` (differentiable by implicit differentiation of the fixed point).
      g: target potential ``(m,)``.
      cost: the entropic OT value (dual objective at the returned potentials; its gradient with respect to
        the geometry, weights and epsilon is the envelope-theorem gradient, no solve needed).
      primal_cost: the primal objective of the plan defined by ``(f, g)`` (equals ``cost`` at convergence).
      transport_cost: :math:`\\langle P, C\\rangle` without the entropy and marginal terms.
      error: final marginal error: sum over both sides of :math:`|P\\mathbf 1 - a e^{-f/\\rho_a}|_1`
        (for balanced sides simply :math:`|P\\mathbf 1 - a|_1`).
      errors: ``(max_iterations,)`` error before each iteration (``-1`` for iterations not run).
      converged: the loop stopped because the error fell below ``tol`` (at the final epsilon).
      n_iters: number of iterations run.
      epsilon: the absolute epsilon used.
      a, b: the weights; geom: the geometry; tau_a, tau_b: the relaxations (for :meth:`plan`, :meth:`apply`).
    """

    f: Array
    g: Array
    cost: Array
    primal_cost: Array
    transport_cost: Array
    error: Array
    errors: Array
    converged: Array
    n_iters: Array
    epsilon: Array
    a: Array
    b: Array
    geom: Geometry
    tau_a: Array
    tau_b: Array

    def plan(self) -> Array:
        """The dense ``(n, m)`` transport plan (O(n m) memory: use :meth:`apply` for large problems)."""
        return _dense_plan(self)

    def apply(self, v: ArrayLike, *, axis: int = 1) -> Array:
        """``P @ v`` (``axis=1``, ``v`` of shape ``(m,)``/``(m, k)``) or ``P.T @ v`` (``axis=0``), matrix-free."""
        return self.geom.plan_apply(self.f, self.g, log_weights(self.a), log_weights(self.b), self.epsilon,
                                    jnp.asarray(v, self.f.dtype), axis)

    def marginals(self) -> tuple[Array, Array]:
        """Row and column sums ``(P 1, P^T 1)`` of the plan."""
        return marginals(self.geom, self.f, self.g, self.a, self.b, self.epsilon)


def _dense_plan(out: SinkhornOutput) -> Array:
    c = out.geom.materialize().cost_matrix
    la, lb = log_weights(out.a), log_weights(out.b)
    return jnp.exp(la[:, None] + lb[None, :] + (out.f[:, None] + out.g[None, :] - c) / out.epsilon)


def _like_points(arrays, points):
    """Each per-point (1-D) array resharded like ``points``' rows; scalars unchanged."""
    return tuple(shard_rows_like(v, points) if jnp.ndim(v) == 1 else v for v in arrays)


def _phi(f: Array, w: Array, tau: Array, eps: Array) -> Array:
    """sum_i w_i * phi_i(f_i) with phi = f (balanced) or -rho (exp(-f/rho) - 1) (KL-relaxed)."""
    one = tau >= 1
    rho = kl_strength(jnp.where(one, 0.5, tau), eps)
    # f is masked inside the relaxed branch too: exp(-f / rho) overflows for a balanced side's potentials
    # (f / eps ~ cost / eps), and the discarded branch's inf times where's zero cotangent made grad NaN.
    relaxed = -rho * jnp.expm1(-jnp.where(one, 0.0, f) / rho)
    return jnp.sum(jnp.where(w > 0, w * jnp.where(one, f, relaxed), 0.0))


def _solve_pair(config: SolverConfig, theta, x0):
    f, g, errors, n_iters, converged = solve(config, theta, *x0)
    return (f, g), errors, n_iters, converged


def _null_space_projection(config: SolverConfig):
    """Remove the residual Jacobian's null space from the implicit system, so that no ridge is needed (a ridge
    biases every gradient by about ridge / eigenvalue): the coordinates of zero-weight points (their rows and
    columns of the Jacobian vanish; they get zero implicit gradient in their own potential) and, for balanced
    problems, the gauge direction ``(1, -1)`` over the positive-weight points (``f + c, g - c``)."""

    def project(theta, v):
        _, a, b, *_ = theta
        vf, vg = v
        pa, pb = a > 0, b > 0
        vf, vg = jnp.where(pa, vf, 0.0), jnp.where(pb, vg, 0.0)
        if not config.balanced:
            return vf, vg
        shift = (jnp.sum(vf) - jnp.sum(vg)) / (jnp.sum(pa) + jnp.sum(pb))
        return jnp.where(pa, vf - shift, 0.0), jnp.where(pb, vg + shift, 0.0)

    return project


# Implicit function theorem on the marginal residual (symmetric PSD Jacobian in (f, g)), CG, no unrolling.
_potentials = root_solve(_solve_pair, lambda config: (lambda th, x: residual(th, *x)),
                         lambda config: LinearSolve(config.cg_iterations, config.cg_ridge, config.cg_tol),
                         _null_space_projection)


@renamed_arguments(threshold="tol")
def sinkhorn(
    geom: GeometryLike | Problem | ArrayLike,
    a: ArrayLike | None = None,
    b: ArrayLike | None = None,
    *,
    epsilon: ArrayLike = 0.05,
    relative_epsilon: bool = True,
    tau_a: ArrayLike = 1.0,
    tau_b: ArrayLike = 1.0,
    tol: float = 1e-3,
    max_iterations: int = 2000,
    min_iterations: int = 0,
    fixed_iterations: bool = False,
    epsilon_scaling: float | None = None,
    init: tuple[ArrayLike, ArrayLike] | None = None,
    cg_iterations: int = 100,
    cg_ridge: float = 0.0,
    cg_tol: float | None = None,
    check: bool = False,
) -> SinkhornOutput:
    r"""Entropic optimal transport by log-domain Sinkhorn iterations.

    Balanced when ``tau_a == tau_b == 1`` (masses of ``a`` and ``b`` must then agree); otherwise each side
    (and each coordinate, with vector ``tau``) has a KL penalty of strength
    :math:`\rho = \varepsilon\tau/(1-\tau)`. Stops when the marginal error falls below ``tol``
    (checked every iteration at no extra cost), after ``max_iterations``, or runs exactly
    ``max_iterations`` with ``fixed_iterations=True`` (uniform work for batching).

    Differentiation: ``out.cost`` is differentiated by the envelope theorem (the potentials are optimal,
    so only the explicit dependence on costs, weights and epsilon matters); ``out.f``/``out.g`` (and so
    ``out.plan()``, ``out.apply``) by implicit differentiation of the fixed point with a conjugate-gradient
    solve of ``cg_iterations`` matrix-free products. The loop is never unrolled. In balanced mode the
    potentials are defined up to ``(f + c, g - c)``; their implicit derivative is the one orthogonal to that
    direction, so gauge-invariant quantities (plan, cost, ``f_i + g_j``) get exact gradients. Zero-weight
    points get zero implicit gradient in their own potential.

    Small epsilon: the number of iterations grows like ``1 / epsilon``, and a loop stopped by
    ``max_iterations`` returns potentials far from optimal (at ``epsilon=0.001`` on 3000 points, a transport
    cost of 2.52 against the exact 5.57) with only ``converged=False`` to say so. Check ``converged`` (or pass
    ``check=True``), and use ``epsilon_scaling`` (e.g. ``0.9``) when ``epsilon`` is below about ``0.01``
    (relative) or the loop hits ``max_iterations``: starting at the cost scale and decaying to ``epsilon``
    converges in far fewer iterations.

    Args:
      geom: a :class:`Geometry` (:func:`pointcloud`, :func:`costmatrix`), a dense ``(n, m)`` cost matrix,
        an ott-jax geometry, or a :class:`Problem` (then ``a``, ``b``, ``tau_a``, ``tau_b`` are its own).
      a: source weights ``(n,)``, non-negative (zeros allowed); default uniform ``1/n``.
      b: target weights ``(m,)``; default uniform ``1/m``.
      epsilon: entropic regularisation, ``> 0``: ``0``, negative or non-finite values raise ``ValueError``
        when ``epsilon`` is concrete (a Python float, also inside ``jit``); a traced ``epsilon <= 0`` (an
        argument of a jitted function) cannot raise, and makes every output NaN (``converged`` False). With
        ``relative_epsilon`` (default) it is multiplied by
        the cost scale, the unweighted mean of the cost matrix (:meth:`Geometry.cost_scale`).
      relative_epsilon: interpret ``epsilon`` relative to the cost scale. The scale then depends on the
        points and is differentiated too; use ``relative_epsilon=False`` for a fixed absolute epsilon (e.g.
        for the identity ``d cost / d x_i = 2 (a_i x_i - sum_j P_ij y_j)``).
      tau_a: source relaxation in ``(0, 1]``, scalar or ``(n,)``; ``1`` enforces the marginal.
      tau_b: target relaxation in ``(0, 1]``, scalar or ``(m,)``.
      tol: stop when the L1 marginal error is below this (absolute; weights sum to ~1).
      max_iterations: iteration cap (static).
      min_iterations: run at least this many iterations.
      fixed_iterations: run exactly ``max_iterations`` iterations (no early stop).
      epsilon_scaling: ``None``, or a decay in ``(0, 1)``: epsilon starts at the cost scale and is
        multiplied by this each iteration until it reaches ``epsilon`` (helps small epsilon converge).
      init: warm start ``(f, g)`` potentials (e.g. from a previous solve); default zeros.
      cg_iterations: conjugate-gradient iterations of the implicit backward pass (a cap: CG stops at
        ``cg_tol``).
      cg_ridge: ridge added to the implicit system. Default 0: the system's null space (the balanced gauge,
        zero-weight points) is projected out instead, and any ridge biases the gradients by about
        ``cg_ridge / eigenvalue``; set one only for a nearly singular system (tiny epsilon).
      cg_tol: relative residual tolerance of the CG solve; default ``tol`` (the forward solve's accuracy,
        so the gradient is as accurate as the answer), at most 1e-5, at least 10 machine epsilons. In float64
        with ``tol=1e-12`` the plan gradients match unrolled autodiff of a converged solve to ~1e-12.
      check: warn (:class:`SinkhornNotConverged`, a ``RuntimeWarning``) when the loop stops unconverged, with
        the error, ``tol`` and iterations. Works the same outside and inside ``jit``/``vmap`` (a
        ``jax.debug.callback``, so the warning is issued when the result is computed); under
        ``filterwarnings=error`` it surfaces as an exception from the callback. Off by default (no host
        round trip).

    Returns:
      A :class:`SinkhornOutput`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbayes import ot
      >>> x = jax.random.normal(jax.random.key(0), (64, 2))
      >>> out = ot.sinkhorn(ot.pointcloud(x, x + 1.0), epsilon=0.01)
      >>> bool(out.converged), round(float(out.transport_cost), 1)
      (True, 2.0)
    """
    prob = as_problem(geom, a, b, tau_a=tau_a, tau_b=tau_b)
    a, b, tau_a, tau_b = prob.a, prob.b, prob.tau_a, prob.tau_b
    n, m = prob.shape
    dtype = a.dtype
    check_positive("epsilon", epsilon)
    check_int_range("max_iterations", max_iterations, 1)
    check_int_range("min_iterations", min_iterations, 0, max_iterations)
    check_positive("tol", tol, strict=False)
    check_int_range("cg_iterations", cg_iterations, 1)
    check_positive("cg_ridge", cg_ridge, strict=False)
    if epsilon_scaling is not None and not 0.0 < float(epsilon_scaling) < 1.0:
        raise ValueError(f"epsilon_scaling must be None or in (0, 1), got {epsilon_scaling!r}")
    balanced = prob.balanced

    work = prob.geom.dense_or_self()
    scale = work.cost_scale()
    eps = jnp.asarray(epsilon, dtype) * (scale if relative_epsilon else 1.0)
    # a traced epsilon escapes check_positive: eps <= 0 then gives NaN outputs (documented), never a silent answer
    eps = jnp.where(jnp.asarray(epsilon) > 0, eps, jnp.nan)
    config = SolverConfig(float(tol), max_iterations, min_iterations, bool(fixed_iterations),
                          epsilon_scaling is not None, float(epsilon_scaling or 1.0), balanced, cg_iterations,
                          float(cg_ridge), implicit_tol(cg_tol, tol, dtype))
    if init is None:
        f0, g0 = jnp.zeros((n,), dtype), jnp.zeros((m,), dtype)
    else:
        f0, g0 = (jnp.asarray(v, dtype) for v in init)
        if f0.shape != (n,) or g0.shape != (m,):
            raise ValueError(f"init must be potentials of shapes ({n},) and ({m},), got {f0.shape} and "
                             f"{g0.shape}")
    if work.x is not None:
        # per-point arrays split like their points on Explicit meshes, so that the loop's carries keep the
        # types the sharded soft-mins give them (also under jax.set_mesh); a no-op otherwise
        a, f0, tau_a = _like_points((a, f0, tau_a), work.x)
        b, g0, tau_b = _like_points((b, g0, tau_b), work.y)
    theta = (work, a, b, eps, tau_a, tau_b, jnp.maximum(scale, eps))
    (f, g), errors, n_iters, converged = _potentials(config, theta, (f0, g0))

    # Envelope theorem: costs use stop-gradient potentials (their implicit gradient would be ~0 anyway).
    fs, gs = jax.lax.stop_gradient(f), jax.lax.stop_gradient(g)
    rows, row_cost = work.plan_cost_rows(fs, gs, log_weights(a), log_weights(b), eps)
    mass_ab = jnp.sum(a) * jnp.sum(b)
    dual = _phi(fs, a, tau_a, eps) + _phi(gs, b, tau_b, eps) - eps * (jnp.sum(rows) - mass_ab)
    cols = b * jnp.exp(gs / eps + work.lse(log_weights(a) + fs / eps, eps, axis=0))
    transport = jnp.sum(row_cost)
    primal = (jnp.sum(rows * fs) + jnp.sum(cols * gs) - eps * (jnp.sum(rows) - mass_ab)
              + _kl_term(rows, a, tau_a, eps) + _kl_term(cols, b, tau_b, eps))
    error = (jnp.sum(jnp.abs(rows - a * exp_neg_over_rho(fs, tau_a, eps)))
             + jnp.sum(jnp.abs(cols - b * exp_neg_over_rho(gs, tau_b, eps))))
    if check:
        jax.debug.callback(_warn_unconverged, converged, error, n_iters, float(tol), max_iterations)
    return SinkhornOutput(f, g, dual, primal, transport, error, errors, converged, n_iters, eps, a, b,
                          work, tau_a, tau_b)


class SinkhornNotConverged(RuntimeWarning):
    """Issued by :func:`sinkhorn` with ``check=True`` when the loop stops before the error reaches ``tol``."""


def _warn_unconverged(converged, error, n_iters, tol, max_iterations):
    converged, error, n_iters = np.asarray(converged), np.asarray(error), np.asarray(n_iters)
    if np.all(converged):
        return
    bad = ~converged
    batch = f" ({int(np.sum(bad))} of {converged.size} problems)" if converged.size > 1 else ""
    warnings.warn(f"sinkhorn did not converge in {int(np.max(n_iters[bad]))} of {max_iterations} iterations{batch}: "
                  "marginal error "
                  f"{float(np.max(error[bad])):.3g} > tol {tol:.3g}; the potentials, plan and costs are not "
                  "optimal. Raise max_iterations or use epsilon_scaling (small epsilon)",
                  SinkhornNotConverged, stacklevel=2)


def _kl_term(marg, w, tau, eps):
    """sum over relaxed coordinates of rho_i * (m log(m/w) - m + w) (generalised KL)."""
    one = tau >= 1
    rho = kl_strength(jnp.where(one, 0.5, tau), eps)
    pos = (marg > 0) & (w > 0)
    kl = jnp.where(pos, marg * jnp.log(jnp.where(pos, marg, 1.0) / jnp.where(pos, w, 1.0)), 0.0) - marg + w
    return jnp.sum(jnp.where(one, 0.0, rho * kl))
