"""Predictors: each stochastic predictor alone samples the Gaussian marginal; names and objects agree."""

import jax
import jax.numpy as jnp
import pytest

from jaxbayes.sde import (
    VESDE,
    VPSDE,
    Ancestral,
    EulerMaruyama,
    NoPredictor,
    ReverseDiffusion,
    SubVPSDE,
    analytic,
    as_predictor,
    gaussian_score,
    pc_sampler,
    sample_batch,
)
from tests.sde.helpers import COV, MU, N, moments_ok


@pytest.mark.parametrize(("sde", "predictor"), [(VPSDE(), "euler_maruyama"), (VESDE(sigma_max=20.0), "ancestral"),
                                                 (SubVPSDE(), "reverse_diffusion"), (VPSDE(), "ancestral")],
                         ids=["vp-em", "ve-ancestral", "subvp-reverse", "vp-ancestral"])
def test_stochastic_predictors_match_gaussian_marginal(sde, predictor):
    score = gaussian_score(sde, MU, COV)
    out = jax.jit(lambda k: sample_batch(lambda kk: pc_sampler(kk, score, sde, (2,), predictor=predictor,
                                                               corrector="none", num_steps=500, denoise=False),
                                         k, N))(jax.random.key(1))
    assert int(out.nfe[0]) == 500
    mean, cov = analytic.gaussian_pushforward(sde, MU, COV, sde.eps)
    moments_ok(out.samples, mean, cov)


def test_as_predictor_names_and_objects():
    for name, cls in [("euler_maruyama", EulerMaruyama), ("reverse_diffusion", ReverseDiffusion),
                      ("ancestral", Ancestral), ("none", NoPredictor)]:
        assert as_predictor(name) == cls()
        assert as_predictor(cls()) == cls()
    assert NoPredictor().num_evals == 0 and ReverseDiffusion().num_evals == 1
    with pytest.raises(ValueError, match="predictor"):
        as_predictor("heun")
    with pytest.raises(ValueError, match="SubVPSDE"):
        Ancestral().check(SubVPSDE())


def test_a_step_with_zero_noise_is_its_mean():
    sde, score = VPSDE(), gaussian_score(VPSDE(), MU, COV)
    x = jnp.array([0.3, -0.7])
    for p in (EulerMaruyama(), ReverseDiffusion(), Ancestral()):
        new, mean = p.step(sde, score, x, jnp.asarray(0.5), jnp.asarray(-0.01), jnp.zeros(2))
        assert bool(jnp.all(new == mean)) and not bool(jnp.all(new == x))
