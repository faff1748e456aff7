"""jaxbayes.parallel: identical results on 1 device, 8 devices and under pmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes import parallel


def per_sample_loss(w, x, y):
    return (jnp.tanh(x @ w) - y) ** 2


def test_eight_devices(mesh8):
    assert mesh8.shape["data"] == 8 and jax.device_count() == 8


def test_sample_keys_do_not_depend_on_batching(key):
    whole = jax.random.key_data(parallel.sample_keys(key, 12))
    parts = [jax.random.key_data(parallel.sample_keys(key, 4, start=s)) for s in (0, 4, 8)]
    np.testing.assert_array_equal(whole, np.concatenate(parts))
    direct = jax.random.key_data(jax.random.fold_in(key, 7))
    np.testing.assert_array_equal(whole[7], direct)


def test_sample_keys_under_jit(key):
    jitted = jax.jit(lambda k, s: parallel.sample_keys(k, 3, start=s))(key, 5)
    np.testing.assert_array_equal(jax.random.key_data(jitted), jax.random.key_data(parallel.index_keys(key, [5, 6, 7])))


@pytest.mark.parametrize("n", [8, 13])
def test_data_parallel_matches_vmap(key, mesh8, n):
    x = jax.random.normal(key, (n, 3))
    w = jnp.array([0.5, -1.0, 2.0])
    expected = jax.vmap(lambda v: jnp.sin(v @ w))(x)
    one = parallel.data_parallel(lambda w, v: jnp.sin(v @ w), parallel.data_mesh(1), in_axes=(None, 0))(w, x)
    eight = jax.jit(parallel.data_parallel(lambda w, v: jnp.sin(v @ w), mesh8, in_axes=(None, 0)))(w, x)
    np.testing.assert_allclose(one, expected, rtol=1e-6)
    np.testing.assert_allclose(eight, expected, rtol=1e-6)
    assert eight.shape == (n,)


def test_data_parallel_random_samples_independent_of_device_count(key, mesh8):
    def draw(k):
        return jax.random.normal(k, (2,))

    keys = parallel.sample_keys(key, 16)
    one = parallel.data_parallel(draw, parallel.data_mesh(1))(keys)
    eight = parallel.data_parallel(draw, mesh8)(keys)
    np.testing.assert_array_equal(one, eight)
    np.testing.assert_array_equal(one[:5], parallel.data_parallel(draw, mesh8)(keys[:5]))


@pytest.mark.parametrize("n", [16, 11])
def test_data_parallel_gradient_matches_single_device(key, mesh8, n):
    kx, ky = jax.random.split(key)
    x, y = jax.random.normal(kx, (n, 4)), jax.random.normal(ky, (n,))
    w = jnp.array([0.1, 0.2, -0.3, 0.4])
    loss = parallel.data_parallel(per_sample_loss, mesh8, in_axes=(None, 0, 0), reduce="mean")
    value, grad = jax.jit(jax.value_and_grad(loss))(w, x, y)
    ref_value, ref_grad = jax.value_and_grad(lambda w: per_sample_loss(w, x, y).mean())(w)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-7)


def test_sharded_jit_reduction_equals_single_device(key, mesh8):
    x = jax.random.normal(key, (64, 5))
    sharded = parallel.shard_batch(x, mesh8)
    assert len(sharded.sharding.device_set) == 8
    total = jax.jit(lambda a: jnp.sum(jnp.cos(a), axis=0))(sharded)
    np.testing.assert_allclose(total, jnp.sum(jnp.cos(x), axis=0), rtol=1e-5)
    rep = parallel.replicate(jnp.ones(3), mesh8)
    assert rep.sharding.is_fully_replicated


def test_pmap_matches(key):
    keys = parallel.sample_keys(key, 8)
    out = jax.pmap(lambda k: jax.random.normal(k, (3,)))(keys)
    # the same draws; pmap and vmap compile the normal's inverse-erf separately, so allow float32 rounding
    np.testing.assert_allclose(out, jax.vmap(lambda k: jax.random.normal(k, (3,)))(keys), rtol=1e-6, atol=1e-6)


def test_process_slice_and_local_to_global(mesh8):
    assert parallel.process_slice(10, process_index=0, process_count=1) == slice(0, 10)
    assert parallel.process_slice(12, process_index=2, process_count=3) == slice(8, 12)
    with pytest.raises(ValueError, match="divisible"):
        parallel.process_slice(10, process_index=0, process_count=3)
    local = np.arange(16.0).reshape(8, 2)
    glob = parallel.host_local_to_global(local, mesh8)
    np.testing.assert_array_equal(np.asarray(glob), local)


def test_legacy_keys_are_wrapped_and_seeds_refused():
    legacy, typed = jax.random.PRNGKey(3), jax.random.key(3)
    np.testing.assert_array_equal(jax.random.key_data(parallel.sample_keys(legacy, 4)),
                                  jax.random.key_data(parallel.sample_keys(typed, 4)))
    np.testing.assert_array_equal(jax.random.key_data(jax.jit(lambda k: parallel.index_keys(k, jnp.arange(3)))(legacy)),
                                  jax.random.key_data(parallel.index_keys(typed, jnp.arange(3))))
    with pytest.raises(TypeError, match="key must be a PRNG key from jax.random.key"):
        parallel.sample_keys(0, 3)
    with pytest.raises(TypeError, match="dtype float32"):
        parallel.sample_keys(jnp.zeros(2), 3)


def test_distribute_rows_keeps_whole_device_shares(mesh8):
    x, y = np.arange(30.0).reshape(15, 2), np.arange(15)
    (gx, gy), n = parallel.distribute_rows((x, y), mesh8)
    assert n == 8 and gx.sharding.spec[0] == parallel.DATA_AXIS
    np.testing.assert_array_equal(np.asarray(gx), x[:8])
    np.testing.assert_array_equal(np.asarray(gy), y[:8])
    with pytest.raises(ValueError, match="multiple of the 8 devices"):
        parallel.distribute_rows(x, mesh8, drop_remainder=False)
    with pytest.raises(ValueError, match="leading size"):
        parallel.distribute_rows((x, y[:3]), mesh8)


def test_initialize_is_noop_on_one_process():
    assert parallel.initialize() is False
    assert parallel.is_main_process()
    with pytest.raises(ValueError, match="together"):
        parallel.initialize("127.0.0.1:1234")


def test_bad_input(mesh8):
    with pytest.raises(ValueError, match="num_devices"):
        parallel.data_mesh(9)
    with pytest.raises(ValueError, match="reduce"):
        parallel.data_parallel(jnp.sin, mesh8, reduce="max")
    with pytest.raises(ValueError, match="leading size"):
        parallel.data_parallel(lambda a, b: a + b, mesh8)(jnp.ones(3), jnp.ones(4))
    with pytest.raises(ValueError, match="pad"):
        parallel.shard_batch(jnp.ones(5), mesh8)


def test_data_parallel_accepts_loops_with_constant_initial_carry(key, mesh8):
    def newton_sqrt(v):  # a while_loop whose carry starts from constants, as iterative solvers do
        def body(c):
            x, i = c
            return 0.5 * (x + v / x), i + 1

        x, i = jax.lax.while_loop(lambda c: (jnp.abs(c[0] ** 2 - v) > 1e-5) & (c[1] < 50), body, (1.0, 0))
        return x, i

    v = jnp.linspace(1.0, 100.0, 16)
    x, iters = jax.jit(parallel.data_parallel(newton_sqrt, mesh8))(v)
    np.testing.assert_allclose(x, jnp.sqrt(v), rtol=1e-5)
    assert int(iters.min()) < int(iters.max())  # the loop length depends on the data


def test_batch_size_and_device_count_change_results_by_rounding_only(x64, mesh8):
    # The documented guarantee (README, docs/architecture.md): the same random numbers bitwise; the
    # arithmetic to rounding, < 1e-12 relative in float64 (a width-1 vmap compiles differently: ~1 ulp).
    a = jnp.asarray(np.random.default_rng(0).normal(size=(8, 8)) / 3)

    def per_sample(key):
        def body(x, k):
            return x - 0.01 * (a @ a.T) @ x + 0.1 * jax.random.normal(k, x.shape), None

        x, _ = jax.lax.scan(body, jax.random.normal(key, (8,)), jax.random.split(key, 100))
        return jnp.tanh(x) @ a

    key = jax.random.key(0)
    batched = jax.jit(jax.vmap(per_sample))
    full = batched(parallel.sample_keys(key, 32))
    for width in (8, 1):
        parts = jnp.concatenate([batched(parallel.sample_keys(key, width, start=s)) for s in range(0, 32, width)])
        np.testing.assert_allclose(parts, full, rtol=1e-12, atol=1e-12 * float(jnp.abs(full).max()))
    sharded = jax.jit(parallel.data_parallel(per_sample, mesh8))(parallel.sample_keys(key, 32))
    np.testing.assert_allclose(sharded, full, rtol=1e-12, atol=1e-12 * float(jnp.abs(full).max()))
