"""BayesCap: the generalised Gaussian against scipy.stats.gennorm (density, normalisation, variance, cdf,
quantiles, safe gradients), the identity loss's optimum against scipy's maximum likelihood fit, and, on
heteroscedastic regression with a known noise law, a predicted scale that tracks the truth and a held-out NLL
below the frozen network's homoscedastic Gaussian."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.integrate
import scipy.special
import scipy.stats

from jaxbayes import vi
from jaxbayes.base import fit

BETAS = (0.5, 1.0, 2.0, 3.7)


def test_ggd_log_prob_matches_scipy_and_integrates_to_one(x64):
    y = np.linspace(-4.0, 5.0, 37)
    for beta in BETAS:
        for mu, alpha in [(0.0, 1.0), (0.7, 0.3), (-1.2, 2.5)]:
            ref = scipy.stats.gennorm(beta, loc=mu, scale=alpha)
            np.testing.assert_allclose(vi.ggd_log_prob(y, mu, alpha, beta), ref.logpdf(y), rtol=1e-12)
        pdf = jax.jit(lambda t, b=beta: jnp.exp(vi.ggd_log_prob(t, 0.7, 0.3, b)))
        # quad on each side of the cusp at mu; its own error estimate is < 1e-9
        mass = sum(scipy.integrate.quad(lambda t: float(pdf(t)), *ab, epsabs=1e-11)[0]
                   for ab in [(-np.inf, 0.7), (0.7, np.inf)])
        np.testing.assert_allclose(mass, 1.0, atol=1e-8)


def test_ggd_variance_cdf_quantiles_and_intervals_match_scipy(x64):
    beta = jnp.array(BETAS)
    g = vi.GGD(jnp.full(4, 0.4), jnp.array([0.5, 1.0, 1.5, 2.0]), beta)
    refs = [scipy.stats.gennorm(b, loc=0.4, scale=a) for a, b in zip(np.asarray(g.alpha), BETAS, strict=True)]
    np.testing.assert_allclose(g.variance, [r.var() for r in refs], rtol=1e-10)
    np.testing.assert_allclose(g.stddev, [r.std() for r in refs], rtol=1e-10)
    y = jnp.array([-1.0, 0.4, 1.3, 3.0])
    np.testing.assert_allclose(g.cdf(y), [r.cdf(v) for r, v in zip(refs, np.asarray(y), strict=True)], rtol=1e-10)
    for q in (0.05, 0.5, 0.8, 0.975):
        np.testing.assert_allclose(g.quantile(q), [r.ppf(q) for r in refs], rtol=1e-8, atol=1e-12)
    lower, upper = g.interval(0.9)
    np.testing.assert_allclose(lower, [r.interval(0.9)[0] for r in refs], rtol=1e-8)
    np.testing.assert_allclose(upper, [r.interval(0.9)[1] for r in refs], rtol=1e-8)


def test_ggd_gradients_are_finite_and_exact_at_the_location(x64):
    # at y = mu: log p = log beta - log(2 alpha) - lgamma(1/beta), so d/dalpha = -1/alpha,
    # d/dbeta = 1/beta + digamma(1/beta) / beta^2 and d/dmu = 0 (the symmetric subgradient), even for beta < 1
    grads = jax.jit(jax.grad(vi.ggd_log_prob, argnums=(1, 2, 3)))(0.3, 0.3, 0.8, 0.5)
    np.testing.assert_allclose(grads, [0.0, -1 / 0.8, 2.0 + scipy.special.digamma(2.0) * 4.0], rtol=1e-12)
    g = vi.GGD(jnp.zeros(3), jnp.ones(3), jnp.full(3, 0.5))
    batched = jax.vmap(jax.grad(lambda y: jnp.sum(g.log_prob(y))))(jnp.array([[0.0, 1.0, -1.0]] * 2))
    assert np.all(np.isfinite(batched))


def test_interval_coverage_counts_scipy_intervals(x64):
    rng = np.random.default_rng(0)
    mu, alpha, beta = rng.normal(size=50), rng.uniform(0.5, 2, 50), rng.uniform(0.7, 3, 50)
    y = mu + rng.normal(size=50) * 1.3
    levels = np.array([0.2, 0.5, 0.9])
    cov = jax.jit(vi.interval_coverage)(vi.GGD(*map(jnp.asarray, (mu, alpha, beta))), y, levels)
    lo, hi = scipy.stats.gennorm(beta, loc=mu, scale=alpha).interval(levels[:, None])
    np.testing.assert_allclose(cov, np.mean((y >= lo) & (y <= hi), axis=1), rtol=1e-12)


def constant_head(params, y_hat):
    """mu = y_hat + c with a constant scale and shape: the identity loss's optimum is then a GGD fit."""
    ones = jnp.ones_like(y_hat)
    return y_hat + params["c"], params["a"] * ones, params["b"] * ones


