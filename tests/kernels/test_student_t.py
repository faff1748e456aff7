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
    student_t_joint_predictive_logpdf,
    student_t_log_marginal_likelihood,
    student_t_posterior,
    student_t_predictive_logpdf,
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


def _rbf_problem(n=15, m=5, lengthscale=0.7):
    rng = np.random.default_rng(4)
    x = rng.uniform(-2, 2, size=(n + m, 1))
    kall = np.exp(-0.5 * (x - x.T) ** 2 / lengthscale**2)
    y = np.sin(2 * x[m:, 0]) + 0.1 * rng.normal(size=n)
    return kall[m:, m:], y, kall[:m, m:], kall[:m, :m]


def test_defaults_are_exact_on_a_well_conditioned_gram(x64):
    # no jitter is added when the factorisation succeeds (it was 1e-6 relative: 3.5e-3 nats off here)
    alpha, beta, noise = 2.5, 1.7, 0.1
    k0, f, _, _ = _rbf_problem(lengthscale=0.3)  # the prior of f itself (no noise): a shorter lengthscale
    got = student_t_log_marginal_likelihood(k0, f, alpha=alpha, beta=beta)
    ref = stats.multivariate_t(np.zeros(15), beta / alpha * k0, df=2 * alpha).logpdf(f)
    np.testing.assert_allclose(got, ref, rtol=1e-10)
    k, y, kx, kss = _rbf_problem()
    got = student_t_log_marginal_likelihood(k, y, alpha=alpha, beta=beta, noise=noise)
    ref = stats.multivariate_t(np.zeros(15), beta / alpha * (k + noise * np.eye(15)), df=2 * alpha).logpdf(y)
    np.testing.assert_allclose(got, ref, rtol=1e-10)
    post = student_t_posterior(k, y, kx, kss, alpha=alpha, beta=beta, noise=noise)
    a = k + noise * np.eye(15)
    a_post, b_post = alpha + 7.5, beta + 0.5 * y @ np.linalg.solve(a, y)
    gauss = kss - kx @ np.linalg.solve(a, kx.T)
    np.testing.assert_allclose(post.mean, kx @ np.linalg.solve(a, y), rtol=1e-10)
    np.testing.assert_allclose(post.scale, b_post / a_post * gauss, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(post.beta, b_post, rtol=1e-12)
    assert float(post.jitter) == 0.0 and bool(post.ok)
    mc = scale_mixture_posterior(jax.random.key(0), k, y, kx, kss, noise=noise, num_samples=10,
                                 sample_scale=lambda kk, n: jnp.ones(n))
    np.testing.assert_allclose(mc.cov, gauss, rtol=1e-10, atol=1e-13)
    assert float(mc.jitter) == 0.0
    # the gradient in noise matches finite differences of the scipy oracle
    oracle = lambda s: stats.multivariate_t(np.zeros(15), beta / alpha * (k + s * np.eye(15)),
                                            df=2 * alpha).logpdf(y)
    g = jax.grad(lambda s: student_t_log_marginal_likelihood(k, y, alpha=alpha, beta=beta, noise=s))(noise)
    np.testing.assert_allclose(g, (oracle(noise + 1e-6) - oracle(noise - 1e-6)) / 2e-6, rtol=1e-6)


def test_joint_and_noisy_target_predictive(x64):
    k, y, kx, kss = _rbf_problem()
    alpha, beta, noise = 2.0, 1.5, 0.1
    post = student_t_posterior(k, y, kx, kss, alpha=alpha, beta=beta, noise=noise)
    yt = np.asarray(post.mean) + np.linspace(-0.5, 0.5, 5)
    shape = np.asarray(post.scale) + float(post.beta / post.alpha) * noise * np.eye(5)
    ref = stats.multivariate_t(np.asarray(post.mean), shape, df=float(post.df)).logpdf(yt)
    got = jax.jit(lambda p, t: student_t_joint_predictive_logpdf(p, t, noise=noise))(post, yt)
    np.testing.assert_allclose(got, ref, rtol=1e-10)
    latent = stats.multivariate_t(np.asarray(post.mean), np.asarray(post.scale), df=float(post.df)).logpdf(yt)
    np.testing.assert_allclose(student_t_joint_predictive_logpdf(post, yt), latent, rtol=1e-10)
    # the noisy-target posterior adds the noise to the predictive itself
    noisy = student_t_posterior(k, y, kx, kss, alpha=alpha, beta=beta, noise=noise, noisy_targets=True)
    np.testing.assert_allclose(noisy.scale, shape, rtol=1e-12)
    np.testing.assert_allclose(noisy.cov, shape * float(post.df) / (float(post.df) - 2), rtol=1e-12)
    np.testing.assert_allclose(student_t_joint_predictive_logpdf(noisy, yt), ref, rtol=1e-10)
    # marginals: one point of the joint is the per-point density; the noisy marginal posterior agrees
    marg = student_t_posterior(k, y, kx, np.diag(kss), alpha=alpha, beta=beta, noise=noise, full_cov=False)
    per_point = student_t_predictive_logpdf(marg, yt, noise=noise)
    for i in range(5):
        one = stats.multivariate_t(np.asarray(post.mean)[i:i + 1], shape[i:i + 1, i:i + 1], df=float(post.df))
        np.testing.assert_allclose(per_point[i], one.logpdf(yt[i:i + 1]), rtol=1e-10)
    noisy_marg = student_t_posterior(k, y, kx, np.diag(kss), alpha=alpha, beta=beta, noise=noise,
                                     full_cov=False, noisy_targets=True)
    np.testing.assert_allclose(student_t_predictive_logpdf(noisy_marg, yt), per_point, rtol=1e-12)
    # k output columns share sigma^2: one m k-dimensional t with scale I_k kron S
    y2 = np.stack([y, -y], 1)
    post2 = student_t_posterior(k, y2, kx, kss, alpha=alpha, beta=beta, noise=noise)
    yt2 = np.asarray(post2.mean) + 0.3
    shape2 = np.kron(np.eye(2), np.asarray(post2.scale) + float(post2.beta / post2.alpha) * noise * np.eye(5))
    ref2 = stats.multivariate_t(np.asarray(post2.mean).T.reshape(-1), shape2, df=float(post2.df)).logpdf(
        yt2.T.reshape(-1))
    np.testing.assert_allclose(student_t_joint_predictive_logpdf(post2, yt2, noise=noise), ref2, rtol=1e-10)
    with pytest.raises(ValueError, match="full_cov=True"):
        student_t_joint_predictive_logpdf(marg, yt)
    with pytest.raises(ValueError, match="full_cov=False"):
        student_t_predictive_logpdf(post, yt)
