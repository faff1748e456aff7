"""Exact OT (auction with epsilon scaling) against scipy's linear_sum_assignment and POT's emd2."""

import jax
import jax.numpy as jnp
import numpy as np
import ot as pot
import pytest
from scipy.optimize import linear_sum_assignment

from jaxbayes import ot

exact_ot = jax.jit(ot.exact_ot, static_argnames=("tol", "max_iterations"))


def _cost(n, seed=0, d=2):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    return ((x[:, None] - y[None]) ** 2).sum(-1)


@pytest.mark.parametrize("n", [1, 2, 7, 50, 200])
def test_equals_scipy_assignment_and_pot_emd2(x64, n):
    c = _cost(n, seed=n)
    rows, cols = linear_sum_assignment(c)
    out = exact_ot(c)
    assert bool(out.converged)
    np.testing.assert_array_equal(np.asarray(out.assignment), cols)
    np.testing.assert_allclose(float(out.cost), c[rows, cols].mean(), rtol=0, atol=1e-9)
    u = np.full(n, 1.0 / n)
    np.testing.assert_allclose(float(out.transport_cost), pot.emd2(u, u, c), rtol=0, atol=1e-9)
    plan = np.asarray(out.plan())
    np.testing.assert_allclose(plan.sum(0), u, atol=1e-15)
    np.testing.assert_allclose(plan.sum(1), u, atol=1e-15)


def test_dual_certificate(x64):
    """f, g are dual feasible and their value is within eps_final = tol * spread / n of the cost."""
    n, tol = 60, 1e-9
    c = _cost(n, seed=3)
    out = exact_ot(c, tol=tol)
    f, g = np.asarray(out.f), np.asarray(out.g)
    assert np.all(f[:, None] + g[None, :] <= c + 1e-12)
    gap = float(out.cost) - (f.mean() + g.mean())
    np.testing.assert_allclose(float(out.error), gap, atol=1e-13)
    assert 0.0 <= gap <= tol * (c.max() - c.min()) / n * (1 + 1e-6)


def test_integer_costs_exact_with_ties(x64):
    """Many optimal assignments (ties): the value is still the LP optimum exactly."""
    rng = np.random.default_rng(1)
    c = rng.integers(0, 4, size=(40, 40)).astype(np.float64)
    rows, cols = linear_sum_assignment(c)
    out = exact_ot(c)
    assert bool(out.converged)
    assert float(out.cost) * 40 == pytest.approx(c[rows, cols].sum(), abs=1e-9)
    assert sorted(np.asarray(out.assignment).tolist()) == list(range(40))


def test_float32_and_pointcloud():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 3)).astype(np.float32), rng.normal(size=(30, 3)).astype(np.float32)
    c = ((x[:, None] - y[None]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(c)
    out = ot.exact_ot(ot.pointcloud(x, y))
    assert out.cost.dtype == jnp.float32 and bool(out.converged)
    np.testing.assert_allclose(float(out.cost), c[rows, cols].mean(), rtol=1e-5)


def test_vmap_and_gradient(x64):
    cs = np.stack([_cost(20, seed=s) for s in range(3)])
    outs = jax.vmap(ot.exact_ot)(jnp.asarray(cs))
    for c, cost in zip(cs, outs.cost, strict=True):
        r, k = linear_sum_assignment(c)
        np.testing.assert_allclose(float(cost), c[r, k].mean(), atol=1e-9)
    # envelope theorem: d OT / d C is the optimal plan
    grad = jax.grad(lambda c: ot.exact_ot(c).cost)(jnp.asarray(cs[0]))
    np.testing.assert_allclose(grad, ot.exact_ot(cs[0]).plan(), atol=0)


def test_bad_input():
    with pytest.raises(ValueError, match="as many sources as targets"):
        ot.exact_ot(jnp.ones((3, 4)))
    with pytest.raises(ValueError, match="uniform weights a"):
        ot.exact_ot(jnp.ones((3, 3)), jnp.array([0.5, 0.25, 0.25]))
    with pytest.raises(ValueError, match="tol must be finite and > 0"):
        ot.exact_ot(jnp.ones((3, 3)), tol=0.0)