def test_identity_loss_optimum_is_scipy_mle_and_identity_weight_pins_mu(x64):
    n = 1500
    y_hat = jnp.asarray(np.linspace(-1, 1, n))
    y = y_hat + scipy.stats.gennorm(1.5, loc=-0.3, scale=0.8).rvs(n, random_state=np.random.default_rng(1))

    def train(weight):
        alg = vi.bayescap(constant_head, optax.adam(0.02), identity_weight=weight)
        state = alg.init(jax.random.key(0), {"c": 0.0, "a": 0.0, "b": 1.0})
        state, _ = fit(jax.random.key(1), alg, state, 3000, data=(y_hat, y))
        return alg.predict(state.params, y_hat), state.params["c"]

    preds, shifts = jax.jit(jax.vmap(train))(jnp.array([0.0, 1e3]))  # vmap over lambda_id: one compile
    # lambda_id = 0: the loss is the mean GGD NLL of the residuals y - y_hat, so its minimiser is their maximum
    # likelihood GGD fit (scipy's, same data); far tighter than the MLE's own sampling error (~0.03 on beta)
    beta, loc, scale = scipy.stats.gennorm.fit(np.asarray(y - y_hat))
    np.testing.assert_allclose([preds.beta[0, 0], shifts[0], preds.alpha[0, 0]], [beta, loc, scale], atol=5e-3)
    nll = -np.mean(scipy.stats.gennorm(beta, loc=loc, scale=scale).logpdf(np.asarray(y - y_hat)))
    assert -float(jnp.mean(vi.ggd_log_prob(y, preds.mu[0], preds.alpha[0], preds.beta[0]))) <= nll + 1e-6
    # lambda_id = 1000: the identity term's curvature 2000 dwarfs the NLL's (~1 / alpha^2), so mu ~ y_hat
    assert abs(float(shifts[1])) < 2e-3 < abs(float(shifts[0]))


def heteroscedastic(key, n):
    """y = f(x) + s(x) eps with f monotone, so the noise s is a function of the frozen output y_hat = f(x)."""
    k1, k2 = jax.random.split(key)
    x = jax.random.uniform(k1, (n, 1), minval=-1.0, maxval=1.0)
    f, s = x + 0.3 * jnp.sin(3 * x), 0.05 + 0.25 * x**2
    return f, f + s * jax.random.normal(k2, (n, 1)), s


def test_scale_tracks_true_noise_and_beats_homoscedastic_nll_on_held_out_data():
    y_hat, y, _ = heteroscedastic(jax.random.key(0), 1000)
    y_hat_test, y_test, s_test = heteroscedastic(jax.random.key(1), 1000)
    head = vi.BayesCapMLP((32,))
    alg = vi.bayescap(head.apply, optax.adam(1e-2))

    @jax.jit
    def run(y_hat, y, y_hat_test):
        state = alg.init(jax.random.key(2), head.init(jax.random.key(3), y_hat))
        state, _ = fit(jax.random.key(4), alg, state, 600, data=(y_hat, y))
        return alg.predict(state.params, y_hat_test)

    pred = run(y_hat, y, y_hat_test)
    corr = np.corrcoef(np.ravel(pred.stddev), np.ravel(s_test))[0, 1]
    assert corr > 0.9  # a homoscedastic or mis-scaled cap has no (or a random) correlation
    # frozen network's homoscedastic Gaussian: sigma^2 = mean squared training residual. The true noise law scores
    # nll_true; with s ranging 0.05..0.3 the gap nll_homo - nll_true = E log(sigma / s) ~ 0.28 nats (Jensen),
    # far above the held-out NLL's Monte-Carlo error (~0.03 for 1000 points); BayesCap must close half of it.
    sigma = jnp.sqrt(jnp.mean((y - y_hat) ** 2))
    nll_homo = -float(jnp.mean(jax.scipy.stats.norm.logpdf(y_test, y_hat_test, sigma)))
    nll_true = -float(jnp.mean(jax.scipy.stats.norm.logpdf(y_test, y_hat_test, s_test)))
    nll_cap = -float(jnp.mean(pred.log_prob(y_test)))
    assert nll_homo - nll_true > 0.2
    assert nll_cap < nll_homo - 0.5 * (nll_homo - nll_true)
    np.testing.assert_allclose(pred.mu, y_hat_test, atol=0.05)  # still (nearly) the identity on the frozen output


def test_bad_inputs_raise_naming_the_argument():
    head = vi.BayesCapMLP((4,))
    with pytest.raises(TypeError, match="apply_fn"):
        vi.bayescap("mlp", optax.adam(1e-2))
    with pytest.raises(ValueError, match="eps"):
        vi.bayescap(head.apply, optax.adam(1e-2), eps=0.0)
    with pytest.raises(ValueError, match="identity_weight"):
        vi.bayescap(head.apply, optax.adam(1e-2), identity_weight=-1.0)
    with pytest.raises(ValueError, match="nan_policy"):
        vi.bayescap(head.apply, optax.adam(1e-2), nan_policy="ignore")
    bad = vi.bayescap(lambda p, y_hat: (y_hat, y_hat[:, :1], y_hat), optax.adam(1e-2))
    with pytest.raises(ValueError, match="alpha_raw"):
        bad.predict({}, jnp.ones((3, 2)))
    alg = vi.bayescap(functools.partial(constant_head), optax.adam(1e-2))
    state = alg.init(jax.random.key(0), {"c": 0.0, "a": 0.0, "b": 1.0})
    with pytest.raises(ValueError, match="y"):
        alg.step(jax.random.key(0), state, (jnp.ones(3), jnp.ones(4)))
    with pytest.raises(ValueError, match="pair"):
        alg.step(jax.random.key(0), state, jnp.ones(3))
