"""Every pillar accepts inputs sharded on 8-device meshes with Explicit axis types (``jax.make_mesh``'s default)
as well as Auto ones. Oracle: the same call on unsharded inputs (float32 rounding tolerance)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxbayes import kernels, ot, parallel, sde, vi

RTOL, ATOL = 1e-5, 1e-6


def _mesh(kind):
    assert jax.device_count() == 8, "tests expect 8 simulated CPU devices"
    axis_type = AxisType.Auto if kind == "auto" else AxisType.Explicit
    return jax.make_mesh((8,), ("data",), axis_types=(axis_type,))


@pytest.fixture(params=["explicit", "auto"])
def mesh(request):
    """An 8-device data mesh with Explicit or Auto axes, used without a mesh context."""
    return _mesh(request.param)


@pytest.fixture(params=["explicit", "explicit_set_mesh", "auto"])
def mesh_ctx(request):
    """As ``mesh``, plus an Explicit mesh entered as the ``jax.set_mesh`` context (as JAX's explicit-sharding
    guide does, and as gradients through explicitly sharded data require)."""
    m = _mesh(request.param)
    if request.param == "explicit_set_mesh":
        with jax.set_mesh(m):
            yield m
    else:
        yield m


def rows(x, mesh):
    """``x`` placed on ``mesh`` split along its leading axis."""
    x = jnp.asarray(x)
    return jax.device_put(x, NamedSharding(mesh, P("data", *([None] * (x.ndim - 1)))))


def close(actual, expected, rtol=RTOL, atol=ATOL):
    jax.tree.map(lambda a, e: np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol),
                 actual, expected)


def points(n=64, d=3, seed=0):
    return jax.random.normal(jax.random.key(seed), (n, d))


def test_data_mesh_explicit_is_explicit():
    assert parallel.is_explicit(parallel.data_mesh(8, explicit=True))
    assert not parallel.is_explicit(parallel.data_mesh(8))


# ---------------------------------------------------------------------------------------------- parallel


@pytest.mark.parametrize(("reduce", "jit", "n"), [(None, False, 60), (None, True, 64), ("mean", False, 64),
                                                   ("mean", True, 60)])
def test_data_parallel(mesh, n, reduce, jit):
    """Eager and jitted, batch sizes divisible by the device count (sharded input) or not (padded)."""
    w = jnp.array([0.3, -1.0, 2.0])
    x = points(n)

    def f(wi, xi):
        return {"a": jnp.tanh(wi @ xi), "b": xi * wi}

    expected = jax.vmap(f, in_axes=(None, 0))(w, x)
    if reduce == "mean":
        expected = jax.tree.map(lambda e: e.mean(0), expected)
    g = parallel.data_parallel(f, mesh, in_axes=(None, 0), reduce=reduce)
    g = jax.jit(g) if jit else g
    xs = rows(x, mesh) if n % 8 == 0 else x
    close(g(w, xs), expected)


def test_data_parallel_explicit_data_mesh_helper():
    mesh = parallel.data_mesh(8, explicit=True)
    x = points()
    out = parallel.data_parallel(lambda xi: jnp.sum(xi**2), mesh)(parallel.shard_batch(x, mesh))
    close(out, jnp.sum(x**2, axis=1))


# ---------------------------------------------------------------------------------------------- kernels

NET = kernels.serial(kernels.Dense(64, W_std=1.5, b_std=0.1), kernels.ReLU(), kernels.Dense(1, W_std=1.2))


def test_kernel_fn_row_sharded_under_jit(mesh_ctx):
    x = points()
    expected = NET.kernel_fn(x)
    out = jax.jit(lambda a: NET.kernel_fn(a))(rows(x, mesh_ctx))
    close((out.nngp, out.ntk), (expected.nngp, expected.ntk))
    # the result stays row-sharded like x on an Explicit mesh
    if parallel.is_explicit(mesh_ctx):
        assert out.nngp.sharding.spec[0] == "data"


def test_kernel_fn_cross_both_sharded_under_jit(mesh):
    x1, x2 = points(), points(32, seed=1)
    expected = NET.kernel_fn(x1, x2)
    out = jax.jit(NET.kernel_fn)(rows(x1, mesh), rows(x2, mesh))
    close((out.nngp, out.ntk), (expected.nngp, expected.ntk))


@pytest.mark.parametrize("symmetric", [True, False])
def test_gram_on_mesh(mesh, symmetric):
    if symmetric:  # under jit, on row-sharded inputs (the exact-diagonal fix on a row-sharded result)
        x1, x2 = points(64), None
        km = jax.jit(lambda a: kernels.gram(NET.kernel_fn, a, chunk_size=16, mesh=mesh))(rows(x1, mesh))
    else:  # eagerly, rows not a multiple of the device count (the padded path)
        x1, x2 = points(60), points(20, seed=1)
        km = kernels.gram(NET.kernel_fn, x1, x2, chunk_size=16, mesh=mesh)
    expected = NET.kernel_fn(x1, x2)
    close((km.nngp, km.ntk), (expected.nngp, expected.ntk))


def test_gp_posterior_and_marginal_likelihood_with_sharded_kernels(mesh):
    x, xt = points(32), points(16, seed=1)
    y = jnp.sin(x[:, 0])
    ktt, kst, kss = NET.kernel_fn(x).nngp, NET.kernel_fn(xt, x).nngp, NET.kernel_fn(xt).nngp

    def both(a, b, c, yy):
        post = kernels.gp_posterior(a, yy, b, c, noise=0.1)
        return post.mean, post.cov, kernels.log_marginal_likelihood(a, yy, noise=0.1)

    expected = both(ktt, kst, kss, y)
    out = jax.jit(both)(rows(ktt, mesh), rows(kst, mesh), rows(kss, mesh), rows(y, mesh))
    close(out, expected, rtol=1e-4, atol=1e-5)  # Cholesky solves: float32 rounding of a conditioned system


# -------------------------------------------------------------------------------------------------- sde

SDE = sde.VPSDE()
SCORE = sde.gaussian_score(SDE, jnp.zeros(2), jnp.eye(2))


@pytest.mark.parametrize("sampler", ["pc", "ode"])
def test_sample_batch_on_mesh(mesh, sampler):
    if sampler == "pc":
        def one(k):
            return sde.pc_sampler(k, SCORE, SDE, (2,), num_steps=4)
    else:
        def one(k):
            return sde.ode_sampler(k, SCORE, SDE, (2,), solver="euler", num_steps=8)
    key = jax.random.key(0)
    expected = sde.sample_batch(one, key, 64).samples
    out = jax.jit(lambda k: sde.sample_batch(one, k, 64, mesh=mesh))(key).samples
    close(out, expected)


def test_sampler_with_batch_sharded_initial_noise(mesh):
    keys = parallel.sample_keys(jax.random.key(0), 64)
    x_init = jax.random.normal(jax.random.key(1), (64, 2))

    def draw(k, x0):
        return sde.ddim_sampler(k, SCORE, SDE, (2,), num_steps=8, x_init=x0).samples

    expected = jax.vmap(draw)(keys, x_init)
    out = jax.jit(jax.vmap(draw))(rows(keys, mesh), rows(x_init, mesh))
    close(out, expected)


LOSSES = {
    "dsm": lambda x: sde.dsm_loss(jax.random.key(0), SCORE, SDE, x),
    "ddpm": lambda x: sde.ddpm_loss(jax.random.key(0), lambda xi, t: -xi, SDE, x),
    "smld": lambda x: sde.smld_loss(jax.random.key(0), lambda xi, t: -xi, sde.VESDE(), x),
    "edm": lambda x: sde.edm_loss(jax.random.key(0), lambda xi, sigma: xi / (1 + sigma**2), x),
    "interpolant": lambda x: sde.interpolant_loss(jax.random.key(0), lambda xi, t: -xi, sde.Interpolant(), x),
}


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_score_matching_losses_on_row_sharded_batch(mesh, loss):
    x0 = points(64, 2)
    f = LOSSES[loss]
    close(jax.jit(f)(rows(x0, mesh)), f(x0))


# --------------------------------------------------------------------------------------------------- vi


@pytest.mark.parametrize("batch_size", [None, 16], ids=["full", "minibatch"])
def test_gaussian_vi_fit_with_sharded_data(mesh_ctx, batch_size):
    mesh = mesh_ctx
    if parallel.is_explicit(mesh) and jax.sharding.get_abstract_mesh().empty:
        # JAX itself (not jaxbayes) refuses the gradient of the user's log-likelihood: the transpose of
        # `bx @ w` contracts over the sharded batch axis, which needs a mesh context to type its result.
        pytest.skip("grads through explicitly sharded data need jax.set_mesh (a JAX requirement)")
    x = points(64)
    y = x @ jnp.array([1.0, -0.5, 0.2]) + 0.1 * jax.random.normal(jax.random.key(3), (64,))

    def loglik(w, batch):
        bx, by = batch
        return -0.5 * (by - bx @ w) ** 2

    alg = vi.meanfield_vi(loglik, optax.adam(1e-2), prior=vi.GaussianPrior(0.0, 1.0), num_data=64)

    def run(data):
        state = alg.init(jax.random.key(1), jnp.zeros(3))
        state, info = vi.fit(jax.random.key(2), alg, state, 5, data=data, batch_size=batch_size)
        return state.q.mean, state.q.log_scale, info.objective

    expected = run((x, y))
    close(jax.jit(run)((rows(x, mesh), rows(y, mesh))), expected, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------------- ot


@pytest.mark.parametrize("spec", [P("data", None), P(None, "data")], ids=["rows", "cols"])
def test_dense_sinkhorn_with_sharded_cost_matrix(mesh, spec):
    """The dense loop's products over the kernel's sharded axis get an explicit result sharding."""
    x, y = points(32, 2), points(24, 2, seed=1)
    c = jnp.sum((x[:, None] - y[None]) ** 2, -1)

    def solve(cm):
        out = ot.sinkhorn(ot.costmatrix(cm), epsilon=0.1)
        return out.f, out.g, out.cost

    close(jax.jit(solve)(jax.device_put(c, NamedSharding(mesh, spec))), solve(c), rtol=1e-4, atol=1e-5)


def test_sliced_wasserstein_with_sharded_points(mesh):
    x, y = points(64, 3), points(64, 3, seed=1) + 1.0

    def sw(a, b):
        return ot.sliced_wasserstein(jax.random.key(0), a, b, num_projections=16)

    close(jax.jit(sw)(rows(x, mesh), rows(y, mesh)), sw(x, y))
