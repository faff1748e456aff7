"""Sinkhorn against exact OT (scipy), closed forms, POT/ott-jax, gradient identities and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import ot as pot
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.stats import norm

from jaxbayes import ot

_STATIC = ("relative_epsilon", "tol", "max_iterations", "min_iterations", "fixed_iterations",
           "epsilon_scaling", "cg_iterations", "cg_ridge", "cg_tol")
# jit once per configuration: eager calls would compile the solver loop on every call.
sinkhorn = jax.jit(ot.sinkhorn, static_argnames=_STATIC)


def _clouds(n=30, m=25, d=2, seed=0):
    kx, ky = jax.random.split(jax.random.key(seed))
    return jax.random.normal(kx, (n, d)), jax.random.normal(ky, (m, d)) + 1.0


def test_eps_to_zero_matches_exact_assignment(x64):
    x, y = _clouds(30, 30)
    c = np.asarray(ot.SqEuclidean().pairwise(x, y))
    rows, cols = linear_sum_assignment(c)
    exact = c[rows, cols].mean()
    gaps = []
    for eps in (1e-1, 1e-2, 1e-3):
        out = sinkhorn(ot.pointcloud(x, y), epsilon=eps, epsilon_scaling=0.9, tol=1e-5,
                          max_iterations=20000)
        assert bool(out.converged)
        gaps.append(float(out.transport_cost) - exact)
    assert gaps[0] > gaps[1] > gaps[2] >= -1e-9  # monotone convergence from above
    assert gaps[2] < 2e-3 * exact
    plan = np.asarray(out.plan()) * 30
    np.testing.assert_array_equal(plan.argmax(axis=1)[rows], cols)  # rounds to the optimal permutation


@pytest.mark.parametrize("eps", [0.2, 1.0])
def test_entropic_gaussians_closed_form_on_grid(x64, eps):
    grid = np.linspace(-10.0, 12.0, 800)
    a = norm.pdf(grid, 0.0, 1.0)
    b = norm.pdf(grid, 1.0, 2.0)
    out = sinkhorn(ot.pointcloud(grid[:, None]), a / a.sum(), b / b.sum(), epsilon=eps,
                      relative_epsilon=False, tol=1e-9, max_iterations=20000)
    want = ot.analytic.entropic_ot_gaussians([0.0], [1.0], [1.0], [4.0], epsilon=eps)
    np.testing.assert_allclose(out.cost, want, rtol=1e-5)
    np.testing.assert_allclose(out.primal_cost, want, rtol=1e-5)


def test_balanced_matches_ott_and_marginals(x64):
    from ott.geometry import pointcloud as ott_pc
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import sinkhorn as ott_sinkhorn

    x, y = _clouds()
    a = jax.random.uniform(jax.random.key(2), (30,)) + 0.1
    a = a / a.sum()
    solver = ott_sinkhorn.Sinkhorn(threshold=1e-12, max_iterations=10000)
    ref = jax.jit(lambda x, y, a: solver(linear_problem.LinearProblem(ott_pc.PointCloud(x, y, epsilon=0.1), a,
                                                                      jnp.ones(25) / 25)))(x, y, a)
    out = sinkhorn(ot.pointcloud(x, y), a, epsilon=0.1, relative_epsilon=False, tol=1e-12,
                      max_iterations=10000)
    np.testing.assert_allclose(out.plan(), ref.matrix, atol=1e-10)
    np.testing.assert_allclose(out.cost, ref.reg_ot_cost, rtol=1e-9)
    rows, cols = out.marginals()
    np.testing.assert_allclose(rows, a, atol=1e-10)
    np.testing.assert_allclose(cols, jnp.ones(25) / 25, atol=1e-10)
    assert float(out.error) < 1e-10


@pytest.mark.parametrize("chunk", [None, 7])
def test_unbalanced_vector_tau_matches_pot(x64, chunk):
    x, y = _clouds()
    a = jnp.ones(30) / 30
    b = jnp.ones(25) / 25 * 1.3
    eps = 0.1
    tau_b = jnp.linspace(0.5, 0.9, 25)
    rho_a, rho_b = eps * 0.8 / 0.2, np.asarray(eps * tau_b / (1 - tau_b))
    c = np.asarray(ot.SqEuclidean().pairwise(x, y))
    out = sinkhorn(ot.pointcloud(x, y, chunk_size=chunk), a, b, epsilon=eps, relative_epsilon=False,
                      tau_a=0.8, tau_b=tau_b, tol=1e-12, max_iterations=10000)
    assert bool(out.converged)
    # POT's KL-reference unbalanced Sinkhorn (scalar reg_m per side): check per-coordinate tau by the
    # fixed-point equations instead, and scalar tau against POT.
    rows, cols = out.marginals()
    np.testing.assert_allclose(rows, a * np.exp(-out.f / rho_a), rtol=1e-9)
    np.testing.assert_allclose(cols, b * np.exp(-out.g / rho_b), rtol=1e-9)
    scalar = sinkhorn(ot.pointcloud(x, y, chunk_size=chunk), a, b, epsilon=eps, relative_epsilon=False,
                         tau_a=0.8, tau_b=0.6, tol=1e-12, max_iterations=10000)
    ref = pot.unbalanced.sinkhorn_unbalanced(np.asarray(a), np.asarray(b), c, eps, (rho_a, eps * 0.6 / 0.4),
                                             reg_type="kl", stopThr=1e-14, numItermax=100000)
    np.testing.assert_allclose(scalar.plan(), ref, atol=1e-12)
    np.testing.assert_allclose(scalar.cost, scalar.primal_cost, rtol=1e-9)  # strong duality


def test_vector_tau_of_ones_is_balanced(x64):
    x, y = _clouds()
    one = sinkhorn(ot.pointcloud(x, y), tau_b=jnp.ones(25), tol=1e-10)
    bal = sinkhorn(ot.pointcloud(x, y), tol=1e-10)
    np.testing.assert_allclose(one.plan(), bal.plan(), atol=1e-10)


def test_matrix_free_equals_dense(x64):
    x, y = _clouds(41, 37, d=3)
    dense = sinkhorn(ot.pointcloud(x, y), tol=1e-9)
    free = sinkhorn(ot.pointcloud(x, y, chunk_size=8), tol=1e-9)
    assert not free.geom.is_matrix_free or free.geom.cost_matrix is None
    np.testing.assert_allclose(free.f, dense.f, atol=1e-10)
    np.testing.assert_allclose(free.g, dense.g, atol=1e-10)
    np.testing.assert_allclose(free.cost, dense.cost, rtol=1e-12)
    v = jnp.arange(37.0)
    np.testing.assert_allclose(free.apply(v), dense.plan() @ v, rtol=1e-10)
    np.testing.assert_allclose(free.apply(jnp.ones(41), axis=0), dense.plan().sum(0), rtol=1e-10)


def test_sqeuclidean_gradient_identity(x64):
    """d OT_eps / d x_i = 2 (a_i x_i - sum_j P_ij y_j) for the squared Euclidean cost (fixed epsilon)."""
    x, y = _clouds()
    a = jnp.linspace(1.0, 2.0, 30)
    a = a / a.sum()
    kw = dict(epsilon=0.1, relative_epsilon=False, tol=1e-11, max_iterations=10000)
    grad = jax.jit(jax.grad(lambda x: sinkhorn(ot.pointcloud(x, y, chunk_size=8), a, **kw).cost))(x)
    out = sinkhorn(ot.pointcloud(x, y), a, **kw)
    np.testing.assert_allclose(grad, 2 * (a[:, None] * x - out.plan() @ y), atol=1e-9)


@pytest.mark.parametrize(("tau", "chunk"), [(1.0, None), (1.0, 8), (0.7, 8)])
def test_implicit_gradients_match_finite_differences(x64, tau, chunk):
    x, y = _clouds(20, 15)
    w1 = jnp.linspace(0.0, 1.0, 20)
    w2 = jnp.full((15,), jnp.sum(w1) / 15)  # gauge-invariant combination of f and g
    probe = jnp.sin(jnp.arange(15.0))

    def loss(x):
        out = sinkhorn(ot.pointcloud(x, y, chunk_size=chunk), epsilon=0.2, tau_a=tau, tau_b=tau,
                          tol=1e-12, max_iterations=10000)
        return jnp.dot(out.f, w1) + jnp.dot(out.g, w2) + 10 * jnp.sum(out.apply(probe) ** 2) + out.cost

    d = jax.random.normal(jax.random.key(5), x.shape)
    h = 1e-5
    value = jax.jit(loss)
    fd = (value(x + h * d) - value(x - h * d)) / (2 * h)
    np.testing.assert_allclose(jnp.vdot(jax.jit(jax.grad(loss))(x), d), fd, rtol=1e-5)


def test_cost_gradient_in_weights_and_epsilon(x64):
    x, y = _clouds(12, 10)
    b = jnp.ones(10) / 10

    def cost(a, eps):
        a = a / jnp.sum(a)
        return sinkhorn(ot.pointcloud(x, y), a, b, epsilon=eps, tol=1e-12, max_iterations=10000).cost

    a0 = jnp.linspace(1.0, 2.0, 12)
    ga, ge = jax.jit(jax.grad(cost, argnums=(0, 1)))(a0, 0.3)
    cost = jax.jit(cost)
    da = jnp.cos(jnp.arange(12.0))
    h = 1e-6
    np.testing.assert_allclose(jnp.vdot(ga, da), (cost(a0 + h * da, 0.3) - cost(a0 - h * da, 0.3)) / (2 * h),
                               rtol=1e-5)
    np.testing.assert_allclose(ge, (cost(a0, 0.3 + h) - cost(a0, 0.3 - h)) / (2 * h), rtol=1e-5)


@pytest.mark.parametrize("chunk", [None, 8])
def test_zero_weight_points_give_finite_outputs(chunk):
    x, y = _clouds()
    a = jnp.ones(30).at[:5].set(0.0) / 25
    b = jnp.ones(25).at[-3:].set(0.0) / 22
    out = sinkhorn(ot.pointcloud(x, y, chunk_size=chunk), a, b)
    assert bool(out.converged)
    for leaf in (out.f, out.g, out.cost, out.primal_cost, out.error):
        assert np.all(np.isfinite(leaf))
    plan = out.plan()
    assert float(jnp.abs(plan[:5]).max()) == 0.0 and float(jnp.abs(plan[:, -3:]).max()) == 0.0
    grad = jax.jit(jax.grad(lambda x: sinkhorn(ot.pointcloud(x, y), a, b).cost))(x)
    assert np.all(np.isfinite(grad))


def test_dense_absorbed_kernel_small_epsilon_float32():
    """Dense solves iterate on a stored kernel with absorbed potentials; at eps = 0.005 * mean cost in float32
    the scalings outgrow the float32 range many times (re-absorption). Same iterates as the log-domain
    matrix-free loop, same plan as POT's float64 log-domain solver."""
    x, y = _clouds(40, 40)
    a = jnp.ones(40).at[0].set(0.0) / 39
    b = jnp.ones(40) / 40
    kw = dict(epsilon=0.005, tol=1e-3, max_iterations=3000)
    dense = sinkhorn(ot.pointcloud(x, y), a, b, **kw)
    free = sinkhorn(ot.pointcloud(x, y, chunk_size=16), a, b, **kw)
    assert bool(dense.converged) and bool(free.converged)
    assert abs(int(dense.n_iters) - int(free.n_iters)) <= 1
    c = np.asarray(ot.SqEuclidean().pairwise(x, y), np.float64)[1:]  # POT without the zero-weight point
    ref = pot.bregman.sinkhorn_log(np.asarray(a, np.float64)[1:], np.asarray(b, np.float64), c,
                                   float(dense.epsilon), stopThr=1e-7, numItermax=20000)
    plan = np.asarray(dense.plan(), np.float64)
    assert float(np.abs(plan[0]).max()) == 0.0
    np.testing.assert_allclose(dense.transport_cost, np.sum(ref * c), rtol=2e-3)
    assert float(np.abs(plan[1:] - ref).sum()) < 1e-2  # both stop at an L1 marginal error of 1e-3
    np.testing.assert_allclose(plan, free.plan(), atol=1e-5)


