"""Matrix-free Sinkhorn on point clouds sharded over 8 devices equals the unsharded solve.

``ot.sinkhorn(ot.pointcloud(x, y, chunk_size=c))`` under ``jax.jit`` with ``x`` and/or ``y`` split along the
``data`` axis of an Explicit or an Auto mesh (``jax.make_mesh``, no mesh context): the potentials, costs, plan
products and iteration counts equal the single-device solve to float32 rounding (balanced, unbalanced,
per-point relaxations, partial OT, gradients). Oracle for the sharded solve itself: a dense float64
log-domain Sinkhorn in numpy/scipy with the same updates and stopping rule.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from scipy.special import logsumexp

from jaxbayes import ot

# 512 = 8 x 64 rows of x; 352 = 8 x 44 rows of y (unsharded: 2 full tiles of 128 columns and one padded)
N, M, CHUNK, EPS = 512, 352, 128, 0.05


def _mesh(kind):
    assert jax.device_count() == 8, "tests expect 8 simulated CPU devices"
    return jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto if kind == "auto" else AxisType.Explicit,))


@pytest.fixture(params=["explicit", "auto"])
def mesh(request):
    return _mesh(request.param)


def rows(v, mesh):
    v = jnp.asarray(v)
    return jax.device_put(v, NamedSharding(mesh, P("data", *([None] * (v.ndim - 1)))))


@functools.cache
def data(n=N, m=M):
    """Two 2-D Gaussian clouds, non-uniform weights (mass 1 each), per-point relaxations, test vectors."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2))
    y = 0.8 * rng.normal(size=(m, 2)) + 0.5
    a, b = rng.uniform(0.5, 1.5, n), rng.uniform(0.5, 1.5, m)
    out = dict(x=x, y=y, a=a / a.sum(), b=b / b.sum(), tau_a=np.linspace(0.5, 1.0, n),
               tau_b=np.linspace(0.8, 0.95, m), u=np.stack([np.sin(x[:, 1]), np.ones(n)], 1),
               v=np.stack([np.cos(y[:, 0]), np.ones(m)], 1))
    return {k: np.asarray(w, np.float32) for k, w in out.items()}


def outputs(out):
    return dict(f=out.f, g=out.g, cost=out.cost, transport_cost=out.transport_cost, n_iters=out.n_iters,
                plan_v=out.apply(data()["v"]), plan_t_u=out.apply(data()["u"], axis=0))


def balanced(x, y):
    return outputs(ot.sinkhorn(ot.pointcloud(x, y, chunk_size=CHUNK), epsilon=EPS, tol=1e-4))


def unbalanced(x, y, a, b, tau_a, tau_b):
    return outputs(ot.sinkhorn(ot.pointcloud(x, y, chunk_size=CHUNK), a, b, epsilon=EPS, tol=1e-4,
                               tau_a=tau_a, tau_b=tau_b))


@functools.cache
def unsharded(fn, *names):
    """The single-device result of ``fn`` on the named data (numpy leaves), computed once per module."""
    d = data()
    return jax.tree.map(np.asarray, jax.jit(fn)(*(d[k] if isinstance(k, str) else k for k in names)))


def assert_close(got, want):
    """Float32 rounding: a few hundred ulps of each output's scale (blocks are combined in another order on
    8 devices, and the rounding difference passes through the iterations); iteration counts equal."""
    for key, w in want.items():
        g = np.asarray(got[key])
        if key == "n_iters":
            assert int(g) == int(w), (key, int(g), int(w))
            continue
        scale = max(1.0, float(np.max(np.abs(w))))
        np.testing.assert_allclose(g, w, rtol=0, atol=256 * np.finfo(np.float32).eps * scale, err_msg=key)


def assert_split(v, mesh, split):
    """``v`` lives on all 8 devices; on an Explicit mesh its type says whether its rows are split."""
    assert len(v.sharding.device_set) == 8
    if mesh.axis_types[0] == AxisType.Explicit:
        assert (v.sharding.spec[0] == "data") == split, v.sharding.spec


@pytest.mark.parametrize("which", ["x", "y", "both"])
def test_balanced_equals_unsharded(mesh, which):
    d = data()
    x = rows(d["x"], mesh) if which in ("x", "both") else d["x"]
    y = rows(d["y"], mesh) if which in ("y", "both") else d["y"]
    got = jax.jit(balanced)(x, y)
    assert_close(got, unsharded(balanced, "x", "y"))
    # the potentials stay where their points are (a ring when both are split): no gathered cloud
    assert_split(got["f"], mesh, which != "y")
    assert_split(got["g"], mesh, which != "x")


def test_unbalanced_equals_unsharded(mesh):
    d = data()
    args = (rows(d["x"], mesh), rows(d["y"], mesh), d["a"], d["b"], 0.7, 0.9)
    assert_close(jax.jit(unbalanced)(*args), unsharded(unbalanced, "x", "y", "a", "b", 0.7, 0.9))


def test_per_point_tau_equals_unsharded(mesh):
    """Vector ``tau_a``/``tau_b`` (and weights) split along with their points."""
    d = data()
    names = ("x", "y", "a", "b", "tau_a", "tau_b")
    got = jax.jit(unbalanced)(*(rows(d[k], mesh) for k in names))
    assert_close(got, unsharded(unbalanced, *names))


def partial(x, y):
    out = ot.partial_ot(ot.pointcloud(x, y, chunk_size=CHUNK), mass=0.6, epsilon=EPS, tol=1e-4)
    return dict(f=out.f, g=out.g, cost=out.cost, transport_cost=out.transport_cost, mass=out.mass,
                n_iters=out.n_iters)


