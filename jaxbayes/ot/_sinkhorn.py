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

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbayes._checks import (
    check_finite,
    check_int_range,
    check_positive,
    concrete_value,
)
from jaxbayes.ot._geometry import Geometry, as_geometry
from jaxbayes.typing import Array, ArrayLike


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
      converged: the loop stopped because the error fell below ``threshold`` (at the final epsilon).
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
        return self.geom.plan_apply(self.f, self.g, _log(self.a), _log(self.b), self.epsilon,
                                    jnp.asarray(v, self.f.dtype), axis)

    def marginals(self) -> tuple[Array, Array]:
        """Row and column sums ``(P 1, P^T 1)`` of the plan."""
        return _marginals(self.geom, self.f, self.g, self.a, self.b, self.epsilon)


def _dense_plan(out: SinkhornOutput) -> Array:
    c = out.geom.materialize().cost_matrix
    la, lb = _log(out.a), _log(out.b)
    return jnp.exp(la[:, None] + lb[None, :] + (out.f[:, None] + out.g[None, :] - c) / out.epsilon)


def _log(w: Array) -> Array:
    """log of non-negative weights with log(0) = -inf without NaN gradients."""
    pos = w > 0
    return jnp.where(pos, jnp.log(jnp.where(pos, w, 1.0)), -jnp.inf)


def _rho(tau: Array, eps: Array) -> Array:
    """KL strength rho = eps tau / (1 - tau); +inf where tau == 1 (balanced)."""
    one = tau >= 1
    return jnp.where(one, jnp.inf, eps * tau / jnp.where(one, 0.5, 1.0 - tau))


def _exp_neg_over_rho(f: Array, tau: Array, eps: Array) -> Array:
    """exp(-f / rho), equal to 1 where tau == 1, gradient-safe."""
    one = tau >= 1
    rho = _rho(jnp.where(one, 0.5, tau), eps)
    return jnp.where(one, 1.0, jnp.exp(-f / rho))


def _phi(f: Array, w: Array, tau: Array, eps: Array) -> Array:
    """sum_i w_i * phi_i(f_i) with phi = f (balanced) or -rho (exp(-f/rho) - 1) (KL-relaxed)."""
    one = tau >= 1
    rho = _rho(jnp.where(one, 0.5, tau), eps)
    relaxed = -rho * jnp.expm1(-f / rho)
    return jnp.sum(jnp.where(w > 0, w * jnp.where(one, f, relaxed), 0.0))


def _row_error(f: Array, lse_rows: Array, a: Array, tau_a: Array, eps: Array) -> Array:
    """L1 error of the row marginal of ``(f, g)`` from the row soft-min ``lse_rows`` of ``g`` (the one the
    f-update needs anyway)."""
    return jnp.sum(a * jnp.abs(jnp.exp(f / eps + lse_rows) - _exp_neg_over_rho(f, tau_a, eps)))


def _keep_going(config: _Config, err: Array, it: Array, unfinished: Array | bool = False) -> Array:
    """The stopping rule shared by the solvers: ``max_iterations`` (all of them in fixed-iteration mode),
    else an error above ``threshold``, ``min_iterations`` not reached, or ``unfinished`` (epsilon scaling)."""
    if config.fixed_iterations:
        return it < config.max_iterations
    return (it < config.max_iterations) & ((err > config.threshold) | unfinished | (it < config.min_iterations))


def _marginals(geom, f, g, a, b, eps):
    r = a * jnp.exp(f / eps + geom.lse(_log(b) + g / eps, eps, axis=1))
    c = b * jnp.exp(g / eps + geom.lse(_log(a) + f / eps, eps, axis=0))
    return r, c


def _residual(theta, f, g):
    """Optimality residual (P1 - a e^{-f/rho_a}, P^T1 - b e^{-g/rho_b}); symmetric PSD Jacobian in (f, g)."""
    geom, a, b, eps, tau_a, tau_b, _ = theta
    r, c = _marginals(geom, f, g, a, b, eps)
    return (r - a * _exp_neg_over_rho(f, tau_a, eps), c - b * _exp_neg_over_rho(g, tau_b, eps))


