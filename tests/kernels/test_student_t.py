"""Student-t process vs scipy.stats.multivariate_t, importance sampling over the scale, alpha -> infinity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxbayes.kernels import (
    Dense,
    Erf,
    fit_student_t,
    gp_posterior,
    scale_mixture_posterior,
    serial,
    student_t_log_marginal_likelihood,
    student_t_posterior,
)

NET = serial(Dense(1, 1.2, 0.3), Erf(), Dense(1, 1.0, 0.1))


def _setup(key):
    x = jax.random.normal(key, (10, 3))
    xt = jax.random.normal(jax.random.key(9), (4, 3))
    y = jnp.cos(x[:, 0]) + 0.5 * x[:, 2]
    return NET.kernel_fn(x).nngp, y, NET.kernel_fn(xt, x).nngp, NET.kernel_fn(xt).nngp


def test_marginal_matches_scipy_multivariate_t(key, x64):
    k, y, _, _ = _setup(key)
    alpha, beta, noise = 2.5, 1.7, 0.05
    got = student_t_log_marginal_likelihood(k, y, alpha=alpha, beta=beta, noise=noise, jitter=0.0)
    shape = beta / alpha * (np.asarray(k) + noise * np.eye(10))
    ref = stats.multivariate_t(loc=np.zeros(10), shape=shape, df=2 * alpha).logpdf(np.asarray(y))
    np.testing.assert_allclose(got, ref, rtol=1e-10)
    # the prior marginal of f itself (noise 0)
    f = 0.3 * y
    got = student_t_log_marginal_likelihood(k, f, alpha=alpha, beta=beta, jitter=0.0)
    ref = stats.multivariate_t(np.zeros(10), beta / alpha * np.asarray(k), df=2 * alpha).logpdf(np.asarray(f))
    np.testing.assert_allclose(got, ref, rtol=1e-9)


def test_posterior_variance_vs_monte_carlo_over_scale(key, x64):
    k, y, kx, kss = _setup(key)
    alpha, beta, noise = 3.0, 2.0, 0.1
    post = student_t_posterior(k, y, kx, kss, alpha=alpha, beta=beta, noise=noise)
    draw = lambda kk, n: stats.invgamma(alpha, scale=beta).ppf(
        np.asarray(jax.random.uniform(kk, (n,), dtype=jnp.float64)))
    num = 20000
    mc = scale_mixture_posterior(jax.random.key(1), k, y, kx, kss, sample_scale=lambda kk, n: jnp.asarray(draw(kk, n)),
                                 num_samples=num, noise=noise)
    np.testing.assert_allclose(mc.mean, post.mean, rtol=1e-10)
    # E[sigma^2 | y] by self-normalised importance sampling: relative error ~ 1/sqrt(ESS)
    rel = 5 / np.sqrt(float(mc.ess))
    np.testing.assert_allclose(mc.scale_mean, post.beta / (post.alpha - 1), rtol=rel)
    np.testing.assert_allclose(mc.cov, post.cov, rtol=rel, atol=1e-12)
    assert float(post.df) == 2 * alpha + 10


def test_alpha_to_infinity_gives_gaussian(key, x64):
    k, y, kx, kss = _setup(key)
    s0, alpha = 0.7, 1e9
    post = student_t_posterior(k, y, kx, kss, alpha=alpha, beta=alpha * s0, noise=0.1, jitter=0.0)
    gauss = gp_posterior(s0 * k, y, s0 * kx, s0 * kss, noise=0.1 * s0, jitter=0.0)
    np.testing.assert_allclose(post.mean, gauss.mean, rtol=1e-8)
    np.testing.assert_allclose(post.cov, gauss.cov, rtol=1e-6, atol=1e-10)


def test_fit_alpha_beta_maximises_marginal(key, x64):
    from scipy.optimize import minimize

    k, y, _, _ = _setup(key)
    y = y.at[jnp.array([2, 7])].add(jnp.array([4.0, -3.0]))  # outliers: a finite optimal alpha
    import optax

    a, b, losses = fit_student_t(k, y, noise=0.05, num_steps=2000, optimizer=optax.adam(0.1))
    jl = jax.jit(lambda p: -student_t_log_marginal_likelihood(k, y, alpha=jnp.exp(p[0]), beta=jnp.exp(p[1]),
                                                              noise=0.05))
    ref = minimize(lambda p: float(jl(jnp.asarray(p))), np.log([2.0, 2.0]), method="Nelder-Mead",
                   options={"xatol": 1e-7, "fatol": 1e-10})
    final = float(jl(jnp.log(jnp.array([a, b]))))
    assert losses[-1] <= losses[0]
    np.testing.assert_allclose(final, ref.fun, atol=5e-3)  # Adam jitters near the optimum


def test_bad_alpha_beta(key):
    k, y, kx, kss = _setup(key)
    with pytest.raises(ValueError, match="alpha must be finite and > 0"):
        student_t_posterior(k, y, kx, kss, alpha=0.0, beta=1.0)
    with pytest.raises(ValueError, match="beta must be finite and > 0"):
        student_t_log_marginal_likelihood(k, y, alpha=1.0, beta=-1.0)
