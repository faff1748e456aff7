"""The predictor-corrector sampler: GMM mode weights, objects and names give the same samples, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes.sde import (
    VPSDE,
    AnnealedLangevin,
    EulerMaruyama,
    Langevin,
    NoCorrector,
    ReverseDiffusion,
    SubVPSDE,
    gaussian_score,
    gmm_score,
    pc_sampler,
    sample_batch,
)
from tests.sde.helpers import COV, GMM_COVS, GMM_MEANS, GMM_W, MU, assert_mode_weights


def test_gmm_mode_weights_chi_square():
    sde = VPSDE()
    score = gmm_score(sde, jnp.asarray(GMM_W), jnp.asarray(GMM_MEANS), jnp.asarray(GMM_COVS))
    n = 3000
    x = jax.jit(lambda k: sample_batch(lambda kk: pc_sampler(kk, score, sde, (2,), num_steps=300, corrector="none"),
                                       k, n))(jax.random.key(5)).samples
    assert_mode_weights(x, n)


def test_objects_and_names_give_the_same_samples():
    sde = VPSDE()
    score = gaussian_score(sde, MU, COV)
    keys = jax.random.split(jax.random.key(0), 4)
    cases = [(dict(predictor="euler_maruyama", corrector="annealed_langevin", snr=0.2, num_corrector_steps=2),
              dict(predictor=EulerMaruyama(), corrector=AnnealedLangevin(0.2, 2))),
             (dict(corrector="langevin", snr=0.1), dict(predictor=ReverseDiffusion(), corrector=Langevin(0.1))),
             (dict(corrector="none"), dict(corrector=NoCorrector()))]
    for names, objects in cases:
        a = jax.vmap(lambda k, kw=names: pc_sampler(k, score, sde, (2,), num_steps=20, **kw))(keys)
        b = jax.vmap(lambda k, kw=objects: pc_sampler(k, score, sde, (2,), num_steps=20, **kw))(keys)
        np.testing.assert_array_equal(a.samples, b.samples)
        np.testing.assert_array_equal(a.nfe, b.nfe)
    assert int(pc_sampler(keys[0], score, sde, (2,), num_steps=20, corrector=AnnealedLangevin(0.2, 3)).nfe) == 81


def test_old_argument_name_warns_and_works():
    sde = VPSDE()
    score = gaussian_score(sde, MU, COV)
    with pytest.warns(DeprecationWarning, match="num_corrector_steps"):
        old = pc_sampler(jax.random.key(0), score, sde, (2,), num_steps=5, n_corrector=2)
    new = pc_sampler(jax.random.key(0), score, sde, (2,), num_steps=5, num_corrector_steps=2)
    np.testing.assert_array_equal(old.samples, new.samples)


def test_bad_input():
    sde = VPSDE()
    score = gaussian_score(sde, MU, COV)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="predictor"):
        pc_sampler(key, score, sde, (2,), predictor="heun")
    with pytest.raises(ValueError, match="corrector"):
        pc_sampler(key, score, sde, (2,), corrector="mala")
    with pytest.raises(ValueError, match="score_fn"):
        pc_sampler(key, lambda x, t: jnp.zeros(3), sde, (2,), num_steps=5)
    with pytest.raises(ValueError, match="x_init must have shape"):
        pc_sampler(key, score, sde, (2,), x_init=jnp.ones(3))
    with pytest.raises(ValueError, match="SubVPSDE"):
        pc_sampler(key, gaussian_score(SubVPSDE(), MU, COV), SubVPSDE(), (2,), predictor="ancestral")
    with pytest.raises(ValueError, match="snr"):
        pc_sampler(key, score, sde, (2,), snr=-1.0)
    with pytest.raises(ValueError, match="num_corrector_steps"):
        pc_sampler(key, score, sde, (2,), num_corrector_steps=-1)
    with pytest.raises(ValueError, match="corrector object"):
        pc_sampler(key, score, sde, (2,), corrector=Langevin(0.1), snr=0.2)


def test_a_sample_shape_the_score_cannot_take_is_one_clear_error():
    vp = VPSDE()
    with pytest.raises(ValueError, match=r"score_fn\(x, t\) fails on x of shape \(3,\) \(the sample shape\)"):
        pc_sampler(jax.random.key(0), gaussian_score(vp, jnp.zeros(2), jnp.eye(2)), vp, (3,), num_steps=5)
