"""score_trainer: the DSM minimiser of a Gaussian score family is the data's (mean, variance); the EMA is the
recursion it documents; non-finite steps are skipped like every other algorithm's."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxbayes.base import fit
from jaxbayes.sde import VPSDE, dsm_loss, gaussian_score, score_trainer
from tests.sde.helpers import COV, MU

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
        before, batch = state, data[idx]
        new, info = step(jax.random.key(10_000 + i), state, batch)
        ema = jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, ema, new.params)
        state = new
    # the last step's info: its loss and gradient norm, recomputed from the parameters it started from
    loss = lambda p: dsm_loss(jax.random.key(10_299), score_model(p), SDE, batch)  # noqa: E731
    np.testing.assert_allclose(info.loss, loss(before.params), rtol=1e-5)
    np.testing.assert_allclose(info.grad_norm, optax.tree.norm(jax.grad(loss)(before.params)), rtol=1e-4)
    assert int(state.step) == 300
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


def test_default_ema_is_the_closed_form_exponential_average_of_the_trajectory(x64):
    """Default ema_decay (0.999) with SGD (lr 0.1) on ``||p - p*||^2 / 2``: the parameters follow
    ``p_k = p* + r^k (p_0 - p*)``, ``r = 0.9``, and the EMA after K steps is in closed form
    ``d^K p_0 + (1 - d^K) p* + (1 - d) r (d^K - r^K) / (d - r) (p_0 - p*)``. The tracked parameters equal
    ``p_k``, ``ema_params`` equals numpy's recurrence ``e_k = d e_{k-1} + (1 - d) p_k`` over them and the
    closed form, to 1e-12; the closed form with d = 0.99 is far off."""
    target, p0, lr, d, num = np.array([1.5, -2.0, 0.25]), np.array([0.0, 1.0, -3.0]), 0.1, 0.999, 300
    trainer = score_trainer(lambda p, k, b: 0.5 * jnp.sum((p - target) ** 2), optax.sgd(lr))
    state = trainer.init(jax.random.key(0), jnp.asarray(p0))
    step = jax.jit(trainer.step)
    ema = p0.copy()
    for k in range(1, num + 1):
        state, _ = step(jax.random.key(k), state)
        p = np.asarray(state.params)
        np.testing.assert_allclose(p, target + (1 - lr) ** k * (p0 - target), rtol=0, atol=1e-12)
        ema = d * ema + (1 - d) * p
    np.testing.assert_allclose(np.asarray(state.ema_params), ema, rtol=0, atol=1e-12)

    def closed(d, r=1 - lr, k=num):
        return d**k * p0 + (1 - d**k) * target + (1 - d) * r * (d**k - r**k) / (d - r) * (p0 - target)

    np.testing.assert_allclose(np.asarray(state.ema_params), closed(d), rtol=0, atol=1e-12)
    assert np.abs(np.asarray(state.ema_params) - closed(0.99)).max() > 0.1


def test_default_ema_of_a_trained_linear_score_reaches_the_exact_gaussian_score():
    """A linear (affine in x) score model ``-(m^2 L L^T + s^2 I)^{-1} (x - m a)`` trained with dsm_loss on fresh
    N(MU, COV) batches of 256 per step (so the population minimiser is the exact score, a = MU, L L^T = COV),
    Adam (lr 0.01), 8000 steps, default ema_decay (so the initial parameters' weight is 0.999^8000 = 3e-4): the
    EMA's mean and covariance are within 0.01 of MU and COV entrywise and its score at 50 exact draws x
    t in (0.01, 0.1, 0.5) within 4 % (relative norm) of the exact score. Each tolerance is about 3 x the
    measured error (optimisation noise plus the EMA's lag); a 1.3 x COV oracle is 0.15 off."""
    chol = np.linalg.cholesky(COV)

    def model(p):
        def score(x, t):
            m, s = SDE.mean_coeff(t), SDE.std(t)
            tri = jnp.tril(p["l"])
            return -jnp.linalg.solve(m**2 * tri @ tri.T + s**2 * jnp.eye(2), x - m * p["a"])
        return score

    def loss(p, k, _):
        kd, kl = jax.random.split(k)
        x0 = jnp.asarray(MU) + jax.random.normal(kd, (256, 2)) @ jnp.asarray(chol).T
        return dsm_loss(kl, model(p), SDE, x0)

    trainer = score_trainer(loss, optax.adam(0.01))
    state = trainer.init(jax.random.key(0), {"a": jnp.zeros(2), "l": jnp.eye(2)})
    state, _ = jax.jit(lambda s: fit(jax.random.key(1), trainer, s, 8000))(state)
    ema = state.ema_params
    tri = np.tril(np.asarray(ema["l"], np.float64))
    mean_err = np.abs(np.asarray(ema["a"]) - MU).max()
    cov_err = np.abs(tri @ tri.T - COV).max()
    exact = gaussian_score(SDE, MU, COV)
    xs = jnp.asarray(np.random.default_rng(0).multivariate_normal(MU, COV, 50))
    rel = []
    for t in (0.01, 0.1, 0.5):
        got = jax.vmap(lambda x, t=t: model(ema)(x, t))(xs)
        want = jax.vmap(lambda x, t=t: exact(x, t))(xs)
        rel.append(float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want)))
    # measured: 0.0022, 0.0034 and 0.013 (at t = 0.01)
    assert mean_err < 0.01 and cov_err < 0.01 and max(rel) < 0.04, (mean_err, cov_err, rel)
    assert np.abs(tri @ tri.T - 1.3 * COV).max() > 0.01  # measured: 0.15
