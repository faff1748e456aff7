"""NIW few-shot model: posterior, marginal likelihood and predictive against Monte Carlo over scipy prior draws,
the predictive as a ratio of marginal likelihoods, the Gaussian limit, Bayes' rule for the classifier, and the
empirical-Bayes fit against the truth within its Fisher standard error."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

from jaxbayes import vi

D = 2
MU0 = np.array([0.5, -0.3])
PSI0 = np.array([[1.5, 0.3], [0.3, 0.8]])
DATA = np.array([[0.9, -0.1], [1.6, 0.4], [0.2, -0.9]])


def prior(kappa=2.0, nu=7.0, mu=MU0, psi=PSI0):
    return vi.NIW(jnp.asarray(mu), jnp.asarray(kappa), jnp.asarray(nu), jnp.asarray(psi))


def prior_draws(p, num, seed):
    """(mu, Sigma) ~ NIW with scipy: Sigma ~ invwishart(nu, Psi), mu | Sigma ~ N(mu_0, Sigma / kappa)."""
    rng = np.random.default_rng(seed)
    sigma = scipy.stats.invwishart.rvs(df=float(p.nu), scale=np.asarray(p.psi), size=num, random_state=rng)
    chol = np.linalg.cholesky(sigma / float(p.kappa))
    mu = np.asarray(p.mu) + np.einsum("nij,nj->ni", chol, rng.standard_normal((num, D)))
    return mu, sigma


def gaussian_loglik(x, mu, sigma):
    """sum_j log N(x_j; mu_i, Sigma_i) for each draw i (numpy, batched over draws)."""
    r = x[None] - mu[:, None]
    quad = np.einsum("nki,nij,nkj->n", r, np.linalg.inv(sigma), r)
    return -0.5 * (quad + x.shape[0] * (np.linalg.slogdet(sigma)[1] + D * np.log(2 * np.pi)))


@pytest.fixture(scope="module")
def draws():
    with jax.enable_x64(True):
        return prior_draws(prior(), 400_000, seed=1)


def test_marginal_likelihood_matches_prior_monte_carlo(x64, draws):
    mu, sigma = draws
    lik = np.exp(gaussian_loglik(DATA, mu, sigma))
    # p(D) = E_prior[L]; the mean of N iid draws has standard error std(L) / sqrt(N) (CLT; L is bounded for
    # n >= d + 1 points in general position, so the variance is finite); log p(D) then errs by se / mean.
    mc, se = lik.mean(), lik.std() / np.sqrt(lik.size)
    exact = float(vi.niw_log_marginal_likelihood(prior(), DATA))
    assert abs(exact - np.log(mc)) < 5 * se / mc
    assert se / mc < 0.01  # the check is sharp: a 1% error in p(D) would fail it


def test_posterior_matches_importance_sampling(x64, draws):
    mu, sigma = draws
    logw = gaussian_loglik(DATA, mu, sigma)
    w = np.exp(logw - logw.max())
    w /= w.sum()
    post = vi.niw_posterior(prior(), DATA)

    # self-normalised importance sampling with the prior as proposal: the estimate sum_i w_i g_i of E[g | D] has
    # delta-method standard error sqrt(sum_i w_i^2 (g_i - E[g | D])^2); nu_n = 10 > d + 3 keeps Var[Sigma | D]
    # finite. Compared: E[mu | D] = mu_n, E[Sigma | D] = Psi_n / (nu_n - d - 1), Cov[mu | D] = E[Sigma | D] / kappa_n.
    def check(g, exact):
        est = np.tensordot(w, g, axes=1)
        se = np.sqrt(np.tensordot(w**2, (g - est) ** 2, axes=1))
        np.testing.assert_array_less(np.abs(est - exact), 5 * se + 1e-12)

    check(mu, post.mu)
    check(sigma, post.mean_cov)
    check(np.einsum("ni,nj->nij", mu - post.mu, mu - post.mu), post.mean_cov / post.kappa)
    assert 1.0 / np.sum(w**2) > 10_000  # effective sample size behind the tolerances


def test_predictive_is_ratio_of_marginal_likelihoods_and_multivariate_t(x64):
    p = prior()
    post = vi.niw_posterior(p, DATA)
    pred = vi.niw_predictive(post)
    queries = np.array([[0.0, 0.0], [3.0, -2.0], [0.7, 0.1]])
    ratio = [vi.niw_log_marginal_likelihood(p, np.vstack([DATA, q])) - vi.niw_log_marginal_likelihood(p, DATA)
             for q in queries]
    np.testing.assert_allclose(pred.log_prob(queries), ratio, rtol=1e-10)
    df = float(post.nu) - D + 1
    scale = np.asarray(post.psi) * (float(post.kappa) + 1) / (float(post.kappa) * df)
    ref = scipy.stats.multivariate_t(loc=np.asarray(post.mu), shape=scale, df=df).logpdf(queries)
    np.testing.assert_allclose(pred.log_prob(queries), ref, rtol=1e-10)
    np.testing.assert_allclose(pred.cov, scale * df / (df - 2), rtol=1e-12)


def test_predictive_tends_to_gaussian_as_kappa_and_nu_grow(x64):
    sigma = np.array([[1.0, 0.4], [0.4, 0.7]])
    queries = np.array([[0.0, 0.0], [1.5, -1.0], [-0.5, 0.8]])
    gauss = scipy.stats.multivariate_normal(MU0, sigma).logpdf(queries)

    def error(big):
        # E[Sigma] = Psi_0 / (nu_0 - d - 1) = sigma for every nu_0; the data's pull on (mu_n, Psi_n) is O(1 / big)
        p = prior(kappa=big, nu=big, psi=(big - D - 1) * sigma)
        return np.max(np.abs(vi.niw_predictive(vi.niw_posterior(p, DATA)).log_prob(queries) - gauss))

    assert error(1e5) < 1e-3
    assert error(1e3) / error(1e5) > 30  # first-order convergence: the error falls ~100x per 100x


def test_masks_under_vmap_and_jit_equal_per_class_subsets(x64):
    x = np.random.default_rng(0).normal(size=(9, D))
    labels = np.array([0, 1, 1, 2, 0, 1, 2, 2, 1])
    masks = labels[None] == np.arange(4)[:, None]  # class 3 is empty
    batched = jax.jit(jax.vmap(lambda m: vi.niw_posterior(prior(), x, mask=m)))(masks)
    for c in range(3):
        alone = vi.niw_posterior(prior(), x[labels == c])
        for got, want in zip(batched, alone, strict=True):
            np.testing.assert_allclose(got[c], want, rtol=1e-12)
    for got, want in zip(batched, prior(), strict=True):
        np.testing.assert_allclose(got[3], want, rtol=1e-12)
    ml = jax.vmap(lambda m: vi.niw_log_marginal_likelihood(prior(), x, mask=m))(masks)
    np.testing.assert_allclose(ml[1], vi.niw_log_marginal_likelihood(prior(), x[labels == 1]), rtol=1e-12)
    np.testing.assert_allclose(ml[3], 0.0, atol=1e-12)


def test_marginal_likelihood_gradient_matches_finite_differences(x64):
    f = jax.jit(lambda mu, kappa, nu: vi.niw_log_marginal_likelihood(prior(kappa, nu, mu), DATA))
    grads = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(jnp.asarray(MU0), 2.0, 7.0)
    h = 1e-6
    fd_kappa = (f(MU0, 2.0 + h, 7.0) - f(MU0, 2.0 - h, 7.0)) / (2 * h)
    fd_nu = (f(MU0, 2.0, 7.0 + h) - f(MU0, 2.0, 7.0 - h)) / (2 * h)
    fd_mu = [(f(MU0 + h * e, 2.0, 7.0) - f(MU0 - h * e, 2.0, 7.0)) / (2 * h) for e in np.eye(D)]
    np.testing.assert_allclose(grads[0], fd_mu, rtol=1e-6)
    np.testing.assert_allclose([grads[1], grads[2]], [fd_kappa, fd_nu], rtol=1e-6)


def test_few_shot_log_probs_are_bayes_rule_over_marginal_likelihoods(x64):
    rng = np.random.default_rng(3)
    support = rng.normal(size=(6, D)) + np.repeat(np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]]), [1, 3, 2], 0)
    labels = np.repeat(np.arange(3), [1, 3, 2])  # uneven shots
    queries = rng.normal(size=(4, D)) + 1.0
    log_pi = np.log([0.5, 0.3, 0.2])
    lp = jax.jit(functools.partial(vi.niw_few_shot_log_probs, num_classes=3))(
        prior(), support, labels, queries, log_class_prior=log_pi)
    # p(y = c | x, D) ∝ pi_c p(D_c ∪ {x}) / p(D_c), from marginal likelihoods of the classes' own points only
    logits = np.array([[float(vi.niw_log_marginal_likelihood(prior(), np.vstack([support[labels == c], q]))
                              - vi.niw_log_marginal_likelihood(prior(), support[labels == c])) + log_pi[c]
                        for c in range(3)] for q in queries])
    np.testing.assert_allclose(lp, logits - scipy.special.logsumexp(logits, axis=1, keepdims=True), rtol=1e-10)


def test_moment_matched_prior_matches_pooled_moments(x64):
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(3), [5, 8, 6])
    x = rng.normal(size=(19, D)) + 3 * rng.normal(size=(3, D))[labels]
    p = vi.moment_matched_prior(x, labels, num_classes=3)
    means = np.stack([x[labels == c].mean(0) for c in range(3)])
    pooled = sum((labels == c).sum() * np.cov(x[labels == c].T, bias=True) for c in range(3)) / x.shape[0]
    np.testing.assert_allclose(p.mu, means.mean(0), rtol=1e-12)
    np.testing.assert_allclose(p.mean_cov, pooled, rtol=1e-12)
    np.testing.assert_allclose(p.kappa, np.trace(pooled) / np.trace(np.cov(means.T, bias=True)), rtol=1e-12)


def test_fit_prior_recovers_truth_within_fisher_error(x64):
    truth = prior(kappa=0.5, nu=8.0, psi=5.0 * np.array([[1.0, 0.3], [0.3, 0.6]]))
    num_classes, shots = 150, 20
    mu, sigma = prior_draws(truth, num_classes, seed=5)
    rng = np.random.default_rng(6)
    x = np.concatenate([rng.multivariate_normal(m, s, size=shots) for m, s in zip(mu, sigma, strict=True)])
    labels = np.repeat(np.arange(num_classes), shots)
    fit = jax.jit(functools.partial(vi.fit_niw_prior, num_classes=num_classes, tol=1e-9))(x, labels)
    assert bool(fit.converged)

    # MLE asymptotics: theta_hat - theta ~ N(0, H^{-1}) with H the observed information (Hessian of -log p at the
    # fit) in theta = (mu_0, log kappa_0, log(nu_0 - d + 1), Psi_0's 3 entries); 4.5 standard errors per entry.
    def unpack(t):
        return vi.NIW(t[:2], jnp.exp(t[2]), D - 1 + jnp.exp(t[3]), jnp.array([[t[4], t[5]], [t[5], t[6]]]))

    def pack(p):
        return jnp.concatenate([p.mu, jnp.log(jnp.stack([p.kappa, p.nu - D + 1])), p.psi[(0, 0, 1), (0, 1, 1)]])

    masks = labels[None] == np.arange(num_classes)[:, None]
    neg = lambda t: -jnp.sum(jax.vmap(lambda m: vi.niw_log_marginal_likelihood(unpack(t), x, mask=m))(masks))
    value_and_hessian = jax.jit(lambda t: (neg(t), jax.hessian(neg)(t)))
    best, hess = value_and_hessian(pack(fit.prior))
    np.testing.assert_allclose(-fit.log_marginal_likelihood, best, rtol=1e-12)
    assert float(best) <= float(value_and_hessian(pack(truth))[0])  # it is the maximiser
    se = np.sqrt(np.diag(np.linalg.inv(hess)))
    np.testing.assert_array_less(np.abs(pack(fit.prior) - pack(truth)), 4.5 * se)


def test_bad_inputs_raise_naming_the_argument():
    p = prior()
    with pytest.raises(ValueError, match="prior.nu"):
        vi.niw_posterior(prior(nu=0.5), DATA)
    with pytest.raises(ValueError, match="prior.kappa"):
        vi.niw_posterior(prior(kappa=0.0), DATA)
    with pytest.raises(ValueError, match="prior.psi"):
        vi.niw_posterior(prior(psi=np.eye(3)), DATA)
    with pytest.raises(TypeError, match="prior"):
        vi.niw_posterior((MU0, 1.0, 3.0, PSI0), DATA)
    with pytest.raises(ValueError, match="x"):
        vi.niw_posterior(p, DATA[0])
    with pytest.raises(ValueError, match="x"):
        vi.niw_log_marginal_likelihood(p, np.ones((3, 3)))
    with pytest.raises(ValueError, match="mask"):
        vi.niw_posterior(p, DATA, mask=np.ones(2))
    with pytest.raises(ValueError, match="support_labels"):
        vi.niw_few_shot_log_probs(p, DATA, np.array([0, 1, 2]), DATA, num_classes=2)
    with pytest.raises(TypeError, match="num_classes"):
        vi.niw_few_shot_log_probs(p, DATA, np.array([0, 1, 1]), DATA, num_classes=2.0)
    with pytest.raises(ValueError, match="log_class_prior"):
        vi.niw_few_shot_log_probs(p, DATA, np.array([0, 1, 1]), DATA, num_classes=2, log_class_prior=np.zeros(3))
    with pytest.raises(ValueError, match="init.nu"):
        vi.fit_niw_prior(DATA, np.array([0, 1, 1]), num_classes=2, init=prior(nu=1.0))
