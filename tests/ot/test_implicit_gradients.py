"""Implicit plan gradients (Sinkhorn balanced/unbalanced/zero weights, partial OT, sparse and quadratic OT) against
autodiff of an unrolled, converged solve written here and against central finite differences.

Oracle accuracy: the unrolled log-domain Sinkhorn runs 3000 iterations at eps = 0.05 x mean cost on 40 x 30
points, converged to ~1e-15 in float64, so its gradient is exact to rounding. The implicit gradient must match to
1e-9 in float64 (measured ~3e-13 balanced, ~7e-14 unbalanced) and to 1e-4 in float32 (default tol 1e-3 would
limit the answer itself, so both runs ask for the tightest tol their dtype reaches)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes import ot
from jaxbayes._implicit import implicit_tol

N, M = 40, 30


def _problem(dtype):
    x = jax.random.normal(jax.random.key(0), (N, 2)).astype(dtype)
    y = (jax.random.normal(jax.random.key(1), (M, 2)) + 0.5).astype(dtype)
    probe = jax.random.normal(jax.random.key(2), (N, M)).astype(dtype)
    c = ot.SqEuclidean().pairwise(x, y)
    return c, probe, 0.05 * jnp.mean(c)


def _unrolled_plan(c, a, b, eps, tau=1.0, iters=3000):
    """Plain log-domain Sinkhorn (KL-relaxed updates f <- tau softmin when tau < 1), differentiated by autodiff."""
    la, lb = jnp.log(a), jnp.log(b)

    def body(_, fg):
        f, g = fg
        f = -tau * eps * jax.nn.logsumexp(lb[None] + (g[None] - c) / eps, axis=1)
        g = -tau * eps * jax.nn.logsumexp(la[:, None] + (f[:, None] - c) / eps, axis=0)
        return f, g

    f, g = jax.lax.fori_loop(0, iters, body, (jnp.zeros(c.shape[0], c.dtype), jnp.zeros(c.shape[1], c.dtype)))
    return jnp.exp(la[:, None] + lb[None] + (f[:, None] + g[None] - c) / eps)


def _rel(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


@pytest.mark.parametrize("tau", [1.0, 0.7])
def test_sinkhorn_plan_gradient_matches_unrolled_float64(x64, tau):
    c, probe, eps = _problem(jnp.float64)
    a, b = jnp.full(N, 1 / N), jnp.full(M, 1 / M)
    ref = jax.grad(lambda c: jnp.sum(_unrolled_plan(c, a, b, eps, tau) * probe))(c)
    ours = jax.jit(jax.grad(lambda c: jnp.sum(ot.sinkhorn(c, a, b, epsilon=eps, relative_epsilon=False, tau_a=tau,
                                                        tau_b=tau, tol=1e-13, max_iterations=5000).plan()
                                              * probe)))(c)
    assert _rel(ours, ref) < 1e-9


def test_zero_weight_points_need_no_ridge(x64):
    c, probe, eps = _problem(jnp.float64)
    a = jnp.full(N, 1.0).at[:5].set(0.0)
    a = a / a.sum()
    b = jnp.full(M, 1 / M)
    keep = slice(5, None)
    ref = jax.grad(lambda cc: jnp.sum(_unrolled_plan(cc, a[keep], b, eps) * probe[keep]))(c[keep])
    ours = jax.jit(jax.grad(lambda c: jnp.sum(ot.sinkhorn(c, a, b, epsilon=eps, relative_epsilon=False, tol=1e-13,
                                                        max_iterations=5000).plan() * probe)))(c)
    assert bool(jnp.all(jnp.isfinite(ours)))
    np.testing.assert_array_equal(ours[:5], 0.0)  # zero-weight rows carry no mass and get no gradient
    assert _rel(ours[keep], ref) < 1e-9


def test_sinkhorn_plan_gradient_float32():
    c, probe, eps = _problem(jnp.float32)
    a, b = jnp.full(N, 1 / N, jnp.float32), jnp.full(M, 1 / M, jnp.float32)
    with jax.enable_x64(True):
        cc = jnp.asarray(np.asarray(c), jnp.float64)
        ref = np.asarray(jax.grad(lambda c: jnp.sum(_unrolled_plan(c, jnp.asarray(a, jnp.float64),
                                                                   jnp.asarray(b, jnp.float64), float(eps))
                                                    * jnp.asarray(np.asarray(probe), jnp.float64)))(cc))
    ours = jax.jit(jax.grad(lambda c: jnp.sum(ot.sinkhorn(c, a, b, epsilon=eps, relative_epsilon=False, tol=1e-6,
                                                        max_iterations=5000).plan() * probe)))(c)
    assert ours.dtype == jnp.float32
    assert _rel(np.asarray(ours, np.float64), ref) < 1e-4


def test_partial_ot_gradient_matches_finite_differences(x64):
    c, probe, _ = _problem(jnp.float64)
    c, probe = c[:12, :10], probe[:12, :10]

    def loss(c):
        return jnp.sum(ot.partial_ot(c, mass=0.6, epsilon=0.05, tol=1e-13, max_iterations=20000).plan() * probe)

    d = jax.random.normal(jax.random.key(7), c.shape)
    h = 1e-6
    value = jax.jit(loss)
    fd = (value(c + h * d) - value(c - h * d)) / (2 * h)
    # central differences: truncation error measured 3.8e-3 (h^2 scaling) at h = 1e-3, so ~4e-11 relative here;
    # rounding ~1e-16 |value| / h ~ 1e-11 absolute, ~1e-8 relative to this 1.6e-3 derivative
    np.testing.assert_allclose(jnp.vdot(jax.jit(jax.grad(loss))(c), d), fd, rtol=1e-7)


@pytest.mark.parametrize("formulation", ["dual", "semi_dual"])
def test_quadratic_ot_gradient_at_default_ridge(x64, formulation):
    """A dense (well-posed) quadratic OT plan: the default (ridge 0, CG tol from tol) matches central differences
    to 1e-8; the former default ridge 1e-6 was off by ~1e-6."""
    c = jax.random.uniform(jax.random.key(0), (6, 5))
    probe = jax.random.normal(jax.random.key(2), (6, 5))

    def loss(c):
        return jnp.sum(ot.quadratic_ot(c, gamma=3.0, formulation=formulation, tol=1e-13,
                                       max_iterations=5000).plan() * probe)

    g = jax.jit(jax.grad(loss))(c)
    value = jax.jit(loss)
    h = 1e-5
    fd = np.array([[(value(c.at[i, j].add(h)) - value(c.at[i, j].add(-h))) / (2 * h) for j in range(5)]
                   for i in range(6)])
    assert _rel(g, jnp.asarray(fd)) < 1e-8


def test_cg_tolerance_follows_the_forward_solve():
    assert implicit_tol(None, 1e-13, np.float64) == 1e-13
    assert implicit_tol(None, 1e-3, np.float64) == 1e-5
    assert implicit_tol(None, 1e-13, np.float32) == pytest.approx(10 * np.finfo(np.float32).eps)
    assert implicit_tol(1e-8, 1e-3, np.float32) == 1e-8
    with pytest.raises(ValueError, match="cg_tol"):
        implicit_tol(0.0, 1e-3, np.float64)
    with pytest.raises(ValueError, match="cg_ridge"):
        ot.sinkhorn(jnp.ones((2, 2)), cg_ridge=-1.0)
