"""Losses against closed-form expectations at the exact score."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from jaxbayes.sde import VESDE, VPSDE, ddpm_loss, dsm_loss, edm_loss, gaussian_score, gmm_denoiser, smld_loss
from tests.sde.helpers import COV, MU


def _expected_dsm(sde, ts):
    """E_z||s score + z||^2 / d = 1 - s^2 tr(C_t^{-1}) / d at each t (E[z | x_t] = -s score)."""
    out = []
    for t in ts:
        m, s = float(sde.mean_coeff(t)), float(sde.std(t))
        c = m**2 * COV + s**2 * np.eye(2)
        out.append(1 - s**2 * np.trace(np.linalg.inv(c)) / 2)
    return np.array(out)


def test_dsm_and_ddpm_losses_match_closed_form_at_exact_score():
    sde = VPSDE(N=50)
    score = gaussian_score(sde, MU, COV)
    x0 = jax.random.multivariate_normal(jax.random.key(1), jnp.asarray(MU), jnp.asarray(COV), (20000,))
    want = integrate.quad(lambda t: _expected_dsm(sde, [t])[0], sde.eps, sde.T)[0] / (sde.T - sde.eps)
    got = float(dsm_loss(jax.random.key(2), score, sde, x0))
    # per-sample losses are bounded by ~ chi^2_2 / 2 scale: MC std < 1.5 / sqrt(n)
    assert abs(got - want) < 4 * 1.5 / np.sqrt(20000)
    ts = sde.eps + np.arange(sde.N) * (sde.T - sde.eps) / (sde.N - 1)
    got = float(ddpm_loss(jax.random.key(3), score, sde, x0))
    assert abs(got - _expected_dsm(sde, ts).mean()) < 4 * 1.5 / np.sqrt(20000)
    # The exact score beats a wrong one with the same random numbers, in every loss.
    wrong = gaussian_score(sde, MU, 2 * COV)
    for loss in (lambda f: dsm_loss(jax.random.key(4), f, sde, x0, likelihood_weighting=True),
                 lambda f: dsm_loss(jax.random.key(4), f, sde, x0, reduce="sum"),
                 lambda f: ddpm_loss(jax.random.key(4), f, sde, x0)):
        assert float(loss(score)) < float(loss(wrong))
    ve = VESDE(sigma_max=10.0, N=50)
    assert float(smld_loss(jax.random.key(5), gaussian_score(ve, MU, COV), ve, x0)) < float(
        smld_loss(jax.random.key(5), gaussian_score(ve, MU, 2 * COV), ve, x0))
    den, den_wrong = gmm_denoiser([1.0], MU[None], COV[None]), gmm_denoiser([1.0], MU[None], 2 * COV[None])
    assert float(edm_loss(jax.random.key(6), den, x0)) < float(edm_loss(jax.random.key(6), den_wrong, x0))
    with pytest.raises(TypeError, match="VPSDE"):
        ddpm_loss(jax.random.key(0), score, VESDE(), x0)
    with pytest.raises(ValueError, match="reduce"):
        dsm_loss(jax.random.key(0), score, sde, x0, reduce="max")
    with pytest.raises(ValueError, match="batch"):
        dsm_loss(jax.random.key(0), score, sde, x0[0])
    with pytest.raises(ValueError, match="score_fn"):
        dsm_loss(jax.random.key(0), lambda x, t: x[:1], sde, x0)


def test_an_empty_batch_is_refused_naming_x0():
    with pytest.raises(ValueError, match="x0 is an empty batch"):
        dsm_loss(jax.random.key(0), lambda x, t: -x, VPSDE(), jnp.zeros((0, 2)))


def _chunked_mean_and_se(loss, x0, num_chunks=20):
    """The loss over ``num_chunks`` disjoint chunks with their own keys: overall mean and its standard error
    from the spread of the chunk means (no assumption on the per-sample distribution)."""
    means = np.array([float(loss(jax.random.key(100 + i), c)) for i, c in enumerate(np.split(x0, num_chunks))])
    return means.mean(), means.std(ddof=1) / np.sqrt(num_chunks)


def test_smld_and_edm_losses_equal_their_closed_forms_at_the_exact_score(x64):
    """Gaussian data N(MU, COV) in d = 2.
    SMLD at level sigma: E||sigma score + z||^2 / d = 1 - sigma^2 tr((COV + sigma^2 I)^-1) / d, averaged over
    the N levels. EDM: lambda(sigma) E||D(x) - x_0||^2 / d = lambda tr(Cov[x_0 | x]) / d with
    Cov[x_0 | x] = sigma^2 COV (COV + sigma^2 I)^-1, averaged over log sigma ~ N(-1.2, 1.2^2) (Gauss-Hermite).
    Each within 5 standard errors of its 40000-sample estimate."""
    x0 = np.asarray(jax.random.multivariate_normal(jax.random.key(1), jnp.asarray(MU), jnp.asarray(COV),
                                                   (40_000,)))
    ve = VESDE(sigma_max=10.0, N=50)
    score = gaussian_score(ve, MU, COV)
    sigmas = [float(ve.std(i * ve.T / (ve.N - 1))) for i in range(ve.N)]
    want = np.mean([1 - s**2 * np.trace(np.linalg.inv(COV + s**2 * np.eye(2))) / 2 for s in sigmas])
    got, se = _chunked_mean_and_se(lambda k, c: smld_loss(k, score, ve, c), x0)
    assert abs(got - want) < 5 * se, (got, want, se)

    den = gmm_denoiser([1.0], MU[None], COV[None])
    u, w = np.polynomial.hermite_e.hermegauss(80)
    w = w / w.sum()
    sd = 0.5

    def expected(sigma):
        lam = (sigma**2 + sd**2) / (sigma * sd) ** 2
        post = sigma**2 * COV @ np.linalg.inv(COV + sigma**2 * np.eye(2))
        return lam * np.trace(post) / 2

    want = sum(wi * expected(np.exp(-1.2 + 1.2 * ui)) for ui, wi in zip(u, w, strict=True))
    got, se = _chunked_mean_and_se(lambda k, c: edm_loss(k, den, c), x0)
    assert abs(got - want) < 5 * se, (got, want, se)
