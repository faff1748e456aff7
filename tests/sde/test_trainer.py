"""score_trainer: the DSM minimiser of a Gaussian score family is the data's (mean, variance); the EMA is the
recursion it documents; non-finite steps are skipped like every other algorithm's."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxbayes.base import fit
from jaxbayes.sde import VPSDE, dsm_loss, score_trainer

SDE = VPSDE()


def score_model(p):
    # the exact score family of N(a, b) data under the VP SDE; DSM is minimised at the data's (a, b)
    return lambda x, t: -(x - SDE.mean_coeff(t) * p["a"]) / (SDE.mean_coeff(t) ** 2 * jnp.exp(p["logb"])
                                                          + SDE.std(t) ** 2)


def test_trainer_learns_gaussian_score_parameters_and_ema():
    data = 2.0 + 0.5 * jax.random.normal(jax.random.key(0), (4096, 1))
    trainer = score_trainer(lambda p, k, b: dsm_loss(k, score_model(p), SDE, b), optax.adam(0.05), ema_decay=0.9)
    state = trainer.init(jax.random.key(0), {"a": jnp.array(0.0), "logb": jnp.array(0.0)})
    step = jax.jit(trainer.step)
    ema = state.ema_params
    for i in range(300):
        idx = jax.random.randint(jax.random.key(i), (256,), 0, 4096)
        new, info = step(jax.random.key(10_000 + i), state, data[idx])
        ema = jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, ema, new.params)
        state = new
    assert int(state.step) == 300 and np.isfinite(float(info.loss)) and float(info.grad_norm) >= 0
    assert abs(float(state.ema_params["a"]) - 2.0) < 0.15
    assert abs(float(jnp.exp(state.ema_params["logb"])) - 0.25) < 0.1
    np.testing.assert_allclose(state.ema_params["a"], ema["a"], rtol=1e-5)


def test_fit_runs_the_trainer_over_minibatches():
    data = 2.0 + 0.5 * jax.random.normal(jax.random.key(0), (2048, 1))
    trainer = score_trainer(lambda p, k, b: dsm_loss(k, score_model(p), SDE, b), optax.adam(0.05), ema_decay=0.5)
    state = trainer.init(jax.random.key(0), {"a": jnp.array(0.0), "logb": jnp.array(0.0)})
    state, infos = fit(jax.random.key(1), trainer, state, 300, data=data, batch_size=256)
    assert infos.loss.shape == (300,) and int(state.step) == 300
    assert abs(float(state.params["a"]) - 2.0) < 0.15


def test_nonfinite_gradient_is_skipped_or_raised():
    loss = lambda p, k, b: jnp.sum(p * b)
    skip = score_trainer(loss, optax.sgd(0.1), ema_decay=0.5)
    state = skip.init(jax.random.key(0), jnp.ones(2))
    state, info = skip.step(jax.random.key(1), state, jnp.array([1.0, jnp.nan]))
    assert not bool(info.finite) and int(state.num_skipped) == 1 and int(state.nonfinite_step) == 0
    np.testing.assert_array_equal(state.params, jnp.ones(2))
    strict = score_trainer(loss, optax.sgd(0.1), nan_policy="raise")
    with pytest.raises(FloatingPointError, match="step 0"):
        strict.step(jax.random.key(1), strict.init(jax.random.key(0), jnp.ones(2)), jnp.array([1.0, jnp.nan]))


def test_bad_options_raise():
    with pytest.raises(ValueError, match="ema_decay"):
        score_trainer(lambda p, k, b: 0.0, optax.sgd(0.1), ema_decay=1.0)
    with pytest.raises(ValueError, match="nan_policy"):
        score_trainer(lambda p, k, b: 0.0, optax.sgd(0.1), nan_policy="ignore")
