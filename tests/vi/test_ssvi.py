"""Sparse subspace VI: removal scores against scipy, weight swaps, and the mask / optimiser-state invariants."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

from jaxbayes import vi
from tests.vi.problems import MLP


def test_folded_normal_moments_and_removal_scores_match_scipy(x64):
    mu = np.array([-2.0, -0.3, 0.0, 0.5, 3.0])
    sigma = np.array([0.5, 1.0, 0.7, 0.2, 2.0])
    m, s = vi.folded_normal_moments(mu, sigma)
    ref = scipy.stats.foldnorm(np.abs(mu) / sigma, scale=sigma)
    np.testing.assert_allclose(m, ref.mean(), rtol=1e-10)
    np.testing.assert_allclose(s, ref.std(), rtol=1e-10)
    np.testing.assert_allclose(vi.removal_score(mu, sigma, "folded_snr"), ref.mean() / ref.std(), rtol=1e-10)
    np.testing.assert_allclose(vi.removal_score(mu, sigma, "snr"), np.abs(mu) / sigma)
    np.testing.assert_allclose(vi.removal_score(mu, sigma, "abs_mean"), np.abs(mu))
    np.testing.assert_allclose(vi.removal_score(mu, sigma, "abs_expectation"), ref.mean(), rtol=1e-10)
    np.testing.assert_allclose(vi.removal_score(mu, sigma, "second_moment"), mu**2 + sigma**2)


def test_swap_weights_removes_lowest_scores_adds_largest_gradients():
    mask = jnp.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], jnp.float32)
    score = jnp.array([4.0, 0.1, 3.0, 0.2, 9, 9, 9, 9, 9, 9])
    grad = jnp.array([9.0, 9, 9, 9, 0.5, 7.0, 0.1, 6.0, 0.2, 0.3])
    new, added = vi.swap_weights(mask, score, grad, 0.5)
    np.testing.assert_array_equal(new, [1, 0, 1, 0, 0, 1, 0, 1, 0, 0])
    np.testing.assert_array_equal(added, [0, 0, 0, 0, 0, 1, 0, 1, 0, 0])
    same, none = vi.swap_weights(jnp.ones(4), jnp.arange(4.0), jnp.ones(4), 0.5)  # density 1: nothing to add
    np.testing.assert_array_equal(same, jnp.ones(4))
    sched = [float(vi.drop_fraction_schedule(t, drop_fraction=0.4, anneal_steps=10)) for t in (0, 5, 10, 20)]
    np.testing.assert_allclose(sched, [0.4, 0.2, 0.0, 0.0], atol=1e-7)


def test_ssvi_keeps_density_masks_and_optimizer_state(key):
    k1, k2 = jax.random.split(key)
    x = jax.random.normal(k1, (64, 8))
    y = (x[:, 0] > 0).astype(jnp.int32)
    alg = vi.ssvi(MLP(), optax.adam(1e-2), density=0.25, num_data=64, update_every=2, anneal_steps=20,
                  drop_fraction=0.5, criterion="snr")
    state = alg.init(k2, x[:1])
    rep0 = vi.sparsity_report(state.mask)
    assert rep0["density_per_layer"] == {"['Dense_0']['kernel']": 12 / 48, "['Dense_1']['kernel']": 4 / 18}
    step = jax.jit(alg.step)
    masks = [state.mask]
    for t in range(8):
        state, info = step(jax.random.key(t), state, (x, y))
        masks.append(state.mask)
        assert bool(info.mask_updated) == (t % 2 == 1)
    assert int(state.num_mask_updates) == 4
    assert vi.sparsity_report(state.mask) == rep0  # exact per-layer density kept
    assert not np.array_equal(masks[0]["Dense_0"]["kernel"], state.mask["Dense_0"]["kernel"])
    for m, k in zip(jax.tree.leaves(state.q.mean), jax.tree.leaves(state.mask), strict=True):
        assert np.all(np.asarray(m)[np.asarray(k) == 0] == 0)  # inactive weights are exactly zero
    adam = state.opt_state[0]
    for moment in (adam.mu, adam.nu):
        for v, k in zip(jax.tree.leaves(moment), jax.tree.leaves(MMask(state.mask)), strict=True):
            assert np.all(np.asarray(v)[np.asarray(k) == 0] == 0)  # masked optimiser state
    rep = vi.sparsity_report(state.mask)
    assert rep["flops_sparse_estimate"] == 4 * rep["nnz"] < rep["flops_dense"]


def MMask(mask):  # noqa: N802 - the mask for both MeanFieldNormal fields, as in the optimiser state
    return vi.MeanFieldNormal(mask, mask)


def test_ssvi_bad_density_and_structure(key):
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="density must be in"):
            vi.ssvi(MLP(), optax.adam(1e-2), density=bad, num_data=10)
        with pytest.raises(ValueError, match="density must be in"):
            vi.random_mask(key, {"w": jnp.ones((3, 3))}, bad)
    alg = vi.ssvi(MLP(), optax.adam(1e-2), density=1.0, num_data=10)
    state = alg.init(key, jnp.ones((1, 4)))
    other = vi.ssvi(nn.Dense(3), optax.adam(1e-2), density=1.0, num_data=10).init(key, jnp.ones((1, 4)))
    with pytest.raises(ValueError, match="structure changed"):
        alg.step(key, state._replace(q=other.q), (jnp.ones((2, 4)), jnp.zeros(2, jnp.int32)))


def test_full_density_at_the_defaults_is_dense_mean_field_vi():
    """The limit density = 1 at the defaults (folded-SNR criterion, update_every=100, anneal_steps=1000,
    drop_fraction=0.5): the two mask updates in 250 steps swap nothing, so the run equals ``bnn_vi``'s with the
    same keys (SSVI's init splits its key into the network's and the mask's) to float32 rounding."""
    mlp = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(3)])
    x = jax.random.normal(jax.random.key(0), (64, 4))
    y = jax.random.randint(jax.random.key(1), (64,), 0, 3)
    sparse = vi.ssvi(mlp, optax.adam(1e-2), density=1.0, num_data=64)
    dense = vi.bnn_vi(mlp, optax.adam(1e-2), num_data=64)
    s_sparse = sparse.init(jax.random.key(2), x[:1])
    s_dense = dense.init(jax.random.split(jax.random.key(2))[0], x[:1])
    s_sparse, i_sparse = vi.fit(jax.random.key(3), sparse, s_sparse, 250, data=(x, y), batch_size=16)
    s_dense, i_dense = vi.fit(jax.random.key(3), dense, s_dense, 250, data=(x, y), batch_size=16)
    assert int(s_sparse.num_mask_updates) == 2
    assert all(bool(jnp.all(m == 1)) for m in jax.tree.leaves(s_sparse.mask))
    for u, v in zip(jax.tree.leaves(s_sparse.q), jax.tree.leaves(s_dense.q), strict=True):
        np.testing.assert_allclose(u, v, atol=1e-6)
    np.testing.assert_allclose(i_sparse.objective, i_dense.objective, rtol=1e-6, atol=1e-4)