class _Config(NamedTuple):
    threshold: float
    max_iterations: int
    min_iterations: int
    fixed_iterations: bool
    epsilon_scaling: bool
    epsilon_decay: float
    balanced: bool
    cg_iterations: int
    cg_ridge: float


def _solve(config: _Config, theta, f0, g0):
    geom, a, b, eps, tau_a, tau_b, eps_start = theta
    if geom.cost_matrix is not None and not config.epsilon_scaling:
        return _solve_absorbed(config, theta, f0, g0)
    log_a, log_b = _log(a), _log(b)
    dtype = f0.dtype
    n_max = config.max_iterations

    def eps_at(it):
        if not config.epsilon_scaling:
            return eps
        return jnp.maximum(eps, eps_start * config.epsilon_decay ** it.astype(dtype))

    def cond(state):
        _, _, err, it, _ = state
        return _keep_going(config, err, it, eps_at(it) > eps)

    def body(state):
        f, g, _, it, errors = state
        e = eps_at(it)
        lse_rows = geom.lse(log_b + g / e, e, axis=1)
        # marginal error of the current (f, g) from the soft-min we need anyway (b-side is exact here).
        err = _row_error(f, lse_rows, a, tau_a, e)
        f = -tau_a * e * lse_rows
        g = -tau_b * e * geom.lse(log_a + f / e, e, axis=0)
        errors = errors.at[it].set(err)
        return f, g, err, it + 1, errors

    # the b-side error of (f0, g0) is not known before the first g update: start with inf.
    init = (f0, g0, jnp.asarray(jnp.inf, dtype), jnp.asarray(0, jnp.int32), -jnp.ones((n_max,), dtype))
    f, g, err, it, errors = jax.lax.while_loop(cond, body, init)
    converged = (err <= config.threshold) & (eps_at(it - 1) <= eps)
    return f, g, errors, it, converged


def _solve_absorbed(config: _Config, theta, f0, g0):
    """Dense Sinkhorn with absorbed potentials (Schmitzer 2019, "Stabilized sparse scaling algorithms"): the
    same iterates as the log-domain loop, but between absorptions each iteration is two products with the
    stored kernel ``K_ij = exp((fbar_i + gbar_j - C_ij) / eps)`` instead of two log-sum-exps over the cost
    matrix (no exponentials of the whole matrix, one pass instead of two per side: about 3x less work).

    Each outer step runs one exact log-domain iteration, absorbs its potentials into ``K`` and then iterates
    in the scaling domain while the scalings ``(f - fbar) / eps``, ``(g - gbar) / eps`` stay below a quarter
    of the dtype's exponent range (no overflow, no lost mass to underflow); a step whose products underflow
    or overflow is rejected and the next outer step re-absorbs. No ``lax.cond``, so ``vmap`` does no extra
    work.
    """
    geom, a, b, eps, tau_a, tau_b, _ = theta
    c = geom.cost_matrix
    log_a, log_b = _log(a), _log(b)
    dtype = f0.dtype
    n_max = config.max_iterations
    limit = -0.25 * float(np.log(np.finfo(dtype).tiny))  # |scaling| bound: 21.8 in float32, 177 in float64

    def outer(state):
        f, g, _, it, errors = state
        lse_rows = geom.lse(log_b + g / eps, eps, axis=1)
        err = _row_error(f, lse_rows, a, tau_a, eps)
        fbar = -tau_a * eps * lse_rows
        gbar = -tau_b * eps * geom.lse(log_a + fbar / eps, eps, axis=0)
        errors = errors.at[it].set(err)
        kernel = jnp.exp((fbar[:, None] + gbar[None, :] - c) / eps)

        def inner_cond(st):
            _, _, err, it, _, ok = st
            return ok & _keep_going(config, err, it)

        def inner(st):
            f, g, err, it, errors, _ = st
            r = kernel @ (b * jnp.exp((g - gbar) / eps))
            lse_rows = jnp.log(r) - fbar / eps
            new_err = _row_error(f, lse_rows, a, tau_a, eps)
            new_f = -tau_a * eps * lse_rows
            col = (a * jnp.exp((new_f - fbar) / eps)) @ kernel
            new_g = -tau_b * eps * (jnp.log(col) - gbar / eps)
            accept = jnp.all(jnp.isfinite(new_f)) & jnp.all(jnp.isfinite(new_g)) & jnp.isfinite(new_err)
            within = ((jnp.max(jnp.abs(new_f - fbar)) <= limit * eps)
                      & (jnp.max(jnp.abs(new_g - gbar)) <= limit * eps))
            keep = lambda new, old: jnp.where(accept, new, old)
            errors = errors.at[it].set(keep(new_err, errors[it]))
            return (keep(new_f, f), keep(new_g, g), keep(new_err, err), it + accept.astype(it.dtype), errors,
                    accept & within)

        init = (fbar, gbar, err, it + 1, errors, jnp.asarray(True))
        f, g, err, it, errors, _ = jax.lax.while_loop(inner_cond, inner, init)
        return f, g, err, it, errors

    init = (f0, g0, jnp.asarray(jnp.inf, dtype), jnp.asarray(0, jnp.int32), -jnp.ones((n_max,), dtype))
    f, g, err, it, errors = jax.lax.while_loop(lambda st: _keep_going(config, st[2], st[3]), outer, init)
    return f, g, errors, it, err <= config.threshold


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _potentials(config, theta, f0, g0):
    return _solve(config, jax.lax.stop_gradient(theta), f0, g0)


