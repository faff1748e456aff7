"""Sparsity-constrained / quadratic OT against scipy's exact assignment and POT's ot.smooth solvers."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import ot as pot
import pytest
import scipy.optimize
from scipy.optimize import linear_sum_assignment

from jaxbayes import ot

_STATIC = ("k", "sparsity", "formulation", "method", "max_iterations", "tol", "learning_rate",
           "cg_iterations", "cg_ridge", "cg_tol")
sparse_ot = jax.jit(ot.sparse_ot, static_argnames=_STATIC)


def _cost(n=20, m=20, seed=0):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, 2)), rng.normal(size=(m, 2))
    return ((x[:, None] - y[None]) ** 2).sum(-1)


@pytest.mark.parametrize("formulation", ["dual", "semi_dual"])
def test_k1_equals_exact_assignment(x64, formulation):
    c = _cost()
    rows, cols = linear_sum_assignment(c)
    out = sparse_ot(c, k=1, gamma=1e-3, formulation=formulation, max_iterations=2000, tol=1e-9)
    assert bool(out.converged | out.stalled)
    plan = np.asarray(out.plan())
    assert (plan > 0).sum(axis=0).max() == 1
    np.testing.assert_array_equal(plan.argmax(axis=0)[cols], rows)
    np.testing.assert_allclose(out.transport_cost, c[rows, cols].mean(), rtol=1e-6)
    assert float(out.marginal_error_a) < 1e-6 and float(out.marginal_error_b) < 1e-6


def _pot_value(c, a, b, gamma, k, formulation):
    n = c.shape[0]
    reg = pot.smooth.SquaredL2(gamma) if k >= n else pot.smooth.SparsityConstrained(k, gamma)
    kw = dict(reg_type="l2") if k >= n else dict(reg_type="sparsity_constrained", max_nz=k)
    if formulation == "dual":
        plan, log = pot.smooth.smooth_ot_dual(a, b, c, gamma, log=True, stopThr=1e-12, **kw)
        alpha, beta = log["alpha"], log["beta"]
        if k >= n:  # smooth dual: POT's L-BFGS-B also stops on its ftol (its plan's marginals were off by 2e-6);
            # polish its duals on POT's own objective to the rounding level (marginals then 1e-8)
            def neg(x):
                obj, ga, gb = pot.smooth.dual_obj_grad(x[:n], x[n:], a, b, c, reg)
                return -obj, -np.concatenate([ga, gb])

            res = scipy.optimize.minimize(neg, np.concatenate([alpha, beta]), jac=True, method="L-BFGS-B",
                                          options=dict(ftol=1e-16, gtol=1e-14, maxiter=20000))
            alpha, beta = res.x[:n], res.x[n:]
            plan = pot.smooth.get_plan_from_dual(alpha, beta, c, reg)
        return plan, pot.smooth.dual_obj_grad(alpha, beta, a, b, c, reg)[0]
    plan, log = pot.smooth.smooth_ot_semi_dual(a, b, c, gamma, log=True, stopThr=1e-12, **kw)
    return plan, pot.smooth.semi_dual_obj_grad(log["alpha"], a, b, c, reg)[0]


@pytest.mark.filterwarnings("ignore:scipy.optimize.*disp:DeprecationWarning")  # POT passes `disp` to scipy
@pytest.mark.parametrize("formulation", ["dual", "semi_dual"])
@pytest.mark.parametrize("k", [2, 20])
def test_matches_pot_smooth(x64, formulation, k):
    c = _cost(20, 15, seed=1)
    a, b = np.ones(20) / 20, np.ones(15) / 15
    out = sparse_ot(c, a, b, k=k, gamma=0.2, formulation=formulation, tol=1e-10, max_iterations=2000)
    plan, value = _pot_value(c, a, b, 0.2, k, formulation)
    assert bool(out.converged | out.stalled)
    assert (np.asarray(out.plan()) > 0).sum(axis=0).max() <= k
    if k >= 20:  # smooth, strictly concave up to the gauge: unique plan
        np.testing.assert_allclose(out.cost, value, rtol=1e-8)
        np.testing.assert_allclose(out.plan(), plan, atol=1e-6)
    else:  # non-smooth top-k dual: both solvers stop on a kink; same objective to 1e-4 (issue target)
        np.testing.assert_allclose(out.cost, value, rtol=1e-4)


def test_large_k_is_quadratic_ot(x64):
    c = _cost(12, 12)
    big = sparse_ot(c, k=12, gamma=0.5, tol=1e-10)
    quad = jax.jit(functools.partial(ot.quadratic_ot, gamma=0.5, tol=1e-10))(c)
    np.testing.assert_allclose(big.plan(), quad.plan(), atol=1e-12)
    # k above the natural support size changes nothing
    loose = sparse_ot(c, k=6, gamma=0.5, tol=1e-10)
    if (np.asarray(quad.plan()) > 0).sum(0).max() <= 6:
        np.testing.assert_allclose(loose.plan(), quad.plan(), atol=1e-8)


def test_row_sparsity_and_adam(x64):
    c = _cost(10, 30, seed=2)
    out = sparse_ot(c, k=4, gamma=0.05, sparsity="row", tol=1e-9, max_iterations=2000)
    plan = np.asarray(out.plan())
    assert (plan > 0).sum(axis=1).max() <= 4
    ref = sparse_ot(c.T, k=4, gamma=0.05, tol=1e-9, max_iterations=2000)
    np.testing.assert_allclose(plan, np.asarray(ref.plan()).T, atol=1e-12)
    adam = sparse_ot(c, k=4, gamma=0.05, sparsity="row", method="adam", learning_rate=0.01, tol=1e-6,
                     max_iterations=5000)
    np.testing.assert_allclose(adam.cost, out.cost, rtol=1e-9)
    assert float(adam.marginal_error_a + adam.marginal_error_b) < 1e-5


def test_implicit_gradients_match_finite_differences(x64):
    # k = 3 does not bind at the optimum here: the solution map is smooth, so finite differences apply
    # (where the cardinality binds, the optimum sits on a kink of the dual and the map is non-smooth).
    c = jnp.asarray(_cost(20, 20, seed=0))
    w = jnp.asarray(np.random.default_rng(5).normal(size=c.shape))
    for formulation in ("dual", "semi_dual"):
        loss = jax.jit(lambda c: jnp.sum(ot.sparse_ot(c, k=3, gamma=0.5, tol=1e-12, max_iterations=3000,
                                                      formulation=formulation).plan() * w))
        d = jnp.asarray(np.random.default_rng(6).normal(size=c.shape))
        h = 1e-6
        fd = (loss(c + h * d) - loss(c - h * d)) / (2 * h)
        np.testing.assert_allclose(jnp.vdot(jax.jit(jax.grad(loss))(c), d), fd, rtol=1e-5)
    # envelope theorem: d dual_cost / d C = plan
    grad = jax.jit(jax.grad(lambda c: ot.sparse_ot(c, k=3, gamma=0.5, tol=1e-12).cost))(c)
    np.testing.assert_allclose(grad, sparse_ot(c, k=3, gamma=0.5, tol=1e-12).plan(), atol=1e-9)


def test_vmap_over_routing_problems(x64):
    """Batched top-k routing: 6 groups of 16 tokens to 4 experts, each expert takes <= 5 tokens.
    In float64 every problem converges (in float32 L-BFGS stalls on some at a marginal error ~1e-2, and a
    stalled iterate depends on rounding, so batched and single runs need not agree there)."""
    logits = jax.random.normal(jax.random.key(0), (6, 16, 4))
    a = jnp.ones(16) / 16
    b = jnp.ones(4) / 4
    solve = lambda lg: ot.sparse_ot(-lg, a, b, k=5, gamma=0.1, formulation="semi_dual", tol=1e-5)
    batched = jax.jit(jax.vmap(solve))(logits)
    single = jax.jit(solve)
    for i in range(6):
        np.testing.assert_allclose(batched.plan()[i], single(logits[i]).plan(), atol=1e-9)
    assert bool(batched.converged.all())
    assert int((batched.plan() > 0).sum(axis=1).max()) <= 5


@pytest.mark.parametrize("k", [1, 3, 20, 70])
def test_blocked_dual_value_and_gradient_match_numpy_top_k(x64, k):
    """The solver's blocked dual evaluation (k-th value by max passes, ties share) against NumPy sorting;
    m = 70 is not a multiple of the block size; k = 20 takes the lax.top_k path, k = 70 = n is quadratic OT."""
    from jaxbayes.ot._sparse import _cost_blocks, _neg_dual_value_and_grad

    rng = np.random.default_rng(7)
    n, m, gamma = 70, 70, 0.3
    c = rng.random((n, m))
    c[:, 5] = 0.25  # a column of ties
    alpha, beta = rng.random(n) * 0.5, rng.random(m) * 0.5
    beta[5] = 0.0
    alpha[:] = np.where(np.arange(n) < 4, 0.9, alpha)  # 4 tied maxima in column 5
    a, b = np.full(n, 1 / n), np.full(m, 1 / m)
    s = alpha[:, None] + beta[None, :] - c
    top = -np.sort(-s, axis=0)[:k]
    want = -(alpha @ a + beta @ b - np.sum(np.maximum(top, 0) ** 2) / (2 * gamma))
    value, (ga, gb) = _neg_dual_value_and_grad((jnp.asarray(alpha), jnp.asarray(beta)), _cost_blocks(jnp.asarray(c)),
                                               jnp.asarray(a), jnp.asarray(b), gamma, k)
    np.testing.assert_allclose(value, want, rtol=1e-12)
    plan = np.where(s >= top[-1], np.maximum(s, 0), 0.0) / gamma
    if k < 4:  # column 5: four tied maxima (rows 0-3) share k units of weight
        plan[:, 5] = np.where(np.arange(n) < 4, k / 4 * np.maximum(s[:, 5], 0) / gamma, 0.0)
    np.testing.assert_allclose(gb, plan.sum(0) - b, atol=1e-12)
    np.testing.assert_allclose(ga, plan.sum(1) - a, atol=1e-12)
