"""DPM-Solver++(2M): second order against the exact PF trajectory; GMM mode weights; the log-SNR grid."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes.sde import (
    VESDE,
    VPSDE,
    SubVPSDE,
    analytic,
    dpm_solver_pp_2m,
    gaussian_score,
    gmm_score,
    logsnr_grid,
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
    assert_mode_weights,
    assert_oracle_checks,
    mixture_oracle_checks,
    slope,
)


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


@pytest.mark.parametrize("d", [2, 8])
def test_defaults_match_an_exact_score_mixture(d):
    """dpm_solver_pp_2m at its defaults (20 steps on the log-SNR grid, no denoising) with the exact score of the
    anisotropic 3-component mixture of test_pc_oracle, 2000 draws per SDE.

    VP and VE: the energy-distance two-sample test of test_pc_oracle on the first 1000 (d = 2) / 500 (d = 8)
    draws (threshold 2.5 x the largest of 100 null statistics from disjoint exact sets), the component counts'
    chi-square at level 0.001, and each component's mean and covariance entries within 4.5 standard errors
    (a score with 1.3 x the covariances gives covariance z of 8.7 to 10.3 here; the exact one 2.5 to 4.2).
    Sub-VP: the energy test at the defaults; its moments at 40 steps. Its 20-step discretisation bias is
    visible in the component moments (mean / covariance z of 9 to 13 at 4000 draws; 10 steps: 46 to 75, 40
    steps: <= 3.7, 80 steps: <= 2.7): its log-SNR range, 14.2, is 1.5 x VP's, so its steps are longer.
    (VP's 20-step z reaches 4.2 at 2000 draws and 4.7 at 4000, VE's 3.2 and 3.8: near detection.)"""
    assert_oracle_checks(mixture_oracle_checks(dpm_solver_pp_2m, d, (VPSDE(), VESDE()), n=2000))
    energy = mixture_oracle_checks(dpm_solver_pp_2m, d, (SubVPSDE(),), n=2000)["SubVPSDE"][0]
    assert energy < 1, energy
    assert_oracle_checks(mixture_oracle_checks(functools.partial(dpm_solver_pp_2m, num_steps=40), d, (SubVPSDE(),),
                                               n=2000))