def test_float32_agrees_with_float64():
    x, y = _clouds()
    out32 = sinkhorn(ot.pointcloud(x, y), epsilon=0.05, tol=1e-4)
    plan32 = out32.plan()
    with jax.enable_x64(True):
        out64 = sinkhorn(ot.pointcloud(jnp.asarray(x, jnp.float64), jnp.asarray(y, jnp.float64)),
                         epsilon=0.05, tol=1e-4)
        plan64 = out64.plan()
    assert out32.cost.dtype == jnp.float32 and out64.cost.dtype == jnp.float64
    np.testing.assert_allclose(out32.cost, out64.cost, rtol=1e-5)
    np.testing.assert_allclose(plan32, plan64, atol=1e-6)


def test_warm_start_and_fixed_iterations(x64):
    x, y = _clouds()
    cold = sinkhorn(ot.pointcloud(x, y), epsilon=0.01, tol=1e-8, max_iterations=5000)
    warm = sinkhorn(ot.pointcloud(x, y), epsilon=0.01, tol=1e-8, max_iterations=5000,
                       init=(cold.f, cold.g))
    assert int(warm.n_iters) <= 2 < int(cold.n_iters)
    np.testing.assert_allclose(warm.cost, cold.cost, rtol=1e-10)
    fixed = sinkhorn(ot.pointcloud(x, y), epsilon=0.01, max_iterations=7, fixed_iterations=True)
    assert int(fixed.n_iters) == 7 and np.all(np.asarray(fixed.errors) >= 0)
    errors = np.asarray(cold.errors)[: int(cold.n_iters)]
    assert errors[-1] <= 1e-8 < errors[1] and np.all(np.asarray(cold.errors)[int(cold.n_iters):] == -1)


