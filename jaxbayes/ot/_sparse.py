r"""Sparsity-constrained and quadratically regularised optimal transport (Liu, Puigcerver, Blondel, ICLR 2023).

Primal, with column-wise cardinality ``k`` and quadratic regularisation :math:`\gamma`:

.. math:: \min_{T \in U(a, b),\ \|t_j\|_0 \le k\ \forall j} \langle T, C\rangle + \tfrac{\gamma}{2}\|T\|_F^2 .

With ``k >= n`` this is quadratically regularised OT (Blondel, Seguy, Rolet 2018). Two concave
maximisation problems recover the plan:

* dual: :math:`\max_{\alpha,\beta} \langle\alpha,a\rangle + \langle\beta,b\rangle - \sum_j
  \delta_k^*(\alpha + \beta_j - c_j)` with :math:`\delta_k^*(s) = \frac1{2\gamma}\|\mathrm{top}_k([s]_+)\|^2`;
  plan :math:`t_j = \mathrm{top}_k([s_j]_+)/\gamma` (both marginals approximate);
* semi-dual: :math:`\max_\alpha \langle\alpha,a\rangle - \sum_j b_j\,\mathrm{max}_k(\alpha - c_j; b_j)`,
  where the max-k operator :math:`\max_{u \in \Delta,\ \|u\|_0 \le k} \langle s, u\rangle -
  \frac{\gamma b_j}{2}\|u\|^2` is attained at the k-sparse simplex projection of :math:`s/(\gamma b_j)`
  (top-k entries projected onto the simplex; Kyrillidis et al. 2013); plan :math:`t_j = b_j u_j` (columns
  exact, rows approximate).

Both are solved with optax (L-BFGS with zoom line search, or Adam) inside ``lax.while_loop``; the
gradient is the marginal violation, so the stopping tolerance is an L1 marginal error. Solutions are
differentiated implicitly (``jax.custom_vjp``: CG on the Hessian of the dual, never unrolled): plans and
costs are differentiable in ``C``, ``a``, ``b``. The top-k selection is a gather at the selected indices,
whose derivative is the correct (almost-everywhere) one. For small ``k`` it is found by ``k`` arg-max
passes (O(k n m)), much faster on CPU than ``jax.lax.top_k``, which sorts. The dual solver needs only the
k-th largest value per column (max passes by value, ties share their weight), computed block by block of
columns so that each evaluation reads the cost matrix from memory once. POT's ``ot.smooth`` implements
the same problems in NumPy with SciPy's L-BFGS-B and no gradients; hence a JAX implementation.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_choice, check_int_range, check_positive
from jaxbayes._implicit import LinearSolve, implicit_tol, root_solve
from jaxbayes.ot._geometry import as_geometry
from jaxbayes.ot._minimize import minimize
from jaxbayes.ot._problem import Problem, as_problem
from jaxbayes.ot._projections import SMALL_K, scatter_last, simplex_sorted, top_k, top_k_positive
from jaxbayes.ot._renamed_fields import renamed_field
from jaxbayes.ot._rounding import RoundedPlan, round_plan
from jaxbayes.typing import Array, ArrayLike
from jaxbayes.typing import Geometry as GeometryLike


class SparseOTOutput(NamedTuple):
    """Result of :func:`sparse_ot`.

    Attributes:
      f, g: dual potentials of the rows and columns (semi-dual: ``g`` is the column multiplier recovered from
        the projection thresholds).
      cost: the regularised OT value, as the dual (or semi-dual) objective at the returned potentials (a lower
        bound; differentiated by the envelope theorem).
      primal_cost: :math:`\\langle T, C\\rangle + \\frac{\\gamma}{2}\\|T\\|^2` of the recovered plan.
      transport_cost: :math:`\\langle T, C\\rangle`.
      marginal_error_a, marginal_error_b: :math:`\\|T\\mathbf 1 - a\\|_1`,
        :math:`\\|T^\\top\\mathbf 1 - b\\|_1`.
      error: final L1 norm of the gradient of the objective (the quantity the stopping rule compares to ``tol``).
      converged: the answer is accurate to ``tol``: ``error <= tol`` (the gradient test), or the optimiser
        stalled with a certified duality ``gap <= tol * max(1, |cost|)``.
      status: what stopped the optimiser: ``0`` the gradient test (``error <= tol``), ``1`` ``max_iterations``,
        ``2`` stalled (see ``stalled``); the accuracy reached is ``gap`` (objective) and ``error`` (marginals).
      gap: certified accuracy of ``cost``: the regularised cost of the feasible plan :meth:`feasible_plan`
        minus ``cost`` (a lower bound by weak duality, also for ``k < n``), so the optimum lies in
        ``[cost, cost + gap]``; ``inf`` when no feasible plan on the dual plan's support was found (in 300
        to 3000 matrix scalings by size; common far from convergence, e.g. at ``max_iterations``).
      stalled: L-BFGS stopped making progress (relative objective change below 100 machine epsilons for
        10 iterations). With ``k`` below the natural support the optimum sits on a kink of the top-k dual,
        where the gradient (the marginal violation) need not vanish, so this is the normal way to stop there;
        in float32 with small ``gamma`` it can also mean lost precision (use float64).
      n_iters: optimiser iterations.
      plan_matrix: the ``(n, m)`` plan (also :meth:`plan`), at most ``k`` non-zeros per column
        (``sparsity="column"``) or row.
    """

    f: Array
    g: Array
    cost: Array
    primal_cost: Array
    transport_cost: Array
    marginal_error_a: Array
    marginal_error_b: Array
    error: Array
    converged: Array
    stalled: Array
    n_iters: Array
    plan_matrix: Array
    status: Array
    gap: Array
    a: Array
    b: Array

    def plan(self) -> Array:
        """The ``(n, m)`` sparse plan read off the dual (its marginals are met only to ``marginal_error_*``)."""
        return self.plan_matrix

    def feasible_plan(self) -> RoundedPlan:
        """The plan rounded onto the transport polytope, keeping its sparsity (:func:`round_plan`): exact
        marginals ``a``, ``b``, zero wherever :meth:`plan` is (so at most ``k`` non-zeros per column or row);
        its ``<T, C>`` moves from ``transport_cost`` by about ``max |C|`` times twice the marginal errors
        (Altschuler et al. 2017, Lemma 7)."""
        return _certifying_round(self.plan_matrix, self.a, self.b)

    alpha = renamed_field("alpha", "f")
    beta = renamed_field("beta", "g")
    dual_cost = renamed_field("dual_cost", "cost")
    grad_norm = renamed_field("grad_norm", "error")


# ------------------------------------------------------------------ objectives (to be MINIMISED)
def _top_k_weights(s: Array, k: int) -> Array:
    """Weights ``w`` along axis 0 with ``sum(w * f(s)) = sum(f(top_k(s)))`` for any ``f``: 1 above the k-th
    largest value ``tau``, ``(k - #{s > tau}) / #{s == tau}`` at ``tau`` (ties share), 0 below."""
    return _row_top_k_weights(jax.lax.stop_gradient(s).T, k).T


def _row_top_k_weights(s: Array, k: int) -> Array:
    """:func:`_top_k_weights` along axis 1 of ``s`` (``(B, n)``)."""
    tau, share = _top_k_threshold(s, k)
    return jnp.where(s > tau, 1.0, jnp.where(s == tau, share, 0.0)).astype(s.dtype)


def _neg_dual(params, c, a, b, gamma, k):
    alpha, beta = params
    s = alpha[:, None] + beta[None, :] - c  # (n, m); top-k along axis 0 (within each column of the plan)
    sp = jnp.maximum(s, 0.0)
    return -(jnp.dot(alpha, a) + jnp.dot(beta, b) - jnp.sum(_top_k_weights(s, k) * sp * sp) / (2.0 * gamma))


def _top_k_threshold(s: Array, k: int) -> tuple[Array, Array]:
    """Per row of ``s`` (``(B, n)``): the k-th largest value ``tau`` and the weight ``share`` of entries equal
    to it, ``(k - #{s > tau}) / #{s == tau}`` (ties share), both ``(B, 1)``; see :func:`_top_k_weights`.

    Works on values, not indices: ``k`` masked max passes (each finds the next distinct value) and one pass
    of counts, which vectorise on CPU, unlike arg-max (a variadic reduce) or ``lax.top_k`` (a sort)."""
    n = s.shape[1]
    if k >= n:
        return jnp.full(s.shape[:1] + (1,), -jnp.inf, s.dtype), jnp.ones(s.shape[:1] + (1,), s.dtype)
    if k > SMALL_K:
        tau = jax.lax.top_k(s, k)[0][:, -1:]
        above, ge = jnp.sum(s > tau, axis=1, keepdims=True), jnp.sum(s >= tau, axis=1, keepdims=True)
    else:
        vals, prev = [], None
        for _ in range(k):
            masked = s if prev is None else jnp.where(s < prev, s, -jnp.inf)
            prev = jnp.max(masked, axis=1, keepdims=True)
            vals.append(prev)
        counts = [jnp.sum(s >= v, axis=1, keepdims=True) for v in vals]
        tau, ge = vals[-1], counts[-1]
        above = counts[-2] if k > 1 else jnp.zeros_like(ge)
        for i in reversed(range(k - 1)):
            hit = counts[i] >= k
            tau, ge = jnp.where(hit, vals[i], tau), jnp.where(hit, counts[i], ge)
            above = jnp.where(hit, counts[i - 1] if i > 0 else 0, above)
    return tau, (k - above).astype(s.dtype) / jnp.maximum(ge - above, 1).astype(s.dtype)


_BLOCK = 64


def _cost_blocks(c: Array) -> Array:
    """The transposed cost in blocks of ``_BLOCK`` plan columns, ``(m / _BLOCK, _BLOCK, n)``; padded columns
    have infinite cost (never in the plan)."""
    n, m = c.shape
    nb = -(-m // _BLOCK)
    return jnp.pad(c.T, ((0, nb * _BLOCK - m), (0, 0)), constant_values=jnp.inf).reshape(nb, _BLOCK, n)


def _neg_dual_value_and_grad(params, ct, a, b, gamma, k):
    """Value and gradient of :func:`_neg_dual` from the cost blocks ``ct`` of :func:`_cost_blocks`: the
    ``k + 2`` passes of each block's top-k threshold, plan and sums run on data that stays in cache, so the
    cost matrix is read from memory once per evaluation (about 3x faster on CPU than passes over the whole
    matrix, which each re-read it)."""
    alpha, beta = params
    m = beta.shape[0]
    bt = jnp.pad(beta, (0, ct.shape[0] * ct.shape[1] - m)).reshape(ct.shape[:2])

    def block(rows, blk):
        cb, bb = blk
        s = alpha[None, :] + bb[:, None] - cb
        plan = _row_top_k_weights(s, k) * jnp.maximum(s, 0.0) / gamma  # (block, n): rows are plan columns
        return rows + jnp.sum(plan, 0), (jnp.sum(plan * s, 1), jnp.sum(plan, 1))

    rows, (quad, cols) = jax.lax.scan(block, jnp.zeros_like(alpha), (ct, bt))
    quad, cols = quad.reshape(-1)[:m], cols.reshape(-1)[:m]
    value = -(jnp.dot(alpha, a) + jnp.dot(beta, b) - 0.5 * jnp.sum(quad))
    return value, (rows - a, cols - b)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _fast_neg_dual(params, c_t, a, b, gamma, k):
    return _neg_dual_value_and_grad(params, c_t, a, b, gamma, k)[0]


def _fast_neg_dual_fwd(params, c_t, a, b, gamma, k):
    value, grad = _neg_dual_value_and_grad(params, c_t, a, b, gamma, k)
    return value, (grad, c_t, a, b, gamma)


def _fast_neg_dual_bwd(k, res, ct):
    grad, *rest = res
    # the solver only differentiates in the potentials (the data are stop-gradient constants there)
    return (jax.tree.map(lambda g: ct * g, grad), *map(jnp.zeros_like, rest))


_fast_neg_dual.defvjp(_fast_neg_dual_fwd, _fast_neg_dual_bwd)


def _dual_plan(params, c, gamma, k):
    alpha, beta = params
    s = (alpha[:, None] + beta[None, :] - c).T
    vals, idx = top_k_positive(s, k)
    return scatter_last(vals / gamma, idx, c.shape[0]).T


def _semi_dual_parts(alpha, c, b, gamma, k):
    x = (alpha[:, None] - c).T  # (m, n)
    scaled = x / (gamma * b[:, None])
    n = c.shape[0]
    if k >= n:
        order = jnp.argsort(-scaled, axis=-1)
        vals = jnp.take_along_axis(scaled, order, axis=-1)
    else:
        vals, order = top_k(scaled, k)
    u, theta = simplex_sorted(vals, jnp.ones(b.shape, c.dtype))
    xs = jnp.take_along_axis(x, order, axis=-1)
    val = jnp.sum(xs * u, axis=-1) - 0.5 * gamma * b * jnp.sum(u * u, axis=-1)
    return val, u, order, theta


def _neg_semi_dual(alpha, c, a, b, gamma, k):
    val, _, _, _ = _semi_dual_parts(alpha, c, b, gamma, k)
    return -(jnp.dot(alpha, a) - jnp.dot(b, val))


def _semi_dual_plan(alpha, c, b, gamma, k):
    _, u, order, theta = _semi_dual_parts(alpha, c, b, gamma, k)
    plan = scatter_last(u * b[:, None], order, c.shape[0]).T
    return plan, -theta * b * gamma


def sparse_ot(
    geom: GeometryLike | Problem | ArrayLike,
    a: ArrayLike | None = None,
    b: ArrayLike | None = None,
    *,
    k: int,
    gamma: ArrayLike = 1.0,
    sparsity: str = "column",
    formulation: str = "dual",
    method: str = "lbfgs",
    max_iterations: int = 500,
    tol: float = 1e-6,
    learning_rate: float = 0.01,
    cg_iterations: int = 100,
    cg_ridge: float = 0.0,
    cg_tol: float | None = None,
) -> SparseOTOutput:
    """Sparsity-constrained (``k < n``) or quadratically regularised (``k = n``) optimal transport.

    Args:
      geom: a cost matrix ``(n, m)``, any geometry accepted by :func:`jaxbayes.ot.sinkhorn` (dense), or a
        balanced :class:`Problem`.
      a, b: marginals (default uniform). Balanced: same total mass.
      k: maximum number of non-zeros per column (or per row), in ``[1, n]`` (``[1, m]`` for rows).
      gamma: quadratic regularisation :math:`\\gamma > 0` (absolute, in cost units per unit mass^2).
      sparsity: ``"column"`` (each target receives from at most ``k`` sources, e.g. tokens per expert) or
        ``"row"`` (each source sends to at most ``k`` targets, e.g. experts per token).
      formulation: ``"dual"`` (both marginals approximate) or ``"semi_dual"`` (the constrained side exact).
      method: ``"lbfgs"`` (optax L-BFGS with zoom line search) or ``"adam"``.
      max_iterations: optimiser iteration cap (static).
      tol: stop when the L1 norm of the gradient (the marginal violation) is below ``tol``.
      learning_rate: Adam step size (ignored by L-BFGS).
      cg_iterations, cg_ridge: conjugate-gradient solve of the implicit backward pass (iteration cap; ridge).
        The dual's Hessian is singular along the gauge and the flat (inactive) directions, but a plan's
        cotangent has no component there, so CG needs no ridge; a ridge biases every gradient by about
        ``cg_ridge / eigenvalue`` (1e-6 gave 1e-6 relative errors), so the default is 0.
      cg_tol: its relative residual tolerance; default ``tol`` (at most 1e-5, at least 10 machine epsilons),
        so the gradient is as accurate as the answer.

    Returns:
      A :class:`SparseOTOutput`.

    Statuses: ``status`` says why the optimiser stopped (gradient test, ``max_iterations``, stalled) and
    ``gap`` how accurate ``cost`` is then (certified by the feasible plan :meth:`SparseOTOutput.feasible_plan`,
    the dual plan rounded onto the marginals on its own support, which is also the plan to use or draw when
    marginals must hold). With ``k < n`` the dual optimum sits on a kink and its plan need not meet the
    marginals (a gap of the non-convex problem, not a solver failure); stalling there is the normal stop.

    Precision: in float32 the L-BFGS line search can stop making progress before ``tol`` (seen on small
    top-k routing problems at marginal errors up to ~1e-2, which float64 solves to 1e-7). Check ``converged``,
    ``stalled`` and ``marginal_error_*``, and solve in float64 (``jax.enable_x64``) when marginals must be tight.

    Example:
      >>> import jax.numpy as jnp
      >>> c = jnp.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
      >>> out = sparse_ot(c, k=1, gamma=0.01)
      >>> (out.plan() > 1e-6).sum(axis=0).tolist(), round(float(out.transport_cost), 4)
      ([1, 1, 1], 0.0)
    """
    prob = as_problem(geom, a, b, equal_mass=True)
    a, b = prob.a, prob.b
    c = prob.geom.materialize().cost_matrix  # finite: checked by the geometry's constructor
    check_choice("sparsity", sparsity, ("column", "row"))
    check_choice("formulation", formulation, ("dual", "semi_dual"))
    check_choice("method", method, ("lbfgs", "adam"))
    check_positive("gamma", gamma)
    check_int_range("max_iterations", max_iterations, 1)
    check_int_range("cg_iterations", cg_iterations, 1)
    check_positive("cg_ridge", cg_ridge, strict=False)
    cg_tol = implicit_tol(cg_tol, tol, c.dtype)
    n, m = c.shape
    if sparsity == "row":
        check_int_range("k", k, 1, m)
        out = _solve_column(c.T, b, a, k, gamma, formulation, method, max_iterations, tol, learning_rate,
                            cg_iterations, cg_ridge, cg_tol)
        return out._replace(plan_matrix=out.plan_matrix.T, f=out.g, g=out.f, a=out.b, b=out.a,
                            marginal_error_a=out.marginal_error_b, marginal_error_b=out.marginal_error_a)
    check_int_range("k", k, 1, n)
    return _solve_column(c, a, b, k, gamma, formulation, method, max_iterations, tol, learning_rate,
                         cg_iterations, cg_ridge, cg_tol)


def _solve_column(c, a, b, k, gamma, formulation, method, max_iterations, tol, learning_rate,
                  cg_iterations, cg_ridge, cg_tol):
    n, m = c.shape
    gamma = jnp.asarray(gamma, c.dtype)
    if formulation == "dual":
        objective = lambda p, c_, a_, b_, g_: _neg_dual(p, c_, a_, b_, g_, k)
        x0 = (jnp.zeros((n,), c.dtype), jnp.zeros((m,), c.dtype))
    else:
        objective = lambda p, c_, a_, b_, g_: _neg_semi_dual(p, c_, a_, b_, g_, k)
        x0 = jnp.zeros((n,), c.dtype)

    cfg = _ArgminConfig(objective, k if formulation == "dual" else None, method, max_iterations, float(tol),
                        learning_rate, cg_iterations, float(cg_ridge), cg_tol)
    params, n_iters, grad_norm, stalled = _argmin(cfg, (c, a, b, gamma), x0)
    stopped = jax.lax.stop_gradient(params)
    dual_cost = -objective(stopped, c, a, b, gamma)  # envelope theorem
    if formulation == "dual":
        plan = _dual_plan(params, c, gamma, k)
        alpha, beta = params
    else:
        plan, beta = _semi_dual_plan(params, c, b, gamma, k)
        alpha = params
    transport = jnp.sum(plan * c)
    # certified accuracy: a feasible plan on the same (k-sparse) support bounds the optimum from above
    rounded = _certifying_round(plan, a, b)
    feasible = rounded.plan_matrix
    upper = jnp.sum(feasible * c) + 0.5 * gamma * jnp.sum(feasible**2)
    gap = jax.lax.stop_gradient(jnp.where(rounded.kept_support | (k >= n), jnp.maximum(upper - dual_cost, 0.0),
                                          jnp.inf))
    at_tol = grad_norm <= tol
    status = jnp.where(at_tol, 0, jnp.where(stalled, 2, 1)).astype(jnp.int32)
    converged = at_tol | (stalled & (gap <= tol * jnp.maximum(1.0, jnp.abs(dual_cost))))
    return SparseOTOutput(
        plan_matrix=plan, f=alpha, g=beta, cost=dual_cost,
        primal_cost=transport + 0.5 * gamma * jnp.sum(plan**2), transport_cost=transport,
        marginal_error_a=jnp.sum(jnp.abs(jnp.sum(plan, 1) - a)),
        marginal_error_b=jnp.sum(jnp.abs(jnp.sum(plan, 0) - b)),
        error=grad_norm, converged=converged, stalled=stalled, n_iters=n_iters, status=status, gap=gap, a=a, b=b)


def _certifying_round(plan: Array, a: Array, b: Array) -> RoundedPlan:
    """The rounding whose plan certifies ``gap`` (and that :meth:`SparseOTOutput.feasible_plan` returns, so the
    two agree): 300 to 3000 matrix scalings by size, ~0.1 s at n = 500; supports needing more give gap = inf."""
    n, m = plan.shape
    scalings = int(min(3000, max(300, 3e7 // (n * m))))
    return round_plan(jax.lax.stop_gradient(plan), a, b, max_iterations=scalings)


class _ArgminConfig(NamedTuple):
    objective: Any
    fast_dual_k: int | None  # dual formulation: solve with the blocked value-and-gradient
    method: str
    max_iterations: int
    tol: float
    learning_rate: float
    cg_iterations: int
    cg_ridge: float
    cg_tol: float


def _solve_argmin(cfg: _ArgminConfig, theta, x0):
    fun = lambda p: cfg.objective(p, *theta)
    if cfg.fast_dual_k is not None:  # value and gradient by the blocked pass (same function)
        c, a, b, gamma = theta
        c_t = _cost_blocks(c)
        fun = lambda p: _fast_neg_dual(p, c_t, a, b, gamma, cfg.fast_dual_k)
    x, (it, gn, stalled) = minimize(fun, x0, method=cfg.method, max_iterations=cfg.max_iterations,
                                    tol=cfg.tol, learning_rate=cfg.learning_rate)
    return x, it.astype(jnp.int32), gn, stalled


# Implicit function theorem on grad_p F(p*, theta) = 0 (CG on the PSD Hessian of the minimised objective; its
# gauge and flat directions carry no cotangent), never unrolled.
_argmin = root_solve(_solve_argmin, lambda cfg: (lambda th, p: jax.grad(cfg.objective)(p, *th)),
                     lambda cfg: LinearSolve(cfg.cg_iterations, cfg.cg_ridge, cfg.cg_tol))


def quadratic_ot(geom: GeometryLike | Problem | ArrayLike, a: ArrayLike | None = None, b: ArrayLike | None = None, *,
                 gamma: ArrayLike = 1.0, **kwargs: Any) -> SparseOTOutput:
    """Quadratically regularised OT (Blondel, Seguy, Rolet 2018): :func:`sparse_ot` with ``k = n``.

    Example:
      >>> import jax.numpy as jnp
      >>> out = quadratic_ot(jnp.array([[0.0, 1.0], [1.0, 0.0]]), gamma=0.1)
      >>> out.plan().round(3).tolist()
      [[0.5, 0.0], [0.0, 0.5]]
    """
    shape = geom.shape if isinstance(geom, Problem) else as_geometry(geom).shape
    n = shape[0] if kwargs.get("sparsity", "column") == "column" else shape[1]
    return sparse_ot(geom, a, b, k=int(n), gamma=gamma, **kwargs)

