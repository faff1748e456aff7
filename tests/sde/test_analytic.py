"""The closed-form Gaussian and GMM scores, densities, denoisers and PF trajectories against scipy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxbayes.sde import (
    VESDE,
    VPSDE,
    SubVPSDE,
    analytic,
    gaussian_score,
    gmm_denoiser,
    gmm_logpdf,
    gmm_score,
)

W = np.array([0.2, 0.5, 0.3])
MU = np.array([[-2.0, 0.0], [1.0, 2.0], [2.0, -1.5]])
COV = np.array([[[0.5, 0.1], [0.1, 0.3]], [[0.2, 0.0], [0.0, 0.6]], [[0.4, -0.2], [-0.2, 0.4]]])
SDES = [VESDE(), VPSDE(), SubVPSDE()]


def _scipy_gmm_logpdf(x, m, s):
    dens = sum(w * stats.multivariate_normal(m * mu, m**2 * c + s**2 * np.eye(2)).pdf(x)
               for w, mu, c in zip(W, MU, COV, strict=True))
    return np.log(dens)


@pytest.mark.parametrize("sde", SDES, ids=["ve", "vp", "subvp"])
def test_gmm_logpdf_and_score_match_scipy(sde, x64):
    x = np.array([0.4, -0.3])
    for t in (0.0, 0.1, 0.5):
        m, s = float(sde.mean_coeff(t)), float(sde.std(t))
        np.testing.assert_allclose(gmm_logpdf(sde, W, MU, COV, x, t), _scipy_gmm_logpdf(x, m, s), rtol=1e-10)
        h = 1e-6
        fd = [(_scipy_gmm_logpdf(x + h * e, m, s) - _scipy_gmm_logpdf(x - h * e, m, s)) / (2 * h) for e in np.eye(2)]
        np.testing.assert_allclose(gmm_score(sde, W, MU, COV)(x, t), fd, rtol=1e-5, atol=1e-6)


def test_gaussian_score_and_denoiser_closed_forms(x64):
    sde = VPSDE()
    mu, cov = MU[0], COV[0]
    x = np.array([0.3, 0.1])
    for t in (0.05, 0.5):
        m, s = float(sde.mean_coeff(t)), float(sde.std(t))
        want = -np.linalg.solve(m**2 * cov + s**2 * np.eye(2), x - m * mu)
        np.testing.assert_allclose(gaussian_score(sde, mu, cov)(x, t), want, rtol=1e-10)
    # EDM denoiser of Gaussian data: the posterior mean mu + S (S + sigma^2 I)^{-1} (x - mu).
    for sigma in (0.0, 0.3, 4.0):
        want = mu + cov @ np.linalg.solve(cov + sigma**2 * np.eye(2), x - mu)
        np.testing.assert_allclose(gmm_denoiser([1.0], mu[None], cov[None])(x, sigma), want, rtol=1e-10)


@pytest.mark.parametrize("sde", SDES, ids=["ve", "vp", "subvp"])
def test_exact_pf_trajectory_solves_the_ode(sde, x64):
    mu, cov = MU[1], COV[0]
    x_T = jnp.array([1.5, -0.5])
    traj = lambda t: analytic.gaussian_pf_trajectory(sde, mu, cov, x_T, t)
    np.testing.assert_allclose(traj(sde.T), x_T, rtol=1e-12)
    score = gaussian_score(sde, mu, cov)
    for t in (0.01, 0.3, 0.8):
        dxdt = jax.jacfwd(traj)(t)
        np.testing.assert_allclose(dxdt, sde.reverse_drift(score, traj(t), t, ode=True), rtol=1e-7, atol=1e-9)


def test_analytic_module_is_public():
    import jaxbayes.sde

    assert jaxbayes.sde.analytic is analytic and "gaussian_pf_trajectory" in dir(analytic)


def test_mixture_weights_are_checked_and_normalised(x64):
    """Negative or all-zero weights are refused naming ``weights``; positive ones are normalised, so the
    log density of weights (2, 6) equals that of (0.25, 0.75) (previously NaN / a shifted density)."""
    sde, means, covs = VPSDE(), jnp.array([[0.0, 0.0], [2.0, 1.0]]), jnp.stack([jnp.eye(2), 0.5 * jnp.eye(2)])
    with pytest.raises(ValueError, match="weights"):
        gmm_score(sde, jnp.array([-0.5, 1.5]), means, covs)
    with pytest.raises(ValueError, match="weights"):
        gmm_score(sde, jnp.zeros(2), means, covs)
    with pytest.raises(ValueError, match="means"):
        gmm_score(sde, jnp.ones(2), means.at[0, 0].set(jnp.nan), covs)
    x = jnp.array([0.3, -0.2])
    np.testing.assert_allclose(gmm_logpdf(sde, jnp.array([2.0, 6.0]), means, covs, x, 0.0),
                               gmm_logpdf(sde, jnp.array([0.25, 0.75]), means, covs, x, 0.0), rtol=1e-14)
    mvn = stats.multivariate_normal
    exact = np.log(0.25 * mvn(np.zeros(2), np.eye(2)).pdf(x) + 0.75 * mvn([2.0, 1.0], 0.5 * np.eye(2)).pdf(x))
    np.testing.assert_allclose(gmm_logpdf(sde, jnp.array([2.0, 6.0]), means, covs, x, 0.0), exact, rtol=1e-12)
