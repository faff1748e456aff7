"""Laplace posterior, log evidence and prior tuning against scipy / numpy closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from jaxbayes import vi
from tests.vi.test_laplace_oracles import linear_data, linear_log_evidence, wine01


def logistic(w, xi):
    return xi @ w


def test_logistic_regression_matches_scipy_and_numpy(x64):
    x, y = wine01()
    d = x.shape[1]

    def nll(w):  # -log p(D|w) - log N(w; 0, I) up to a constant
        f = x @ w
        return np.sum(np.logaddexp(0, f) - y * f) + 0.5 * w @ w

    grad = lambda w: x.T @ (1 / (1 + np.exp(-x @ w)) - y) + w
    ref = scipy.optimize.minimize(nll, np.zeros(d), jac=grad, method="BFGS", options={"gtol": 1e-10})
    post = vi.laplace_posterior(logistic, jnp.zeros(d), x, y, likelihood="bernoulli", tol=1e-10)
    assert bool(post.map.converged) and float(post.map.error) <= 1e-10 and int(post.map.n_iters) > 0
    np.testing.assert_allclose(post.mean, ref.x, atol=1e-6)

    w = np.asarray(post.mean)
    p = 1 / (1 + np.exp(-x @ w))
    h = x.T @ ((p * (1 - p))[:, None] * x) + np.eye(d)  # by hand
    np.testing.assert_allclose(post.covariance(), np.linalg.inv(h), atol=1e-8, rtol=0)
    f = x @ w
    log_lik = np.sum(y * f - np.logaddexp(0, f))
    log_prior = -0.5 * w @ w - 0.5 * d * np.log(2 * np.pi)
    evidence = log_lik + log_prior + 0.5 * d * np.log(2 * np.pi) - 0.5 * np.linalg.slogdet(h)[1]
    np.testing.assert_allclose(post.log_evidence(), evidence, atol=1e-8, rtol=0)
    np.testing.assert_allclose(post.log_likelihood, log_lik, rtol=1e-12)

    # GLM: the exact Hessian is the GGN; the diagonal structure is the full curvature's diagonal
    hess = vi.laplace_posterior(logistic, post.mean, x, y, likelihood="bernoulli", curvature="hessian", optimizer=None)
    np.testing.assert_allclose(hess.covariance(), post.covariance(), atol=1e-10)
    diag = vi.laplace_posterior(logistic, post.mean, x, y, likelihood="bernoulli", structure="diag", optimizer=None)
    np.testing.assert_allclose(diag.eigenvalues, np.diag(h) - 1.0, rtol=1e-10)
    np.testing.assert_allclose(diag.marginal_variance(), 1 / np.diag(h), rtol=1e-10)
    hdiag = vi.laplace_posterior(logistic, post.mean, x, y, likelihood="bernoulli", structure="diag",
                                 curvature="hessian", optimizer=None)
    np.testing.assert_allclose(hdiag.eigenvalues, diag.eigenvalues, rtol=1e-10)
    np.testing.assert_allclose(post.marginal_variance(), np.diag(np.linalg.inv(h)), rtol=1e-8)
    # chunked sums give the same curvature
    chunked = vi.laplace_posterior(logistic, post.mean, x, y, likelihood="bernoulli", optimizer=None, batch_size=16)
    np.testing.assert_allclose(chunked.covariance(), post.covariance(), atol=1e-12)


def test_conjugate_linear_regression_is_exact(x64):
    x, y = linear_data()
    noise, delta = 0.5, 2.0
    post = vi.laplace_posterior(logistic, jnp.zeros(4), x, y, likelihood="gaussian", noise_scale=noise,
                                prior_precision=delta, tol=1e-12)
    precision = x.T @ x / noise**2 + delta * np.eye(4)
    cov = np.linalg.inv(precision)
    np.testing.assert_allclose(post.mean, cov @ x.T @ y / noise**2, atol=1e-10, rtol=0)
    np.testing.assert_allclose(post.covariance(), cov, atol=1e-10, rtol=0)
    # the evidence of the local quadratic model is exact for every prior precision, not only the fitted one
    for other in (delta, 0.05, 0.7, 13.0):
        np.testing.assert_allclose(post.log_evidence(other), linear_log_evidence(x, y, noise, other), atol=1e-10,
                                   rtol=0)
    # type-II ML: the maximiser of the closed-form evidence (scipy's bounded search on log delta, checked on a grid)
    ref = scipy.optimize.minimize_scalar(lambda t: -linear_log_evidence(x, y, noise, np.exp(t)), bounds=(-6, 6),
                                         method="bounded", options={"xatol": 1e-10})
    grid = np.exp(np.linspace(-6, 6, 20001))
    best = grid[np.argmax([linear_log_evidence(x, y, noise, g) for g in grid])]
    np.testing.assert_allclose(np.exp(ref.x), best, rtol=1e-3)
    tuned = jax.jit(vi.tune_prior_precision)(post)
    assert bool(tuned.converged) and float(tuned.error) <= 1e-10
    np.testing.assert_allclose(tuned.prior_precision, np.exp(ref.x), rtol=1e-6)
    np.testing.assert_allclose(tuned.log_evidence, linear_log_evidence(x, y, noise, np.exp(ref.x)), atol=1e-10)
    refit = vi.laplace_posterior(logistic, post.mean, x, y, likelihood="gaussian", noise_scale=noise,
                                 prior_precision=tuned.prior_precision, tol=1e-12)
    np.testing.assert_allclose(refit.log_evidence(), tuned.log_evidence, atol=1e-9)


def test_works_under_jit_and_samples(x64, key):
    x, y = wine01()
    build = lambda w: vi.laplace_posterior(logistic, w, x, y, likelihood="bernoulli", tol=1e-10)
    eager = build(jnp.zeros(14))
    jitted = jax.jit(build)(jnp.zeros(14))
    np.testing.assert_allclose(jitted.log_evidence(), eager.log_evidence(), rtol=1e-12)
    np.testing.assert_allclose(jax.jit(lambda p: p.log_evidence(0.5))(eager), eager.log_evidence(0.5), rtol=1e-12)
    draws = eager.sample(key, 40000)
    assert draws.shape == (40000, 14)
    np.testing.assert_allclose(np.cov(draws.T), eager.covariance(), atol=5 * np.max(np.diag(eager.covariance()))
                               / np.sqrt(40000))
    np.testing.assert_allclose(draws.mean(0), eager.mean, atol=5 * np.sqrt(np.max(eager.marginal_variance()) / 40000))


def test_argument_checks():
    x, y = np.ones((4, 2)), np.ones(4)
    with pytest.raises(ValueError, match="likelihood"):
        vi.laplace_posterior(logistic, jnp.zeros(2), x, y, likelihood="poisson")
    with pytest.raises(ValueError, match="same length"):
        vi.laplace_posterior(logistic, jnp.zeros(2), x, y[:3], likelihood="bernoulli")
    with pytest.raises(ValueError, match="prior_precision"):
        vi.laplace_posterior(logistic, jnp.zeros(2), x, y, likelihood="bernoulli", prior_precision=-1.0)
    with pytest.raises(ValueError, match="flax"):
        vi.laplace_posterior(logistic, jnp.zeros(2), x, y, likelihood="bernoulli", structure="kfac")
    with pytest.raises(ValueError, match="path"):
        vi.laplace_posterior(logistic, jnp.zeros(2), x, y, likelihood="bernoulli", structure="last_layer")
    with pytest.raises(ValueError, match="structure"):
        vi.as_structure("block")
    with pytest.raises(ValueError, match="hessian"):
        vi.as_structure("kfac", curvature="hessian")
    with pytest.raises(ValueError, match="curvature"):
        vi.LaplaceFull("fisher")
