"""BNN forward modes (local reparameterisation, Flipout, weight sampling) against closed forms, and BNN VI."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxbayes import vi
from tests.vi.problems import MLP


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
