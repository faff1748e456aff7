"""BNN forward modes, SSVI subspace updates, Laplace curvature and Fisher merging against closed forms."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

from jaxbayes import vi


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(6)(x))
        return nn.Dense(3)(x)


class ConvNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(3, (3, 3))(x))
        return nn.Dense(2)(x.reshape(x.shape[0], -1))


def test_local_reparameterisation_moments_of_dense_layer(x64, key):
    # one Dense layer: pre-activation ~ N(x mu_W + mu_b, x^2 s_W^2 + s_b^2) exactly
    module = nn.Dense(2)
    x = jnp.array([[0.5, -1.0, 2.0], [1.0, 0.0, -0.3]])
    q = vi.bnn_init(key, module, x, init_scale=0.4)
    q = q._replace(log_scale=jax.tree.map(lambda s: s + 0.1 * jnp.arange(s.size).reshape(s.shape), q.log_scale))
    mean = x @ q.mean["kernel"] + q.mean["bias"]
    sd = jnp.sqrt(x**2 @ q.scale()["kernel"] ** 2 + q.scale()["bias"] ** 2)
    keys = jax.random.split(jax.random.key(1), 10_000)
    for method in ("local", "flipout", "sample"):
        outs = np.asarray(jax.jit(jax.vmap(lambda k, m=method: vi.bnn_apply(k, module, q, x, method=m)))(keys))
        se = np.asarray(sd) / np.sqrt(len(keys))
        assert np.all(np.abs(outs.mean(0) - mean) < 5 * se), method
        np.testing.assert_allclose(outs.std(0), sd, rtol=0.04)  # sd of an sd estimate: 0.7%


def test_conv_flipout_exact_and_local_per_position_marginals(key):
    # Flipout is a per-example weight perturbation: the network output's distribution equals weight sampling.
    module = ConvNet()
    x = jnp.linspace(-1, 1, 2 * 5 * 5).reshape(2, 5, 5, 1)
    q = vi.bnn_init(key, module, x, init_scale=0.2)
    keys = jax.random.split(jax.random.key(1), 2000)
    run = lambda mod, qq, m: np.asarray(jax.jit(jax.vmap(lambda k: vi.bnn_apply(k, mod, qq, x, method=m)))(keys))
    ref, flip = run(module, q, "sample"), run(module, q, "flipout")
    tol = 5 * ref.std(0) / np.sqrt(len(keys))
    assert np.all(np.abs(flip.mean(0) - ref.mean(0)) < 2 * tol)
    np.testing.assert_allclose(flip.std(0), ref.std(0), rtol=0.08)  # ~5 standard errors of an sd
    # Local reparameterisation of a conv layer has the exact marginal at every output position (positions are
    # sampled independently, which ignores weight sharing across positions; see the module docstring).
    conv = nn.Conv(2, (3, 3))
    qc = vi.bnn_init(key, conv, x, init_scale=0.3)
    ref, loc = run(conv, qc, "sample"), run(conv, qc, "local")
    np.testing.assert_allclose(loc.std(0), ref.std(0), rtol=0.08)
    assert np.all(np.abs(loc.mean(0) - ref.mean(0)) < 10 * ref.std(0) / np.sqrt(len(keys)))


def test_bnn_vi_learns_and_predicts_with_bounded_chunks(key):
    k1, k2 = jax.random.split(key)
    x = jax.random.normal(k1, (200, 2))
    y = (x[:, 0] + x[:, 1] > 0).astype(jnp.int32) + (x[:, 0] > 1.0).astype(jnp.int32)
    alg = vi.bnn_vi(MLP(), optax.adam(2e-2), num_data=200, prior_scale=1.0)
    state = alg.init(k2, x[:1])
    state, infos = vi.fit(jax.random.key(0), alg, state, 120, data=(x, y))
    assert bool(infos.finite.all()) and int(state.num_skipped) == 0
    probs = jax.jit(lambda s: alg.predict(jax.random.key(9), s, x, num_samples=16, chunk_size=4))(state)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    assert float(vi.metrics.accuracy(probs, y)) > 0.85
    # chunking changes memory, not the estimate: same keys give the same predictive
    p1 = vi.predict(jax.random.key(3), MLP(), state.q, x, num_samples=8, chunk_size=2)
    p2 = vi.predict(jax.random.key(3), MLP(), state.q, x, num_samples=8, chunk_size=8)
    np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="multiple of chunk_size"):
        vi.predict(key, MLP(), state.q, x, num_samples=8, chunk_size=3)
    with pytest.raises(ValueError, match="larger than num_data"):
        vi.bnn_vi(MLP(), optax.adam(1e-2), num_data=10).step(key, state, (x, y))


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


def test_laplace_ggn_matches_closed_forms(x64, key):
    # softmax regression: diag GGN of W_jc = sum_n x_nj^2 p_nc (1 - p_nc); bias: sum_n p_nc (1 - p_nc)
    module = nn.Dense(3)
    x = jax.random.normal(key, (40, 4))
    params = module.init(jax.random.key(1), x[:1])["params"]
    params = jax.tree.map(lambda p: p + 0.3, params)
    apply = lambda p, xi: module.apply({"params": p}, xi[None])[0]
    fisher = vi.diagonal_fisher(apply, params, x, batch_size=8)
    p = jax.nn.softmax(x @ params["kernel"] + params["bias"])
    np.testing.assert_allclose(fisher["kernel"], (x**2).T @ (p * (1 - p)), rtol=1e-5)  # flax params are f32
    np.testing.assert_allclose(fisher["bias"], jnp.sum(p * (1 - p), 0), rtol=1e-5)
    # empirical Fisher: sum_n x_nj^2 (onehot - p)^2
    y = jax.random.randint(key, (40,), 0, 3)
    emp = vi.diagonal_fisher(apply, params, x, y, kind="empirical")
    r = jax.nn.one_hot(y, 3) - p
    np.testing.assert_allclose(emp["kernel"], (x**2).T @ r**2, rtol=1e-5)
    # Gaussian linear model: Laplace == exact diagonal of the posterior precision (X^T X / s^2 + a I)
    lin = nn.Dense(1)
    lp = lin.init(key, x[:1])["params"]
    q = vi.laplace(lambda pp, xi: lin.apply({"params": pp}, xi[None])[0, 0], lp, x, likelihood="gaussian",
                   noise_scale=0.5, prior_precision=2.0)
    np.testing.assert_allclose(jnp.exp(-2 * q.log_scale["kernel"][:, 0]), jnp.sum(x**2, 0) / 0.25 + 2.0, rtol=1e-5)
    assert isinstance(q, vi.MeanFieldNormal)
    with pytest.raises(ValueError, match="empirical"):
        vi.diagonal_fisher(apply, params, x, kind="empirical")


def test_fisher_merge_is_precision_weighted_average(x64, key):
    # Merging two diagonal Gaussians with Fisher = precision gives the product-of-Gaussians mean.
    m1, m2 = {"w": jnp.array([0.0, 1.0, 2.0])}, {"w": jnp.array([2.0, 1.0, -2.0])}
    f1, f2 = {"w": jnp.array([1.0, 2.0, 3.0])}, {"w": jnp.array([3.0, 2.0, 1.0])}
    merged = vi.fisher_merge([m1, m2], [f1, f2], epsilon=0.0)
    np.testing.assert_allclose(merged["w"], (f1["w"] * m1["w"] + f2["w"] * m2["w"]) / (f1["w"] + f2["w"]))
    np.testing.assert_allclose(vi.fisher_merge([m1, m2], [f1, f1], epsilon=0.0)["w"], [1.0, 1.0, 0.0])
    w = vi.fisher_merge([m1, m2], [f1, f2], weights=[3.0, 1.0], epsilon=0.0)["w"]
    np.testing.assert_allclose(w, (3 * f1["w"] * m1["w"] + f2["w"] * m2["w"]) / (3 * f1["w"] + f2["w"]))
    zero = {"w": jnp.zeros(3)}
    np.testing.assert_allclose(vi.fisher_merge([m1, m2], [zero, zero])["w"], [1.0, 1.0, 0.0])  # eps fallback
    with pytest.raises(ValueError, match="equal length"):
        vi.fisher_merge([m1, m2], [f1])
    with pytest.raises(ValueError, match="structure"):
        vi.fisher_merge([m1, {"v": jnp.ones(3)}], [f1, f2])
