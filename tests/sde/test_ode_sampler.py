"""The probability-flow ODE sampler against the exact Gaussian PF trajectory: convergence orders, adaptive accuracy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes.sde import VESDE, VPSDE, SubVPSDE, analytic, gaussian_score, ode_sampler
from tests.sde.helpers import COV, IDS, MU, SDES, assert_oracle_checks, mixture_oracle_checks, slope


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_fixed_step_ode_orders_and_adaptive_accuracy(sde, x64):
    score = gaussian_score(sde, MU, COV)
    x_T = jnp.array([0.7, -1.1]) * sde.prior_std
    exact = analytic.gaussian_pf_trajectory(sde, MU, COV, x_T, sde.eps)
    steps = [64, 128]
    for solver, order in [("euler", 1), ("heun", 2), ("rk4", 4)]:
        ns = [n // 2 for n in steps] if solver == "rk4" else steps  # rk4 reaches float64 round-off sooner
        errs = [float(jnp.linalg.norm(ode_sampler(None, score, sde, (2,), solver=solver, num_steps=n,
                                                  x_init=x_T).samples - exact)) for n in ns]
        assert abs(slope(errs, ns) - order) < 0.3, (solver, errs)
    for solver in ("tsit5", "dopri5"):
        out = ode_sampler(None, score, sde, (2,), solver=solver, rtol=1e-9, atol=1e-9, x_init=x_T)
        assert bool(out.converged) and float(jnp.linalg.norm(out.samples - exact)) < 1e-6
        assert int(out.nfe) > 20


def test_max_iterations_caps_adaptive_steps_and_old_name_warns(x64):
    sde = VPSDE()
    score = gaussian_score(sde, MU, COV)
    out = ode_sampler(None, score, sde, (2,), solver="tsit5", rtol=1e-12, atol=1e-12, max_iterations=3,
                      x_init=jnp.ones(2))
    assert not bool(out.converged)
    with pytest.warns(DeprecationWarning, match="max_iterations"):
        old = ode_sampler(None, score, sde, (2,), solver="tsit5", rtol=1e-12, atol=1e-12, max_steps=3,
                          x_init=jnp.ones(2))
    np.testing.assert_array_equal(old.samples, out.samples)


def test_bad_input():
    sde = VPSDE()
    score = gaussian_score(sde, MU, COV)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="solver"):
        ode_sampler(key, score, sde, (2,), solver="rk45")
    with pytest.raises(ValueError, match="num_steps"):
        ode_sampler(key, score, sde, (2,), num_steps=0)
    with pytest.raises(ValueError, match="x_init must be finite"):
        ode_sampler(key, score, sde, (2,), x_init=jnp.array([1.0, jnp.nan]))


@pytest.mark.parametrize("d", [2, 8])
def test_defaults_match_an_exact_score_mixture(d):
    """ode_sampler at its defaults (rk4, 100 steps, no denoising) with the exact score of the anisotropic
    3-component mixture of test_pc_oracle, for VP, VE and sub-VP, N_MOMENTS = 4000 draws each: the
    energy-distance two-sample test of test_pc_oracle on the first N_SAMPLES = 1000 (d = 2) / 500 (d = 8)
    (threshold 2.5 x the largest of 100 null statistics from disjoint exact sets), the component counts'
    chi-square at level 0.001, and each component's mean and covariance entries within 4.5 standard errors
    (3 (d + d^2) z-scores per SDE). The moment check catches a score with 1.3 x the covariances (the two-sample
    test at this n does not)."""
    stats = mixture_oracle_checks(ode_sampler, d, (VPSDE(), VESDE(), SubVPSDE()))
    assert_oracle_checks(stats)
