"""Oracle tests of partial_ot, progressive_partial_ot and pseudo_labels at their default settings (issue 10.8)."""

import jax
import numpy as np
import ot as pot
import pytest
from scipy.optimize import minimize
from scipy.special import logsumexp, xlogy

from jaxbayes import ot


def _generalised_kl(p, k):
    """KL(P || K) = sum P log(P / K) - sum P + sum K for nonnegative measures of any masses."""
    p = np.where(p > 1e-15, p, 0.0)
    m = p > 0
    return float(np.sum(p[m] * np.log(p[m] / k[m])) - p.sum() + k.sum())


@pytest.mark.parametrize("mass", [0.3, 0.7, 1.0])
def test_partial_ot_default_epsilon_is_sandwiched_by_pot_exact(x64, mass):
    """Oracle: POT's exact partial Wasserstein plan P0 of the same problem. partial_ot solves entropic OT of the
    dummy-extended problem (C_ext, a_ext, b_ext), whose exact value is <P0, C> and whose entropic value obeys

        <P0, C> <= <P_eps, C_ext> <= OT_eps <= <P0, C> + eps KL(P0_ext || a_ext (x) b_ext)

    (P_eps is feasible; KL >= 0; P0_ext is feasible for OT_eps). The default epsilon is 0.01 x mean(C); the
    default tol = 1e-3 leaves L1 marginal errors up to 1e-3, which move <P, C> by at most 1e-3 max(C)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(40, 2)) + 2.0
    c = ((x[:, None] - y[None]) ** 2).sum(-1)
    a, b = np.ones(30) / 30, np.ones(40) / 40
    out = jax.jit(lambda c: ot.partial_ot(c, a, b, mass=mass))(c)
    assert bool(out.converged)
    eps = 0.01 * c.mean()
    slack = 1e-3 * c.max()

    def band(m):
        p0 = pot.partial.partial_wasserstein(a, b, c, m=m)
        p0_ext = np.zeros((31, 41))
        p0_ext[:30, :40], p0_ext[30, :40], p0_ext[:30, 40] = p0, b - p0.sum(0), a - p0.sum(1)
        a_ext, b_ext = np.r_[a, 1.0 - m], np.r_[b, 1.0 - m]
        exact = float((p0 * c).sum())
        return exact, exact + eps * _generalised_kl(p0_ext, np.outer(a_ext, b_ext))

    lo, hi = band(mass)
    tc, value = float(out.transport_cost), float(out.cost)
    assert lo - slack <= tc <= value + slack, (lo, tc, value)
    assert lo <= value <= hi + slack, (lo, value, hi)
    np.testing.assert_allclose(float(out.mass), mass, atol=1e-3)  # L1 marginal error <= tol
    plan = np.asarray(out.plan())
    assert np.all(plan.sum(1) <= a + 1e-3) and np.all(plan.sum(0) <= b + 1e-3)
    # the oracle can fail: POT's exact problem for 0.1 more or less mass puts the value outside its band
    for wrong in (mass - 0.1, mass + 0.1):
        if wrong <= 1.0:
            lo_w, hi_w = band(wrong)
            assert not (lo_w <= value <= hi_w + slack and lo_w - slack <= tc <= value + slack)


def _p2ot_oracle(cost, rho, eps=0.1, lam=1.0):
    """The P^2OT problem of the _partial module docstring, solved independently of Sinkhorn: L-BFGS on its
    semi-dual in the K + 1 column potentials g (row potentials f eliminated in closed form),

        H(g) = <a, f(g)> + (1 - rho) g_dummy - lam sum_k b_k (exp(-g_k / lam) - 1),
        f_i(g) = -eps log sum_j b_j exp((g_j - C_ij) / eps),

    with a = 1/N, b = (rho/K, ..., rho/K, 1 - rho). Returns the plan Q_ij = a_i b_j exp((f_i + g_j - C_ij)/eps),
    its primal objective <Q, C> + eps KL(Q || a b) + lam KL(Q^T 1 || rho/K) and the dual value H (the gap
    certifies the oracle)."""
    n, k = cost.shape
    c_ext = np.c_[cost, np.zeros(n)]
    a, b = np.full(n, 1.0 / n), np.r_[np.full(k, rho / k), 1.0 - rho]
    with np.errstate(divide="ignore"):
        log_b = np.log(b)

    def plan(g):
        f = -eps * logsumexp(log_b + (g - c_ext) / eps, axis=1)
        return f, np.exp(np.log(a)[:, None] + log_b + (f[:, None] + g - c_ext) / eps)

    def neg_h(g):
        f, q = plan(g)
        h = a @ f + (1.0 - rho) * g[k] - lam * np.sum(b[:k] * np.expm1(-g[:k] / lam))
        dh = -q.sum(0)
        dh[:k] += b[:k] * np.exp(-g[:k] / lam)
        dh[k] += 1.0 - rho
        return -h, -dh

    res = minimize(neg_h, np.zeros(k + 1), jac=True, method="L-BFGS-B",
                   options=dict(maxiter=10000, ftol=1e-15, gtol=1e-13))
    q = plan(res.x)[1]
    ref, s = np.outer(a, b), q[:, :k].sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_plan = np.sum(xlogy(q, q) - xlogy(q, ref) - q + ref)
    primal = np.sum(q * c_ext) + eps * kl_plan + lam * np.sum(xlogy(s, s * k / rho) - s + rho / k)
    return q, float(primal), float(-res.fun)


def _imbalanced_log_probs():
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(3), [14, 7, 3])
    return np.asarray(jax.nn.log_softmax(2.0 * np.eye(3)[truth] + rng.normal(size=(24, 3))))


@pytest.mark.parametrize("rho", [0.4, 0.8, 1.0])
def test_progressive_partial_ot_defaults_solve_the_documented_problem(x64, rho):
    """Oracle: _p2ot_oracle (semi-dual L-BFGS; its primal-dual gap is checked to 1e-8). At the defaults
    epsilon = 0.1, reg_kl = 1, tol = 1e-3 (L1 marginal error), the plan's L1 error is of the order of the
    marginal error: allowed 3 tol (measured 0.9e-3 to 1.5e-3); the dual value is below the optimum
    (weak duality) by a second-order amount, allowed 1e-4 (measured <= 1.3e-6)."""
    lp = _imbalanced_log_probs()
    q_star, primal, dual = _p2ot_oracle(-lp, rho)
    assert abs(primal - dual) < 1e-8
    out = jax.jit(lambda c: ot.progressive_partial_ot(c, mass=rho))(-lp)
    assert bool(out.converged) and float(out.error) <= 1e-3
    q = np.asarray(out.plan())
    assert np.abs(q - q_star).sum() < 3e-3, np.abs(q - q_star).sum()
    assert primal - 1e-4 < float(out.cost) <= primal + 1e-9, (float(out.cost), primal)
    np.testing.assert_allclose(q[:, 3].sum(), 1.0 - rho, atol=1e-3)  # the dummy column: untransported mass
    # the oracle can fail: the same problem with reg_kl = 2 or epsilon = 0.13 is outside the tolerance
    for wrong in (dict(lam=2.0), dict(eps=0.13)):
        assert np.abs(q - _p2ot_oracle(-lp, rho, **wrong)[0]).sum() > 3e-3


@pytest.mark.parametrize("rho", [0.4, 0.8, 1.0])
def test_pseudo_labels_defaults_follow_the_oracle_plan(x64, rho):
    """pseudo_labels' docstring: labels = argmax_k Q_ik, weights = N sum_k Q_ik, selected = the round(rho N)
    largest weights, for the P^2OT plan Q at the defaults epsilon = 0.1, reg_kl = 1.0; Q from _p2ot_oracle.
    Margins (measured): weights within 2e-3 of the oracle's; the oracle's argmax margin N (Q_(1) - Q_(2)) is
    >= 4.8e-3 against a largest plan-entry error of 7.7e-5 N = 1.9e-3; the gap of the oracle weights at the
    selection cut is >= 0.029."""
    lp = _imbalanced_log_probs()
    n = lp.shape[0]
    q_star = _p2ot_oracle(-lp, rho)[0][:, :3]
    out = jax.jit(lambda lp: ot.pseudo_labels(lp, mass=rho))(lp)
    w_star = n * q_star.sum(1)
    np.testing.assert_allclose(out.weights, w_star, atol=5e-3)
    np.testing.assert_array_equal(out.labels, q_star.argmax(1))
    m = round(rho * n)
    np.testing.assert_array_equal(out.selected, np.isin(np.arange(n), np.argsort(-w_star)[:m]))
    np.testing.assert_allclose(out.plan, q_star, atol=3e-3)
    # the oracle can fail: the plan under reg_kl = 0.1 labels or selects differently
    q_wrong = _p2ot_oracle(-lp, rho, lam=0.1)[0][:, :3]
    assert np.any(q_wrong.argmax(1) != q_star.argmax(1)) or np.abs(n * q_wrong.sum(1) - w_star).max() > 5e-3
