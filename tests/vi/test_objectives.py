"""ELBO and Renyi objectives against the conjugate linear-regression oracle: STL variance, bounds, minibatch
scaling, KL weight, temperature, and data-parallel gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbayes import vi
from jaxbayes.parallel import shard_batch
from tests.vi.problems import NOISE_VAR, PRIOR_PREC, conjugate_problem, exact_fullrank, log_joint, meanfield_optimum


def test_stl_gradient_variance_vanishes_at_optimum(x64):
    x, y, lam, sigma, mu, _ = conjugate_problem()
    exact = exact_fullrank(mu, sigma)
    logp = log_joint(x, y)

    def grads(stl):
        g = jax.jit(jax.vmap(lambda k: jax.grad(lambda q: vi.elbo(k, q, logp, stl=stl))(exact)))(
            jax.random.split(jax.random.key(0), 64))
        return np.concatenate([np.asarray(v).reshape(64, -1) for v in jax.tree.leaves(g)], 1)

    var_stl = grads(True).var(0).max()
    var_plain = grads(False).var(0).max()
    assert var_stl < 1e-12, var_stl
    assert var_plain > 1e-2, var_plain


def test_renyi_bound_between_elbo_and_log_evidence(x64):
    x, y, lam, sigma, mu, log_z = conjugate_problem()
    q = meanfield_optimum(mu, lam)
    logp = log_joint(x, y)
    keys = jax.random.split(jax.random.key(0), 100)
    single = np.asarray(jax.jit(jax.vmap(lambda k: vi.elbo(k, q, logp, num_samples=1, stl=False)))(keys))
    kl_opt = 0.5 * (np.sum(np.log(np.diag(lam))) - np.linalg.slogdet(lam)[1])
    # Monte-Carlo estimate of the exact mean-field ELBO log Z - KL, within 4 standard errors
    assert abs(single.mean() - (log_z - kl_opt)) < 4 * single.std() / np.sqrt(len(single))
    renyi = jax.jit(jax.vmap(lambda k, a: vi.elbo(k, q, logp, num_samples=200, objective="renyi", alpha=a),
                             in_axes=(0, None)))
    iw, half = jnp.mean(renyi(keys[:10], 0.0)), jnp.mean(renyi(keys[:10], 0.5))
    assert log_z - kl_opt < float(half) < float(iw) < log_z
    # at the exact posterior every bound equals log Z
    np.testing.assert_allclose(vi.elbo(keys[0], exact_fullrank(mu, sigma), logp, num_samples=5,
                                       objective="renyi", alpha=0.3), log_z, atol=1e-6)


def test_minibatch_scaling_kl_weight_temperature_and_warmup(x64, key):
    x, y, *_ = conjugate_problem()
    n = len(y)

    def loglik(w, batch):
        bx, by = batch
        return -0.5 * (by - bx @ w) ** 2 / NOISE_VAR

    q = vi.meanfield_init(jnp.zeros(x.shape[1]), init_scale=0.05)
    prior = vi.GaussianPrior(0.0, 1.0 / np.sqrt(PRIOR_PREC))
    batch = (x[:32], y[:32])
    terms = vi.objective_terms(key, q, loglik, batch, prior=prior, num_data=n, kl_weight=0.3, temperature=2.0)
    theta = q.sample(key, 1)[0]
    np.testing.assert_allclose(terms.expected_loglik, n / 32 * np.sum(loglik(theta, batch)), rtol=1e-12)
    np.testing.assert_allclose(terms.kl, q.kl_normal(0.0, 1.0), rtol=1e-12)
    np.testing.assert_allclose(terms.value, terms.expected_loglik / 2.0 - 0.3 * terms.kl, rtol=1e-12)
    alg = vi.meanfield_vi(loglik, optax.adam(1e-3), prior=prior, num_data=n, kl_weight=0.5, warmup_steps=4)
    _, info = vi.fit(key, alg, alg.init(jax.random.key(0), jnp.zeros(x.shape[1])), 6, data=(x, y), batch_size=16)
    np.testing.assert_allclose(info.kl_weight, [0.125, 0.25, 0.375, 0.5, 0.5, 0.5])


def test_data_parallel_elbo_gradient_on_8_devices_equals_single_device(mesh8, key):
    x, y, *_ = conjugate_problem()
    x, y = x[:320].astype(np.float32), y[:320].astype(np.float32)

    def loglik(w, batch):
        bx, by = batch
        return -0.5 * (by - bx @ w) ** 2 / NOISE_VAR

    q = vi.meanfield_init(jnp.zeros(x.shape[1]), init_scale=0.1)
    opts = dict(prior=vi.GaussianPrior(0.0, 1.0), num_data=1000, num_samples=4)
    grad_fn = jax.jit(jax.grad(lambda q, b: vi.elbo(key, q, loglik, b, **opts)))
    single = grad_fn(q, (jnp.asarray(x), jnp.asarray(y)))
    sharded_batch = shard_batch((jnp.asarray(x), jnp.asarray(y)), mesh8)
    assert len(sharded_batch[0].sharding.device_set) == 8
    multi = grad_fn(q, sharded_batch)
    for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(multi), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-3)