def test_epsilon_scaling_converges_where_plain_is_slow(x64):
    x, y = _clouds()
    plain = sinkhorn(ot.pointcloud(x, y), epsilon=3e-3, tol=1e-4, max_iterations=800)
    scaled = sinkhorn(ot.pointcloud(x, y), epsilon=3e-3, tol=1e-4, max_iterations=800,
                      epsilon_scaling=0.8)
    assert not bool(plain.converged) and bool(scaled.converged)


def test_relative_epsilon_is_mean_cost(x64):
    x, y = _clouds()
    out = sinkhorn(ot.pointcloud(x, y, chunk_size=8), epsilon=0.05)
    np.testing.assert_allclose(out.epsilon, 0.05 * np.mean(ot.SqEuclidean().pairwise(x, y)), rtol=1e-12)
    cos = ot.pointcloud(x, y, cost="cosine", chunk_size=8)
    np.testing.assert_allclose(cos.cost_scale(), np.mean(ot.Cosine().pairwise(x, y)), rtol=1e-12)


def test_costs_and_ott_interop(x64):
    from ott.geometry import costs as ott_costs
    from ott.geometry import pointcloud as ott_pc

    x, y = _clouds(6, 5, d=3)
    diff = np.asarray(x)[:, None] - np.asarray(y)[None]
    dist = np.sqrt((diff**2).sum(-1))
    np.testing.assert_allclose(ot.Euclidean(p=1.5).pairwise(x, y), dist**1.5, rtol=1e-12)
    cosine = 1 - np.asarray(x) @ np.asarray(y).T / np.outer(np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1))
    np.testing.assert_allclose(ot.Cosine().pairwise(x, y), cosine, atol=1e-12)
    user = ot.pointcloud(x, y, cost=lambda u, v: jnp.sum(jnp.abs(u - v)))
    np.testing.assert_allclose(user.cost.pairwise(x, y), np.abs(diff).sum(-1), rtol=1e-12)
    mine = sinkhorn(ot.pointcloud(x, y, cost="euclidean"), tol=1e-10)
    via_ott_cost = sinkhorn(ot.pointcloud(x, y, cost=ott_costs.Euclidean()), tol=1e-10)
    via_ott_geom = ot.sinkhorn(ott_pc.PointCloud(x, y, cost_fn=ott_costs.Euclidean()), tol=1e-10)
    via_matrix = sinkhorn(dist, tol=1e-10)
    for other in (via_ott_cost, via_ott_geom, via_matrix):
        np.testing.assert_allclose(other.cost, mine.cost, rtol=1e-9)


def test_sinkhorn_divergence(x64):
    x, y = _clouds(20, 20)
    divergence = jax.jit(ot.sinkhorn_divergence, static_argnames=("tol", "chunk_size"))
    same = divergence(x, x, tol=1e-9)
    diff = divergence(x, y, tol=1e-9, chunk_size=8)
    assert abs(float(same.divergence)) < 1e-9
    assert float(diff.divergence) > 0.1 and bool(diff.converged)
    # debiasing: unlike OT_eps, S_eps(x, x + t) -> 0 as t -> 0, and grows with the shift
    shifts = [float(divergence(x, x + t, tol=1e-9).divergence) for t in (0.1, 0.5, 1.0)]
    assert 0 < shifts[0] < shifts[1] < shifts[2]
    grad = jax.jit(jax.grad(lambda y: ot.sinkhorn_divergence(x, y, tol=1e-9).divergence))(y)
    assert np.all(np.isfinite(grad))
