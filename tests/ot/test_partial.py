"""Oracle tests of partial_ot, progressive_partial_ot and pseudo_labels at their default settings (issue 10.8)."""

import jax
import numpy as np
import ot as pot
import pytest

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