def _potentials_fwd(config, theta, f0, g0):
    out = _solve(config, jax.lax.stop_gradient(theta), f0, g0)
    return out, (theta, out[0], out[1])


def _potentials_bwd(config, res, cotangents):
    """Implicit function theorem: d(f,g)/d theta = -H^{-1} dR/dtheta with H the (symmetric PSD) Jacobian
    of the residual in (f, g); solved by conjugate gradients with matrix-free products (no unrolling)."""
    theta, f, g = res
    vf, vg = cotangents[0], cotangents[1]
    if config.balanced:
        # H is singular along (1, -1) (the gauge f + c, g - c); project it out of the right-hand side.
        shift = (jnp.sum(vf) - jnp.sum(vg)) / (vf.shape[0] + vg.shape[0])
        vf, vg = vf - shift, vg + shift

    def hvp(u):
        _, tangent = jax.jvp(lambda ff, gg: _residual(theta, ff, gg), (f, g), u)
        return (tangent[0] + config.cg_ridge * u[0], tangent[1] + config.cg_ridge * u[1])

    lam, _ = jax.scipy.sparse.linalg.cg(hvp, (vf, vg), maxiter=config.cg_iterations)
    if config.balanced:
        shift = (jnp.sum(lam[0]) - jnp.sum(lam[1])) / (vf.shape[0] + vg.shape[0])
        lam = (lam[0] - shift, lam[1] + shift)
    _, vjp_theta = jax.vjp(lambda th: _residual(th, f, g), theta)
    (grad_theta,) = vjp_theta((-lam[0], -lam[1]))
    return grad_theta, jnp.zeros_like(f), jnp.zeros_like(g)


_potentials.defvjp(_potentials_fwd, _potentials_bwd)


