"""EDM: Heun order and NFE, one step exact for point data, churn moments, a two-sample test, Karras levels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes.sde import (
    VESDE,
    denoiser_from_score,
    edm_denoiser,
    edm_precond,
    edm_sampler,
    gaussian_score,
    gmm_denoiser,
    gmm_score,
    karras_sigmas,
    ode_sampler,
    sample_batch,
)
from tests.sde.helpers import (
    COV,
    GMM_COVS,
    GMM_MEANS,
    GMM_W,
    IDS,
    MU,
    SDES,
    N,
    assert_mode_weights,
    moments_ok,
    slope,
)


def test_edm_heun_order_and_nfe(x64):
    den = gmm_denoiser([1.0], MU[None], COV[None])
    lam, u = np.linalg.eigh(COV)
    x0 = jnp.array([50.0, -30.0])
    exact = MU + u @ (np.sqrt(lam / (lam + 80.0**2)) * (u.T @ (x0 - MU)))
    steps = [18, 36]
    for solver, order in [("euler", 1), ("heun", 2)]:
        outs = [edm_sampler(None, den, (2,), num_steps=n, solver=solver, x_init=x0) for n in steps]
        errs = [float(jnp.linalg.norm(o.samples - exact)) for o in outs]
        assert abs(slope(errs, steps) - order) < 0.3, (solver, errs)
        assert [int(o.nfe) for o in outs] == [n if solver == "euler" else 2 * n - 1 for n in steps]


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_one_step_exact_for_single_point_data(sde, x64):
    point = jnp.array([2.0, -3.0])
    score = gaussian_score(sde, point, jnp.zeros((2, 2)))
    # EDM Euler with one step, on the denoiser built from this SDE's score.
    den = denoiser_from_score(score, sde)
    out = edm_sampler(jax.random.key(1), den, (2,), num_steps=1, solver="euler", sigma_max=float(sde.sigma(0.9)))
    np.testing.assert_allclose(out.samples, point, rtol=1e-8)


def test_churn_matches_the_gaussian():
    den = gmm_denoiser([1.0], MU[None], COV[None])
    out = jax.jit(lambda k: sample_batch(lambda kk: edm_sampler(kk, den, (2,), num_steps=64, s_churn=30.0), k, N))(
        jax.random.key(3))
    assert int(out.nfe[0]) == 127
    moments_ok(out.samples, MU, COV)


def test_sliced_wasserstein_against_null_distribution():
    from jaxbayes.datasets import GaussianMixture, gaussian_mixture

    w = np.array([0.3, 0.7])
    means = np.array([[-2.0, 1.0], [2.0, -1.0]])
    covs = np.stack([0.4 * np.eye(2), np.array([[0.5, 0.3], [0.3, 0.5]])])
    mix = GaussianMixture(w, means, covs)
    n = 2000
    dirs = np.array(jax.random.normal(jax.random.key(9), (64, 2)))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)

    def sw(a, b):
        pa, pb = np.sort(np.asarray(a) @ dirs.T, axis=0), np.sort(np.asarray(b) @ dirs.T, axis=0)
        return float(np.sqrt(np.mean((pa - pb) ** 2)))

    ref = np.asarray(gaussian_mixture(jax.random.key(100), n, mix)[0])
    null = [sw(ref, gaussian_mixture(jax.random.key(200 + i), n, mix)[0]) for i in range(40)]
    sde = VESDE(sigma_max=20.0)
    den = gmm_denoiser(w, means, covs)
    x = jax.jit(lambda k: sample_batch(lambda kk: edm_sampler(kk, den, (2,), num_steps=18), k, n))(
        jax.random.key(6)).samples
    assert sw(ref, x) < np.quantile(null, 0.99), (sw(ref, x), np.quantile(null, [0.5, 0.99]))
    # A sampler with far too few steps is caught by the same test (the test has power).
    score = gmm_score(sde, w, means, covs)
    bad = jax.jit(lambda k: sample_batch(lambda kk: ode_sampler(kk, score, sde, (2,), solver="euler",
                                                                num_steps=3), k, n))(jax.random.key(6)).samples
    assert sw(ref, bad) > np.quantile(null, 0.99)


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


def test_gmm_mode_weights_chi_square():
    den = gmm_denoiser(jnp.asarray(GMM_W), jnp.asarray(GMM_MEANS), jnp.asarray(GMM_COVS))
    n = 3000
    x = jax.jit(lambda k: sample_batch(lambda kk: edm_sampler(kk, den, (2,), num_steps=18), k, n))(
        jax.random.key(5)).samples
    assert_mode_weights(x, n)


def test_bad_input():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_steps"):
        edm_sampler(key, gmm_denoiser([1.0], MU[None], COV[None]), (2,), num_steps=0)
    with pytest.raises(ValueError, match="denoise_fn"):
        edm_sampler(key, lambda x, s: x[:1], (2,))
