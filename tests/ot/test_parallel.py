"""Sharded points (8-device mesh) == single device; vmap == loop; data_parallel over problems; pmap."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes import ot
from jaxbayes.parallel import batch_sharding, data_parallel, replicated_sharding


@pytest.mark.parametrize("chunk", [None, 8])
def test_sharded_points_equal_single_device(x64, mesh8, chunk):
    kx, ky = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (64, 3))
    y = jax.random.normal(ky, (48, 3)) + 0.5

    def solve(x, y):
        out = ot.sinkhorn(ot.pointcloud(x, y, chunk_size=chunk), tol=1e-10, max_iterations=5000)
        return out.f, out.g, out.cost, out.n_iters

    single = jax.jit(solve)(x, y)
    xs = jax.device_put(x, batch_sharding(mesh8, 2))
    ys = jax.device_put(y, batch_sharding(mesh8, 2))
    sharded = jax.jit(solve, out_shardings=(batch_sharding(mesh8, 1), batch_sharding(mesh8, 1),
                                            replicated_sharding(mesh8), replicated_sharding(mesh8)))(xs, ys)
    assert len(sharded[0].sharding.device_set) == 8
    for got, want in zip(sharded, single, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # gradients through the sharded solve
    g_single = jax.jit(jax.grad(lambda x: solve(x, y)[2]))(x)
    g_sharded = jax.jit(jax.grad(lambda x: solve(x, ys)[2]))(xs)
    np.testing.assert_allclose(g_sharded, g_single, atol=1e-10)


def _problems(n_problems=8):
    keys = jax.random.split(jax.random.key(1), n_problems)
    xs = jax.vmap(lambda k: jax.random.normal(k, (20, 2)))(keys)
    ys = xs[::-1] + 1.0
    return xs, ys


def _cost(x, y):
    return ot.sinkhorn(ot.pointcloud(x, y), epsilon=0.05, tol=1e-6).cost


def test_vmap_equals_loop_and_data_parallel(mesh8):
    xs, ys = _problems()
    batched = jax.jit(jax.vmap(_cost))(xs, ys)
    loop = jnp.stack([jax.jit(_cost)(x, y) for x, y in zip(xs, ys, strict=True)])
    np.testing.assert_allclose(batched, loop, rtol=1e-5)
    spread = jax.jit(data_parallel(_cost, mesh8))(xs, ys)
    np.testing.assert_allclose(spread, loop, rtol=1e-5)
    # fixed-iteration mode for uniform batched work, with per-problem vector tau
    fixed = functools.partial(ot.sinkhorn, epsilon=0.05, max_iterations=50, fixed_iterations=True)
    solve = jax.vmap(lambda x, y, t: fixed(ot.pointcloud(x, y), tau_a=t))
    outs = jax.jit(solve)(xs, ys, jnp.linspace(0.5, 1.0, 8))
    assert np.all(np.asarray(outs.n_iters) == 50)


def test_pmap():
    xs, ys = _problems(jax.device_count())
    pmapped = jax.pmap(_cost)(xs, ys)
    np.testing.assert_allclose(pmapped, jax.jit(jax.vmap(_cost))(xs, ys), rtol=1e-5)
