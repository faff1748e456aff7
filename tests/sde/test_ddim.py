"""DDIM: first order on the exact PF flow, one-step exact for point data, eta = 1 samples the Gaussian."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes.sde import VPSDE, SubVPSDE, analytic, ddim_sampler, gaussian_score, sample_batch
from tests.sde.helpers import COV, IDS, MU, SDES, N, moments_ok, slope


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_first_order_on_the_exact_pf_flow(sde, x64):
    score = gaussian_score(sde, MU, COV)
    x_T = jnp.array([0.7, -1.1]) * sde.prior_std
    steps = [64, 128]
    # DDIM (eta = 0) is a first-order solver of the same flow, ending at t = 0.
    exact0 = analytic.gaussian_pf_trajectory(sde, MU, COV, x_T, 0.0)
    errs = [float(jnp.linalg.norm(ddim_sampler(None, score, sde, (2,), num_steps=n, x_init=x_T).samples
                                  - exact0)) for n in steps]
    assert abs(slope(errs, steps) - 1) < 0.2, errs


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_one_step_exact_for_single_point_data(sde, x64):
    point = jnp.array([2.0, -3.0])
    score = gaussian_score(sde, point, jnp.zeros((2, 2)))
    out = ddim_sampler(jax.random.key(0), score, sde, (2,), num_steps=1)
    np.testing.assert_allclose(out.samples, point, rtol=1e-10)
    assert int(out.nfe) == 1


def test_eta1_matches_the_gaussian():
    sde = SubVPSDE()
    score = gaussian_score(sde, MU, COV)
    out = jax.jit(lambda k: sample_batch(lambda kk: ddim_sampler(kk, score, sde, (2,), num_steps=500, eta=1.0),
                                         k, N))(jax.random.key(2))
    moments_ok(out.samples, MU, COV)


def test_bad_input():
    sde = VPSDE()
    with pytest.raises(ValueError, match="num_steps"):
        ddim_sampler(jax.random.key(0), gaussian_score(sde, MU, COV), sde, (2,), num_steps=0)
