"""``GPPosterior.to_distrax()`` and ``StudentTPosterior.to_distrax()`` against scipy's densities of the
posterior's own mean and covariance (full and marginal), multi-output batching, and a singular test
covariance (the jitter policy)."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from jaxbayes.kernels import gp_posterior, student_t_posterior


def _problem(rng, n=12, m=5):
    x = rng.normal(size=(n + m, 1))
    k = np.exp(-0.5 * (x - x.T) ** 2)
    y = np.sin(2 * x[:n, 0])
    return k[:n, :n], y, k[n:, :n], k[n:, n:]


def test_gp_predictive_matches_scipy(x64):
    kxx, y, ksx, kss = _problem(np.random.default_rng(0))
    post = gp_posterior(kxx, y, ksx, kss, noise=0.1)
    z = np.random.default_rng(1).normal(size=(4, len(kss)))
    ref = scipy.stats.multivariate_normal(np.asarray(post.mean), np.asarray(post.cov))
    dist = post.to_distrax()
    np.testing.assert_allclose(dist.log_prob(jnp.asarray(z)), ref.logpdf(z), rtol=1e-9)
    np.testing.assert_allclose(dist.covariance(), post.cov, rtol=1e-9, atol=1e-12)
    marg = gp_posterior(kxx, y, ksx, np.diag(kss), noise=0.1, full_cov=False).to_distrax()
    assert marg.batch_shape == (len(kss),)
    np.testing.assert_allclose(marg.log_prob(jnp.asarray(z)),
                               scipy.stats.norm(np.asarray(post.mean), np.sqrt(np.diag(post.cov))).logpdf(z),
                               rtol=1e-9)


def test_gp_predictive_batches_outputs(x64):
    kxx, y, ksx, kss = _problem(np.random.default_rng(2))
    ys = np.stack([y, -2 * y], axis=1)
    dist = gp_posterior(kxx, ys, ksx, kss, noise=0.1).to_distrax()
    assert dist.batch_shape == (2,) and tuple(dist.event_shape) == (len(kss),)
    for j in range(2):
        single = gp_posterior(kxx, ys[:, j], ksx, kss, noise=0.1)
        v = jnp.asarray(np.random.default_rng(3 + j).normal(size=len(kss)))
        np.testing.assert_allclose(dist.log_prob(v)[j], single.to_distrax().log_prob(v), rtol=1e-9)


def test_singular_test_covariance_gets_the_jitter_policy(x64):
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(size=(12, 1)), np.full((3, 1), 4.0), rng.normal(size=(2, 1))])  # 3 equal
    k = np.exp(-0.5 * (x - x.T) ** 2)
    post = gp_posterior(k[:12, :12], np.sin(x[:12, 0]), k[12:, :12], k[12:, 12:], noise=0.1)
    assert np.linalg.matrix_rank(np.asarray(post.cov), tol=1e-10) == 3  # the duplicates: rank 3 of 5
    dist = post.to_distrax()
    assert np.isfinite(float(dist.log_prob(post.mean)))
    np.testing.assert_allclose(dist.covariance(), post.cov, atol=1e-6)  # jitter relative to the mean variance
    with pytest.raises(ValueError, match="cov is not positive definite"):  # no variance at all: no density
        gp_posterior(k[:12, :12], np.sin(x[:12, 0]), k[:3, :12], k[:3, :3], noise=0.0).to_distrax()


@pytest.mark.parametrize("noisy_targets", [False, True])
def test_student_t_predictive_matches_scipy(x64, noisy_targets):
    kxx, y, ksx, kss = _problem(np.random.default_rng(5))
    post = student_t_posterior(kxx, y, ksx, kss, alpha=2.0, beta=1.5, noise=0.1, noisy_targets=noisy_targets)
    z = np.random.default_rng(6).normal(size=(4, len(kss)))
    ref = scipy.stats.multivariate_t(np.asarray(post.mean), np.asarray(post.scale), df=float(post.df))
    dist = post.to_distrax()
    np.testing.assert_allclose(dist.log_prob(jnp.asarray(z)), ref.logpdf(z), rtol=1e-9)
    np.testing.assert_allclose(dist.covariance(), post.cov, rtol=1e-9, atol=1e-12)
    marg = student_t_posterior(kxx, y, ksx, np.diag(kss), alpha=2.0, beta=1.5, noise=0.1, full_cov=False,
                               noisy_targets=noisy_targets).to_distrax()
    t = scipy.stats.t(float(post.df), np.asarray(post.mean), np.sqrt(np.diag(post.scale)))
    np.testing.assert_allclose(marg.log_prob(jnp.asarray(z)), t.logpdf(z), rtol=1e-9)
