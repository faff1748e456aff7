"""DPM-Solver++(2M): second order against the exact PF trajectory; GMM mode weights; the log-SNR grid."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes.sde import VPSDE, analytic, dpm_solver_pp_2m, gaussian_score, gmm_score, logsnr_grid, sample_batch
from tests.sde.helpers import COV, GMM_COVS, GMM_MEANS, GMM_W, IDS, MU, SDES, assert_mode_weights, slope


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_second_order_on_the_exact_pf_trajectory(sde, x64):
    score = gaussian_score(sde, MU, COV)
    x_T = jnp.array([0.7, -1.1]) * sde.prior_std
    exact = analytic.gaussian_pf_trajectory(sde, MU, COV, x_T, sde.eps)
    steps = [64, 128]
    errs = [float(jnp.linalg.norm(dpm_solver_pp_2m(None, score, sde, (2,), num_steps=n, x_init=x_T).samples
                                  - exact)) for n in steps]
    assert abs(slope(errs, steps) - 2) < 0.3, errs


def test_gmm_mode_weights_chi_square():
    sde = VPSDE()
    score = gmm_score(sde, jnp.asarray(GMM_W), jnp.asarray(GMM_MEANS), jnp.asarray(GMM_COVS))
    n = 3000
    x = jax.jit(lambda k: sample_batch(lambda kk: dpm_solver_pp_2m(kk, score, sde, (2,), num_steps=20), k, n))(
        jax.random.key(5)).samples
    assert_mode_weights(x, n)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_logsnr_grid_is_uniform_in_lambda(sde, x64):
    ts = logsnr_grid(sde, 8)
    lam = np.log(np.asarray(sde.mean_coeff(ts)) / np.asarray(sde.std(ts)))
    assert float(ts[0]) == sde.T and float(ts[-1]) == sde.eps
    np.testing.assert_allclose(np.diff(lam), np.diff(lam)[0], rtol=1e-8)


def test_bad_input():
    sde = VPSDE()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="score_fn"):
        dpm_solver_pp_2m(key, lambda x, t: x.sum(), sde, (2,))
    with pytest.raises(ValueError, match="grid"):
        dpm_solver_pp_2m(key, gaussian_score(sde, MU, COV), sde, (2,), grid="karras")
