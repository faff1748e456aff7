"""Gaussian variational distributions (mean-field, low-rank, full-rank) against scipy, and the old constructors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from jaxbayes import vi


@pytest.mark.parametrize("family", ["meanfield", "lowrank", "fullrank"])
def test_family_density_entropy_kl_match_scipy(x64, key, family):
    pos = {"a": jnp.array([0.3, -1.0]), "b": jnp.array([[0.5, 0.1], [2.0, -0.4]])}
    if family == "meanfield":
        q = vi.meanfield_init(pos, init_scale=0.7)
        q = q._replace(log_scale=jax.tree.map(lambda s: s + 0.1 * jnp.arange(s.size).reshape(s.shape), q.log_scale))
    elif family == "lowrank":
        q = vi.lowrank_init(key, pos, rank=2, init_scale=0.5, factor_scale=0.4)
    else:
        q = vi.fullrank_init(pos, init_scale=0.6)
        q = q._replace(lower=0.3 * jax.random.normal(key, q.lower.shape))
    mean, cov = np.asarray(q.flat_mean()), np.asarray(q.covariance())
    ref = scipy.stats.multivariate_normal(mean, cov)
    draws = q.sample(jax.random.key(1), 4)
    flat = jax.vmap(lambda t: jax.flatten_util.ravel_pytree(t)[0])(draws)
    np.testing.assert_allclose(jax.vmap(q.log_prob)(draws), ref.logpdf(np.asarray(flat)), rtol=1e-10)
    np.testing.assert_allclose(q.entropy(), ref.entropy(), rtol=1e-10)
    # closed-form KL to N(m0, s0^2 I) equals the dense formula and matches scipy-free direct algebra
    prior_cov = 1.7**2 * np.eye(6)
    np.testing.assert_allclose(q.kl_normal(0.2, 1.7), q.kl_mvn(0.2 * np.ones(6), prior_cov), rtol=1e-10)
    direct = 0.5 * (np.trace(cov) / 1.7**2 + np.sum((mean - 0.2) ** 2) / 1.7**2 - 6
                    + 6 * np.log(1.7**2) - np.linalg.slogdet(cov)[1])
    np.testing.assert_allclose(q.kl_normal(0.2, 1.7), direct, rtol=1e-10)
    # sample covariance (Monte Carlo, 40k draws: standard error ~ 0.5% of the scale)
    big = jax.vmap(lambda t: jax.flatten_util.ravel_pytree(t)[0])(q.sample(key, 20_000))
    np.testing.assert_allclose(np.cov(np.asarray(big).T), cov, atol=0.06 * np.abs(cov).max())


def test_old_distribution_constructors_warn_and_build_the_distribution():
    # vi.MeanField / LowRank / FullRank used to be the distributions; with their fields they still build one.
    m, d = jnp.zeros(3), jnp.full(3, -1.0)
    with pytest.warns(DeprecationWarning, match="MeanFieldNormal"):
        q = vi.MeanField(m, d)
    assert isinstance(q, vi.MeanFieldNormal) and q == vi.MeanFieldNormal(m, d)
    with pytest.warns(DeprecationWarning, match="MeanFieldNormal"):
        assert isinstance(vi.MeanField(mean=m, log_scale=d), vi.MeanFieldNormal)
    with pytest.warns(DeprecationWarning, match="LowRankNormal"):
        q = vi.LowRank(m, d, jnp.ones((3, 1)))
    assert isinstance(q, vi.LowRankNormal)
    np.testing.assert_allclose(q.covariance(), jnp.diag(jnp.exp(2 * d)) + 1.0)
    with pytest.warns(DeprecationWarning, match="FullRankNormal"):
        q = vi.FullRank(m, d, jnp.zeros((3, 3)))
    assert isinstance(q, vi.FullRankNormal)
    # the family objects themselves build without a warning
    assert vi.MeanField() == vi.MeanField() and vi.LowRank(rank=2).rank == 2 and vi.LowRank(2).rank == 2
