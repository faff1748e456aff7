"""Closed-form oracles against scipy, parameterisation converters, EDM helpers and the PFGM++ kernel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxbayes.sde import (
    VESDE,
    VPSDE,
    PFGMpp,
    SubVPSDE,
    analytic,
    convert_fn,
    denoiser_from_score,
    edm_denoiser,
    edm_precond,
    from_score,
    gaussian_score,
    gmm_denoiser,
    gmm_logpdf,
    gmm_score,
    karras_sigmas,
    score_from_denoiser,
    to_score,
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


@pytest.mark.parametrize("sde", SDES, ids=["ve", "vp", "subvp"])
def test_converters_round_trip_and_meaning(sde, x64):
    score_fn = gaussian_score(sde, MU[0], COV[0])
    x, t = jnp.array([0.2, -0.4]), 0.3
    sc = score_fn(x, t)
    for kind in ("score", "eps", "x0", "velocity"):
        np.testing.assert_allclose(to_score(from_score(sc, x, t, sde, kind), x, t, sde, kind), sc, rtol=1e-9)
    np.testing.assert_allclose(from_score(sc, x, t, sde, "velocity"), sde.reverse_drift(score_fn, x, t, ode=True))
    # x0 is Tweedie's posterior mean: for Gaussian data E[x0 | x_t] in closed form.
    m, s = sde.mean_coeff(t), sde.std(t)
    c = m**2 * COV[0] + s**2 * jnp.eye(2)
    post = MU[0] + m * COV[0] @ jnp.linalg.solve(c, x - m * MU[0])
    np.testing.assert_allclose(from_score(sc, x, t, sde, "x0"), post, rtol=1e-9)
    eps_fn = convert_fn(score_fn, sde, source="score", target="eps")
    np.testing.assert_allclose(convert_fn(eps_fn, sde, source="eps")(x, t), sc, rtol=1e-9)
    # EDM denoiser of an SDE model equals the exact Gaussian denoiser, and converts back.
    den = denoiser_from_score(score_fn, sde)
    sigma = float(sde.sigma(t))
    np.testing.assert_allclose(den(x, sigma), gmm_denoiser([1.0], MU[:1], COV[:1])(x, sigma), rtol=1e-7)
    np.testing.assert_allclose(score_from_denoiser(den, sde)(x, t), sc, rtol=1e-7)
    with pytest.raises(ValueError, match="kind"):
        to_score(sc, x, t, sde, "v")
    with pytest.raises(ValueError, match="source"):
        convert_fn(score_fn, sde, source="noise")


def test_karras_sigmas_and_precond(x64):
    s = karras_sigmas(18)
    assert s.shape == (19,) and float(s[0]) == pytest.approx(80.0) and float(s[17]) == pytest.approx(0.002)
    assert float(s[-1]) == 0.0 and bool(jnp.all(jnp.diff(s) < 0))
    np.testing.assert_allclose(karras_sigmas(1, sigma_max=3.0), [3.0, 0.0])
    # rho = 1 is linear spacing.
    np.testing.assert_allclose(karras_sigmas(5, sigma_min=1.0, sigma_max=5.0, rho=1.0)[:-1], [5, 4, 3, 2, 1])
    # Preconditioning: D with F = 0 is c_skip x; the effective target of F has unit variance when data do.
    c = edm_precond(1.3, 0.5)
    np.testing.assert_allclose(edm_denoiser(lambda u, n: jnp.zeros_like(u))(jnp.ones(2), 1.3), c.c_skip * jnp.ones(2))
    # Var[(x0 - c_skip (x0 + sigma n)) / c_out] = 1 for Var[x0] = sigma_data^2 (Karras et al. eq. 8).
    np.testing.assert_allclose((1 - c.c_skip) ** 2 * 0.25 + c.c_skip**2 * 1.3**2, c.c_out**2, rtol=1e-12)
    with pytest.raises(ValueError, match="num_steps"):
        karras_sigmas(0)


def test_pfgmpp_kernel_is_multivariate_t(x64):
    pf = PFGMpp(D=7.0)
    x, y = np.array([0.3, -1.0, 2.0]), np.array([0.0, 0.5, 1.0])
    want = stats.multivariate_t(loc=y, shape=0.8**2 * np.eye(3), df=7.0).logpdf(x)
    np.testing.assert_allclose(pf.kernel_logp(x, y, 0.8), want, rtol=1e-10)
    keys = jax.random.split(jax.random.key(0), 5000)
    draws = jax.vmap(lambda k: pf.perturb(k, jnp.asarray(y), 0.8))(keys)
    r2 = jnp.sum((draws - y) ** 2, axis=1) / (3 * 0.8**2)
    # E r2 = D / (D - 2); the t_7 squared radius has finite variance, so a 5-sigma MC band is safe.
    assert abs(float(r2.mean()) - 7 / 5) < 5 * float(r2.std()) / np.sqrt(5000)
    # D -> infinity recovers the Gaussian kernel.
    gauss = stats.multivariate_normal(y, 0.8**2 * np.eye(3)).logpdf(x)
    assert abs(float(PFGMpp(D=1e7).kernel_logp(x, y, 0.8)) - gauss) < 1e-5
    assert PFGMpp(D=9.0, sigma_max=3.0).prior_sample(jax.random.key(1), (4,)).shape == (4,)
