"""The algorithm contract and the fit loop: exact optimiser iterates, the NaN policies, keys, callbacks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxbayes.base import fit, minibatch, optimizer_algorithm


def quadratic(p, key, batch):
    return jnp.sum((p - 3.0) ** 2)


def test_sgd_iterates_match_the_closed_form(x64):
    # p <- p - 0.1 * 2 (p - 3) contracts p - 3 by 0.8 per step: p_t = 3 (1 - 0.8^t).
    alg = optimizer_algorithm(quadratic, optax.sgd(0.1))
    state, info = fit(jax.random.key(0), alg, alg.init(jax.random.key(1), jnp.zeros(2)), 25)
    np.testing.assert_allclose(state.params, 3 * (1 - 0.8**25) * np.ones(2), rtol=1e-14)
    np.testing.assert_allclose(info.loss, 2 * 9 * 0.8 ** (2 * np.arange(25)), rtol=1e-12)
    assert int(state.step) == 25 and int(state.num_skipped) == 0 and int(state.nonfinite_step) == -1


def nan_at_step_3(p, key, batch):
    return jnp.where(batch == 3, jnp.nan, 1.0) * jnp.sum((p - 3.0) ** 2)


def test_skip_policy_drops_the_bad_update_and_goes_on():
    alg = optimizer_algorithm(nan_at_step_3, optax.sgd(0.1))
    state = alg.init(None, jnp.zeros(1))
    for i in range(6):
        state, info = alg.step(jax.random.key(i), state, jnp.asarray(i))
        assert bool(info.finite) == (i != 3)
    # five applied steps: 3 (1 - 0.8^5)
    np.testing.assert_allclose(state.params, [3 * (1 - 0.8**5)], rtol=1e-6)
    assert int(state.num_skipped) == 1 and int(state.nonfinite_step) == 3


def test_raise_policy_names_the_step_eagerly_and_after_fit():
    alg = optimizer_algorithm(nan_at_step_3, optax.sgd(0.1), nan_policy="raise")
    state = alg.init(None, jnp.zeros(1))
    for i in range(3):
        state, _ = alg.step(jax.random.key(i), state, jnp.asarray(i))
    with pytest.raises(FloatingPointError, match="step 3"):
        alg.step(jax.random.key(3), state, jnp.asarray(3))
    always_nan = optimizer_algorithm(lambda p, k, b: jnp.nan * jnp.sum(p), optax.sgd(0.1), nan_policy="raise")
    with pytest.raises(FloatingPointError, match="step 0"):
        fit(jax.random.key(0), always_nan, always_nan.init(None, jnp.zeros(1)), 4)


def test_split_fit_draws_the_same_keys_as_one_fit():
    noisy = lambda p, key, batch: jnp.sum((p - jax.random.normal(key, p.shape)) ** 2)
    alg = optimizer_algorithm(noisy, optax.adam(0.05))
    s0 = alg.init(None, jnp.zeros(3))
    whole, _ = fit(jax.random.key(7), alg, s0, 10)
    half, _ = fit(jax.random.key(7), alg, s0, 4)
    half, _ = fit(jax.random.key(7), alg, half, 6)
    np.testing.assert_array_equal(whole.params, half.params)


def test_minibatches_and_callback():
    data = (jnp.arange(20.0), 2 * jnp.arange(20.0))
    seen = []
    alg = optimizer_algorithm(lambda p, k, b: jnp.sum((p * b[0] - b[1]) ** 2), optax.sgd(1e-3))
    state, info = fit(jax.random.key(0), alg, alg.init(None, jnp.zeros(())), 30, data=data, batch_size=5,
                      callback=lambda step, info: seen.append(int(step)), callback_every=10)
    jax.effects_barrier()
    assert sorted(seen) == [10, 20, 30]
    np.testing.assert_allclose(state.params, 2.0, rtol=1e-3)  # y = 2 x exactly, any minibatch agrees
    batch = minibatch(jax.random.key(0), data, 5)
    np.testing.assert_array_equal(batch[1], 2 * batch[0])
    assert len(set(np.asarray(batch[0]).tolist())) == 5
    with pytest.raises(ValueError, match="larger than the data set"):
        fit(jax.random.key(0), alg, alg.init(None, jnp.zeros(())), 3, data=data, batch_size=21)
    with pytest.raises(ValueError, match="leading size"):
        minibatch(jax.random.key(0), (jnp.ones(3), jnp.ones(4)), 2)


def test_legacy_keys_give_the_typed_keys_result_and_seeds_are_refused():
    noisy = lambda p, key, batch: jnp.sum((p - jax.random.normal(key, p.shape)) ** 2)
    alg = optimizer_algorithm(noisy, optax.adam(0.05))
    s0 = alg.init(None, jnp.zeros(3))
    typed, _ = fit(jax.random.key(7), alg, s0, 5)
    legacy, _ = fit(jax.random.PRNGKey(7), alg, s0, 5)
    np.testing.assert_array_equal(typed.params, legacy.params)
    with pytest.raises(TypeError, match="PRNG key"):
        fit(7, alg, s0, 5)