def test_partial_ot_equals_unsharded(mesh):
    """partial_ot materialises the (n + 1, m + 1) extended cost matrix: sharded clouds are gathered for it
    (on Explicit meshes the scatter of a row-sharded block into the extended matrix needs that)."""
    d = data()
    got = jax.jit(partial)(rows(d["x"], mesh), rows(d["y"], mesh))
    want = unsharded(partial, "x", "y")
    assert_close(got, want)
    np.testing.assert_allclose(want["mass"], 0.6, rtol=1e-3)


# gradients on smaller clouds (the backward pass is several solves' worth of products)
GN, GM = 256, 192


def cost_of(x, a):
    d = data(GN, GM)
    return ot.sinkhorn(ot.pointcloud(x, d["y"], chunk_size=CHUNK), a, d["b"], epsilon=EPS, tol=1e-5).cost


def implicit_loss(x, a):
    """Through the potentials (implicit differentiation, CG on the sharded residual): unbalanced, so that
    the weights' derivative is defined without a mass constraint."""
    d = data(GN, GM)
    out = ot.sinkhorn(ot.pointcloud(x, d["y"], chunk_size=CHUNK), a, d["b"], epsilon=EPS, tol=1e-5,
                      tau_a=0.8, tau_b=0.8)
    return out.cost + jnp.sum(out.apply(d["v"][:, 0]) * jnp.cos(x[:, 1]))


@functools.cache
def unsharded_grad(loss):
    """The single-device gradient of ``loss`` in ``(x, a)`` (numpy leaves), compiled and run once per module
    (the gradient tests on both meshes and the ``set_mesh`` test compare against the same one)."""
    d = data(GN, GM)
    return tuple(np.asarray(g) for g in jax.jit(jax.grad(loss, argnums=(0, 1)))(d["x"], d["a"]))


@pytest.mark.parametrize("loss", [cost_of, implicit_loss], ids=["cost", "implicit"])
def test_gradients_equal_unsharded(mesh, loss):
    d = data(GN, GM)
    want = unsharded_grad(loss)
    got = jax.jit(jax.grad(loss, argnums=(0, 1)))(rows(d["x"], mesh), rows(d["a"], mesh))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=0,
                                   atol=1e-4 * float(np.max(np.abs(np.asarray(w)))))


def dense_log_sinkhorn(c, a, b, eps, tol, max_iterations=5000):
    """Float64 log-domain Sinkhorn (numpy/scipy), the library's update order and stopping rule: each iteration
    measures the row-marginal L1 error of the current ``(f, g)``, then updates ``f`` and ``g``; it stops after
    the iteration whose error is ``<= tol``."""
    f, g = np.zeros(c.shape[0]), np.zeros(c.shape[1])
    la, lb = np.log(a), np.log(b)
    for it in range(1, max_iterations + 1):
        lse_rows = logsumexp(lb[None, :] + (g[None, :] - c) / eps, axis=1)
        err = np.sum(a * np.abs(np.exp(f / eps + lse_rows) - 1.0))
        f = -eps * lse_rows
        g = -eps * logsumexp(la[:, None] + (f[:, None] - c) / eps, axis=0)
        if err <= tol:
            return f, g, it
    raise AssertionError("oracle did not converge")


def test_sharded_potentials_match_float64_dense_oracle(x64):
    mesh = _mesh("explicit")
    d = {k: np.asarray(v, np.float64) for k, v in data().items()}
    tol = 1e-9
    out = jax.jit(lambda x, y, a, b: ot.sinkhorn(ot.pointcloud(x, y, chunk_size=CHUNK), a, b, epsilon=EPS,
                                                 tol=tol))(*(rows(d[k], mesh) for k in ("x", "y", "a", "b")))
    assert out.f.dtype == jnp.float64
    c = np.sum((d["x"][:, None] - d["y"][None]) ** 2, -1)
    eps = EPS * np.mean(c)
    np.testing.assert_allclose(float(out.epsilon), eps, rtol=1e-12)
    f, g, n_iters = dense_log_sinkhorn(c, d["a"], d["b"], eps, tol)
    # The stopping rule bounds the next update: sum_i a_i |exp(df_i / eps) - 1| <= tol gives
    # |df_i| <= eps log(1 + tol / a_i), and g moves by at most max |df| (log-sum-exp is 1-Lipschitz). If
    # rounding made the two loops stop one iteration apart they differ by one such step, else by rounding.
    assert abs(int(out.n_iters) - n_iters) <= 1, (int(out.n_iters), n_iters)
    step = eps * np.log1p(tol / np.min(d["a"]))
    np.testing.assert_allclose(np.asarray(out.f), f, rtol=0, atol=2 * step)
    np.testing.assert_allclose(np.asarray(out.g), g, rtol=0, atol=2 * step)
    assert bool(out.converged)


def test_explicit_mesh_context_equals_unsharded():
    """Under ``jax.set_mesh`` (arrays made inside the solve are typed on the mesh): balanced, unbalanced with
    per-point relaxations, and the implicit gradient all equal the unsharded results."""
    mesh, d = _mesh("explicit"), data()
    with jax.set_mesh(mesh):
        x, y = rows(d["x"], mesh), rows(d["y"], mesh)
        got = jax.jit(balanced)(x, y)
        assert_split(got["f"], mesh, True)
        assert_close(got, unsharded(balanced, "x", "y"))
        got = jax.jit(unbalanced)(x, y, d["a"], d["b"], d["tau_a"], d["tau_b"])
        assert_close(got, unsharded(unbalanced, "x", "y", "a", "b", "tau_a", "tau_b"))
        g = data(GN, GM)
        want = unsharded_grad(implicit_loss)
        got = jax.jit(jax.grad(implicit_loss, argnums=(0, 1)))(rows(g["x"], mesh), rows(g["a"], mesh))
    for a, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(w), rtol=0, atol=1e-4 * float(np.max(np.abs(w))))