def sinkhorn(
    geom: Any,
    a: ArrayLike | None = None,
    b: ArrayLike | None = None,
    *,
    epsilon: ArrayLike = 0.05,
    relative_epsilon: bool = True,
    tau_a: ArrayLike = 1.0,
    tau_b: ArrayLike = 1.0,
    threshold: float = 1e-3,
    max_iterations: int = 2000,
    min_iterations: int = 0,
    fixed_iterations: bool = False,
    epsilon_scaling: float | None = None,
    init: tuple[ArrayLike, ArrayLike] | None = None,
    cg_iterations: int = 100,
    cg_ridge: float = 1e-6,
) -> SinkhornOutput:
    r"""Entropic optimal transport by log-domain Sinkhorn iterations.

    Balanced when ``tau_a == tau_b == 1`` (masses of ``a`` and ``b`` must then agree); otherwise each side
    (and each coordinate, with vector ``tau``) has a KL penalty of strength
    :math:`\rho = \varepsilon\tau/(1-\tau)`. Stops when the marginal error falls below ``threshold``
    (checked every iteration at no extra cost), after ``max_iterations``, or runs exactly
    ``max_iterations`` with ``fixed_iterations=True`` (uniform work for batching).

    Differentiation: ``out.cost`` is differentiated by the envelope theorem (the potentials are optimal,
    so only the explicit dependence on costs, weights and epsilon matters); ``out.f``/``out.g`` (and so
    ``out.plan()``, ``out.apply``) by implicit differentiation of the fixed point with a conjugate-gradient
    solve of ``cg_iterations`` matrix-free products. The loop is never unrolled. In balanced mode the
    potentials are defined up to ``(f + c, g - c)``; their implicit derivative is the one orthogonal to that
    direction, so gauge-invariant quantities (plan, cost, ``f_i + g_j``) get exact gradients. Zero-weight
    points get zero implicit gradient in their own potential.

    Args:
      geom: a :class:`Geometry` (:func:`pointcloud`, :func:`costmatrix`), a dense ``(n, m)`` cost matrix,
        or an ott-jax geometry.
      a: source weights ``(n,)``, non-negative (zeros allowed); default uniform ``1/n``.
      b: target weights ``(m,)``; default uniform ``1/m``.
      epsilon: entropic regularisation, ``> 0``. With ``relative_epsilon`` (default) it is multiplied by
        the cost scale, the unweighted mean of the cost matrix (:meth:`Geometry.cost_scale`).
      relative_epsilon: interpret ``epsilon`` relative to the cost scale. The scale then depends on the
        points and is differentiated too; use ``relative_epsilon=False`` for a fixed absolute epsilon (e.g.
        for the identity ``d cost / d x_i = 2 (a_i x_i - sum_j P_ij y_j)``).
      tau_a: source relaxation in ``(0, 1]``, scalar or ``(n,)``; ``1`` enforces the marginal.
      tau_b: target relaxation in ``(0, 1]``, scalar or ``(m,)``.
      threshold: stop when the L1 marginal error is below this (absolute; weights sum to ~1).
      max_iterations: iteration cap (static).
      min_iterations: run at least this many iterations.
      fixed_iterations: run exactly ``max_iterations`` iterations (no early stop).
      epsilon_scaling: ``None``, or a decay in ``(0, 1)``: epsilon starts at the cost scale and is
        multiplied by this each iteration until it reaches ``epsilon`` (helps small epsilon converge).
      init: warm start ``(f, g)`` potentials (e.g. from a previous solve); default zeros.
      cg_iterations: conjugate-gradient iterations of the implicit backward pass.
      cg_ridge: ridge added to the implicit system (the balanced system is singular along the gauge).

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
    geom = as_geometry(geom)
    n, m = geom.shape
    dtype = jnp.result_type(geom.dtype, jnp.float32)
    a = jnp.full((n,), 1.0 / n, dtype) if a is None else jnp.asarray(a, dtype)
    b = jnp.full((m,), 1.0 / m, dtype) if b is None else jnp.asarray(b, dtype)
    _check_weights(a, b, n, m)
    check_positive("epsilon", epsilon)
    tau_a = _check_tau("tau_a", tau_a, n, dtype)
    tau_b = _check_tau("tau_b", tau_b, m, dtype)
    check_int_range("max_iterations", max_iterations, 1)
    check_int_range("min_iterations", min_iterations, 0, max_iterations)
    check_positive("threshold", threshold, strict=False)
    check_int_range("cg_iterations", cg_iterations, 1)
    if epsilon_scaling is not None and not 0.0 < float(epsilon_scaling) < 1.0:
        raise ValueError(f"epsilon_scaling must be None or in (0, 1), got {epsilon_scaling!r}")
    balanced = _static_balanced(tau_a) and _static_balanced(tau_b)
    if balanced:
        _check_equal_mass(a, b)

    work = geom.dense_or_self()
    scale = work.cost_scale()
    eps = jnp.asarray(epsilon, dtype) * (scale if relative_epsilon else 1.0)
    config = _Config(float(threshold), max_iterations, min_iterations, bool(fixed_iterations),
                     epsilon_scaling is not None,
                     float(epsilon_scaling or 1.0), balanced, cg_iterations, float(cg_ridge))
    if init is None:
        f0, g0 = jnp.zeros((n,), dtype), jnp.zeros((m,), dtype)
    else:
        f0, g0 = (jnp.asarray(v, dtype) for v in init)
        if f0.shape != (n,) or g0.shape != (m,):
            raise ValueError(f"init must be potentials of shapes ({n},) and ({m},), got {f0.shape} and "
                             f"{g0.shape}")
    theta = (work, a, b, eps, tau_a, tau_b, jnp.maximum(scale, eps))
    f, g, errors, n_iters, converged = _potentials(config, theta, f0, g0)

    # Envelope theorem: costs use stop-gradient potentials (their implicit gradient would be ~0 anyway).
    fs, gs = jax.lax.stop_gradient(f), jax.lax.stop_gradient(g)
    rows, row_cost = work.plan_cost_rows(fs, gs, _log(a), _log(b), eps)
    mass_ab = jnp.sum(a) * jnp.sum(b)
    dual = _phi(fs, a, tau_a, eps) + _phi(gs, b, tau_b, eps) - eps * (jnp.sum(rows) - mass_ab)
    cols = b * jnp.exp(gs / eps + work.lse(_log(a) + fs / eps, eps, axis=0))
    transport = jnp.sum(row_cost)
    primal = (jnp.sum(rows * fs) + jnp.sum(cols * gs) - eps * (jnp.sum(rows) - mass_ab)
              + _kl_term(rows, a, tau_a, eps) + _kl_term(cols, b, tau_b, eps))
    error = (jnp.sum(jnp.abs(rows - a * _exp_neg_over_rho(fs, tau_a, eps)))
             + jnp.sum(jnp.abs(cols - b * _exp_neg_over_rho(gs, tau_b, eps))))
    return SinkhornOutput(f, g, dual, primal, transport, error, errors, converged, n_iters, eps, a, b,
                          work, tau_a, tau_b)


def _kl_term(marg, w, tau, eps):
    """sum over relaxed coordinates of rho_i * (m log(m/w) - m + w) (generalised KL)."""
    one = tau >= 1
    rho = _rho(jnp.where(one, 0.5, tau), eps)
    pos = (marg > 0) & (w > 0)
    kl = jnp.where(pos, marg * jnp.log(jnp.where(pos, marg, 1.0) / jnp.where(pos, w, 1.0)), 0.0) - marg + w
    return jnp.sum(jnp.where(one, 0.0, rho * kl))


def _static_balanced(tau) -> bool:
    v = concrete_value(tau)
    return v is not None and bool(np.all(v >= 1))


def _check_weights(a, b, n, m):
    if a.shape != (n,):
        raise ValueError(f"a must have shape ({n},) to match the geometry, got {a.shape}")
    if b.shape != (m,):
        raise ValueError(f"b must have shape ({m},) to match the geometry, got {b.shape}")
    for name, w in (("a", a), ("b", b)):
        check_finite(name, w)
        check_positive(name, w, strict=False)
        v = concrete_value(w)
        if v is not None and not np.sum(v) > 0:
            raise ValueError(f"{name} must have positive total mass, got {float(np.sum(v))}")


def _check_equal_mass(a, b):
    va, vb = concrete_value(a), concrete_value(b)
    if va is None or vb is None:
        return
    sa, sb = float(np.sum(va)), float(np.sum(vb))
    if abs(sa - sb) > 1e-4 * max(sa, sb):
        raise ValueError(f"a and b must have the same total mass in balanced mode (tau_a = tau_b = 1), got "
                         f"sum(a) = {sa:.6g} and sum(b) = {sb:.6g}; use tau_a/tau_b < 1 for unbalanced OT")


def _check_tau(name, tau, size, dtype):
    t = jnp.asarray(tau, dtype)
    if t.ndim not in (0, 1) or (t.ndim == 1 and t.shape[0] != size):
        raise ValueError(f"{name} must be a scalar or have shape ({size},), got shape {t.shape}")
    v = concrete_value(t)
    if v is not None and not np.all((v > 0) & (v <= 1)):
        raise ValueError(f"{name} must be in (0, 1], got {v.min() if v.ndim else v.item()!r}")
    return jnp.broadcast_to(t, (size,))
