"""``q.to_distrax()`` for every Gaussian family and ``q.kl(distrax distribution)``, against scipy and the
closed-form Gaussian KL written out in numpy (independent of both our formulas and distrax's)."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from jax.flatten_util import ravel_pytree

from jaxbayes import vi

D = 5


def _families(rng):
    mean = {"w": jnp.asarray(rng.normal(size=3)), "b": jnp.asarray(rng.normal(size=2))}
    lower = np.tril(rng.normal(size=(D, D)), -1)
    return {
        "meanfield": vi.MeanFieldNormal(mean, jax.tree.map(lambda m: jnp.asarray(rng.normal(size=m.shape) * 0.3),
                                                           mean)),
        "fullrank": vi.FullRankNormal(mean, jnp.asarray(rng.normal(size=D) * 0.3), jnp.asarray(lower)),
        "lowrank": vi.LowRankNormal(mean, jax.tree.map(lambda m: jnp.asarray(rng.normal(size=m.shape) * 0.3), mean),
                                    jnp.asarray(rng.normal(size=(D, 2)))),
    }


def _kl_numpy(m0, s0, m1, s1):
    """KL(N(m0, s0) || N(m1, s1)) for dense covariances."""
    inv = np.linalg.inv(s1)
    diff = m1 - m0
    return 0.5 * (np.trace(inv @ s0) + diff @ inv @ diff - len(m0) + np.linalg.slogdet(s1)[1]
                  - np.linalg.slogdet(s0)[1])


@pytest.mark.parametrize("family", ["meanfield", "fullrank", "lowrank"])
def test_view_matches_scipy(x64, family):
    q = _families(np.random.default_rng(0))[family]
    dist = q.to_distrax()
    m, cov = np.asarray(q.flat_mean()), np.asarray(q.covariance())
    assert tuple(dist.event_shape) == (D,)
    np.testing.assert_allclose(dist.mean(), m, rtol=1e-12)
    np.testing.assert_allclose(dist.covariance(), cov, rtol=1e-10, atol=1e-12)
    ref = scipy.stats.multivariate_normal(m, cov)
    x = np.random.default_rng(1).normal(size=(7, D))
    np.testing.assert_allclose(dist.log_prob(jnp.asarray(x)), ref.logpdf(x), rtol=1e-10)
    np.testing.assert_allclose(dist.entropy(), ref.entropy(), rtol=1e-10)
    # the view and the family agree on log q of a parameter pytree
    theta = q.sample(jax.random.key(2))
    np.testing.assert_allclose(dist.log_prob(ravel_pytree(theta)[0]), q.log_prob(theta), rtol=1e-10)


@pytest.mark.parametrize("family", ["meanfield", "fullrank", "lowrank"])
def test_view_samples_have_the_covariance(x64, family):
    q = _families(np.random.default_rng(3))[family]
    n = 40_000
    draws = np.asarray(q.to_distrax().sample(seed=jax.random.key(4), sample_shape=(n,)))
    cov = np.asarray(q.covariance())
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)  # SE of a sample covariance entry
    assert np.max(np.abs(np.cov(draws.T) - cov) / se) < 5.0
    assert np.max(np.abs(draws.mean(0) - np.asarray(q.flat_mean())) / np.sqrt(np.diag(cov) / n)) < 5.0


@pytest.mark.parametrize("family", ["meanfield", "fullrank", "lowrank"])
def test_kl_against_distrax_gaussians(x64, family):
    rng = np.random.default_rng(5)
    q = _families(rng)[family]
    m0, s0 = np.asarray(q.flat_mean()), np.asarray(q.covariance())
    pm, ps = rng.normal(size=D), np.exp(rng.normal(size=D) * 0.2)
    a = rng.normal(size=(D, D))
    pcov = a @ a.T + D * np.eye(D)
    for prior, cov in [(distrax.MultivariateNormalDiag(jnp.asarray(pm), jnp.asarray(ps)), np.diag(ps**2)),
                       (distrax.MultivariateNormalFullCovariance(jnp.asarray(pm), jnp.asarray(pcov)), pcov)]:
        np.testing.assert_allclose(q.kl(prior), _kl_numpy(m0, s0, pm, cov), rtol=1e-9)
    # a Gaussian distrax cannot pair in closed form (a wrapped TFP one) takes our closed form instead
    from tensorflow_probability.substrates import jax as tfp

    wrapped = distrax.as_distribution(tfp.distributions.MultivariateNormalDiagPlusLowRankCovariance(
        jnp.asarray(pm), jnp.asarray(ps**2), jnp.ones((D, 1))))
    np.testing.assert_allclose(q.kl(wrapped), _kl_numpy(m0, s0, pm, np.diag(ps**2) + 1.0), rtol=1e-9)


def test_kl_refuses_bad_targets(x64):
    q = _families(np.random.default_rng(6))["meanfield"]
    with pytest.raises(ValueError, match="event shape"):
        q.kl(distrax.MultivariateNormalDiag(jnp.zeros(D + 1), jnp.ones(D + 1)))
    with pytest.raises(TypeError, match="Monte Carlo"):
        q.kl(distrax.Independent(distrax.Laplace(jnp.zeros(D), jnp.ones(D)), 1))


def test_view_under_jit_and_grad(x64):
    q = _families(np.random.default_rng(7))["lowrank"]
    x = jnp.ones(D)
    both = jax.jit(jax.value_and_grad(lambda q, view: q.to_distrax().log_prob(x) if view else q.log_prob_flat(x)),
                   static_argnums=1)
    (v1, g1), (v2, g2) = both(q, True), both(q, False)
    np.testing.assert_allclose(v1, v2, rtol=1e-10)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)
