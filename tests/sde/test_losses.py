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
