"""The probability-flow ODE sampler against the exact Gaussian PF trajectory: convergence orders, adaptive accuracy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes.sde import VPSDE, analytic, gaussian_score, ode_sampler
from tests.sde.helpers import COV, IDS, MU, SDES, slope


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
