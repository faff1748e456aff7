"""Rounding onto the transport polytope (Altschuler et al. 2017, Algorithm 2) and sparse OT statuses."""

import jax
import jax.numpy as jnp
import numpy as np
import ot as pot
import pytest

from jaxbayes import ot


def _cost(n, m, seed=0):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, 2)), rng.normal(size=(m, 2))
    return ((x[:, None] - y[None]) ** 2).sum(-1)


def _altschuler_numpy(p, a, b):
    """Algorithm 2 of Altschuler, Weed, Rigollet (2017), written from the paper."""
    x = np.diag(np.minimum(a / p.sum(1), 1.0)) @ p
    y = x @ np.diag(np.minimum(b / x.sum(0), 1.0))
    er, ec = a - y.sum(1), b - y.sum(0)
    return y + np.outer(er, ec) / np.abs(ec).sum()


def _marginal_l1(p, a, b):
    return np.abs(p.sum(1) - a).sum() + np.abs(p.sum(0) - b).sum()


@pytest.mark.parametrize(("n", "m", "k", "gamma", "formulation"),
                         [(30, 20, 3, 0.05, "dual"), (20, 15, 2, 0.1, "semi_dual"),
                          (15, 15, 15, 0.5, "dual")])
def test_rounded_sparse_plan_is_feasible_sparse_and_close(x64, n, m, k, gamma, formulation):
    c = _cost(n, m, seed=n)
    a, b = np.full(n, 1 / n), np.full(m, 1 / m)
    out = ot.sparse_ot(c, k=k, gamma=gamma, formulation=formulation, tol=1e-9, max_iterations=1000)
    p = np.asarray(out.plan())
    r = out.feasible_plan()
    q = np.asarray(r.plan())
    assert bool(r.kept_support)
    assert q.min() >= 0.0
    np.testing.assert_allclose(q.sum(1), a, rtol=0, atol=1e-12)
    np.testing.assert_allclose(q.sum(0), b, rtol=0, atol=1e-12)
    assert np.all(q[p == 0] == 0)  # support (hence column k-sparsity) kept
    assert (q > 0).sum(0).max() <= k
    bound = 2 * _marginal_l1(p, a, b)  # Lemma 7 (for Algorithm 2; the support-keeping scaling stays near it)
    assert np.abs(q - p).sum() <= 1.5 * bound + 1e-14
    assert abs(np.sum(q * c) - float(out.transport_cost)) <= np.abs(c).max() * bound + 1e-12


def test_dense_algorithm_2_matches_the_paper(x64):
    rng = np.random.default_rng(0)
    p = rng.uniform(size=(7, 5))
    p /= p.sum()
    a, b = rng.dirichlet(np.ones(7)), rng.dirichlet(np.ones(5))
    r = ot.round_plan(p, a, b, keep_support=False)
    q = np.asarray(r.plan())
    np.testing.assert_allclose(q, _altschuler_numpy(p, a, b), rtol=0, atol=1e-15)
    np.testing.assert_allclose(q.sum(1), a, atol=1e-15)
    np.testing.assert_allclose(q.sum(0), b, atol=1e-15)
    assert np.abs(q - p).sum() <= 2 * _marginal_l1(p, a, b)


def test_infeasible_support_falls_back_to_dense(x64):
    p = np.array([[0.5, 0.5], [0.0, 0.0]])  # a zero row where a > 0: no plan on this support
    a = b = np.array([0.5, 0.5])
    r = ot.round_plan(p, a, b, max_iterations=50)
    q = np.asarray(r.plan())
    assert not bool(r.kept_support) and not bool(r.converged)
    np.testing.assert_allclose(q.sum(1), a, atol=1e-15)
    np.testing.assert_allclose(q.sum(0), b, atol=1e-15)


def test_round_plan_jit_vmap(x64):
    rng = np.random.default_rng(1)
    # supports that are unions of permutations (so plans with uniform marginals exist on them)
    masks = np.zeros((4, 6, 6))
    for i in range(4):
        for _ in range(3):
            masks[i, np.arange(6), rng.permutation(6)] = 1.0
    ps = rng.uniform(0.1, 1.0, size=(4, 6, 6)) * masks / 6
    a = b = np.full(6, 1 / 6)
    rs = jax.jit(jax.vmap(lambda p: ot.round_plan(p, a, b)))(jnp.asarray(ps))
    for p, q in zip(ps, np.asarray(rs.plan_matrix), strict=True):
        np.testing.assert_allclose(q.sum(1), a, atol=1e-12)
        np.testing.assert_allclose(q.sum(0), b, atol=1e-12)
        assert np.all(q[p == 0] == 0)


def test_stalled_but_accurate_reports_converged_with_certified_gap(x64):
    """k < n: the dual optimum sits on a kink, L-BFGS stalls with error ~1e-8 > tol; before, converged=False."""
    c = _cost(30, 20, seed=30)
    out = ot.sparse_ot(c, k=3, gamma=0.05, tol=1e-9, max_iterations=1000)
    assert int(out.status) == 2 and bool(out.stalled)
    assert float(out.error) > 1e-9
    assert 0.0 <= float(out.gap) <= 1e-9
    assert bool(out.converged)
    # the gap is certified by the plan feasible_plan() returns: its regularised cost minus the dual value
    fp = out.feasible_plan()
    q = np.asarray(fp.plan())
    upper = float(np.sum(q * np.asarray(c)) + 0.5 * 0.05 * np.sum(q**2))
    assert bool(fp.kept_support)
    np.testing.assert_allclose(upper - float(out.cost), float(out.gap), rtol=1e-6, atol=1e-15)


def test_max_iterations_status():
    out = ot.sparse_ot(_cost(20, 20).astype(np.float32), k=2, gamma=0.1, max_iterations=3)
    assert int(out.status) == 1 and not bool(out.converged)


@pytest.mark.filterwarnings("ignore:scipy.optimize.*disp:DeprecationWarning")  # POT passes `disp` to scipy
def test_k2_gamma3_error_is_the_nonconvex_gap_not_a_solver_defect(x64):
    """The 6x5, k=2, gamma=3 problem's dual optimum violates the marginals by ~0.1-0.3: the top-k dual is the
    dual of a non-convex problem. The solver's dual is at least POT's (same objective, SciPy L-BFGS-B) and the
    feasible plan's regularised cost upper-bounds it, within the reported gap."""
    for seed in range(3):
        c = _cost(6, 5, seed=seed)
        a, b = np.full(6, 1 / 6), np.full(5, 1 / 5)
        out = ot.sparse_ot(c, k=2, gamma=3.0, tol=1e-10, max_iterations=3000)
        _, log = pot.smooth.smooth_ot_dual(a, b, c, 3.0, reg_type="sparsity_constrained", max_nz=2, log=True,
                                           numItermax=10000, stopThr=1e-12)
        assert float(out.cost) >= -log["res"].fun - 1e-9
        q = np.asarray(out.feasible_plan().plan())
        upper = np.sum(q * c) + 1.5 * np.sum(q**2)
        assert (q > 0).sum(0).max() <= 2
        np.testing.assert_allclose(upper - float(out.cost), float(out.gap), atol=1e-12)
        assert float(out.gap) < 0.05
