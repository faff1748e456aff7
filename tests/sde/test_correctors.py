"""Correctors: Langevin and annealed Langevin in 16-D against the Gaussian marginal; names and objects agree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes.sde import (
    VESDE,
    VPSDE,
    AnnealedLangevin,
    Langevin,
    NoCorrector,
    analytic,
    as_corrector,
    gaussian_score,
    pc_sampler,
    sample_batch,
)
from tests.sde.helpers import moments_ok


def test_pc_langevin_and_annealed_langevin_in_16d():
    d = 16
    a = jax.random.normal(jax.random.key(3), (d, d)) / np.sqrt(d)
    cov, mu = 0.3 * jnp.eye(d) + 0.2 * a @ a.T, jnp.linspace(-1, 1, d)
    for sde, predictor, corrector, snr, n_corr, extra in [(VPSDE(), "reverse_diffusion", "langevin", 0.05, 1, 1.0),
                                                          (VESDE(sigma_max=20.0), "none", "annealed_langevin", 0.3,
                                                           10, 0.5)]:
        score = gaussian_score(sde, mu, cov)
        out = jax.jit(lambda k, sde=sde, score=score, p=predictor, c=corrector, s=snr, nc=n_corr: sample_batch(
            lambda kk: pc_sampler(kk, score, sde, (d,), predictor=p, corrector=c, snr=s, num_corrector_steps=nc,
                                  num_steps=100 if p == "none" else 200, denoise=False), k, 2000))(jax.random.key(1))
        mean, c = analytic.gaussian_pushforward(sde, mu, cov, sde.eps)
        # 152 mean/covariance entries are checked at once, and Langevin steps add an O(snr^2) bias.
        moments_ok(out.samples, mean, c, extra=extra)


def test_as_corrector_names_and_objects():
    assert as_corrector("langevin") == Langevin(0.16, 1)
    assert as_corrector("annealed_langevin", snr=0.3, num_steps=10) == AnnealedLangevin(0.3, 10)
    assert as_corrector("none", snr=0.3) == NoCorrector() and NoCorrector().num_steps == 0
    assert as_corrector(Langevin(0.1)) == Langevin(0.1)
    with pytest.raises(ValueError, match="corrector"):
        as_corrector("mala")
    with pytest.raises(ValueError, match="snr"):
        as_corrector(Langevin(0.1), snr=0.2)
    with pytest.raises(ValueError, match="snr"):
        Langevin(snr=-1.0)
    with pytest.raises(ValueError, match="num_steps"):
        AnnealedLangevin(num_steps=-1)


def test_correctors_are_pytrees_and_trace_snr():
    c = Langevin(0.1, 2)
    assert jax.tree.leaves(c) == [0.1]
    doubled = jax.jit(lambda c: c)(jax.tree.map(lambda s: 2 * s, c))
    assert doubled.num_steps == 2 and float(doubled.snr) == pytest.approx(0.2)


def test_annealed_step_is_tied_to_the_noise_level(x64):
    sde = VESDE(sigma_max=20.0)
    x, t, z = jnp.ones(3), jnp.asarray(0.4), jnp.zeros(3)
    e = AnnealedLangevin(0.3).step_size(sde, x, t, -x, z)
    np.testing.assert_allclose(e, 2 * (0.3 * sde.std(t)) ** 2, rtol=1e-12)
