"""Correctors: Langevin and annealed Langevin in 16-D against the Gaussian marginal; names and objects agree;
the step rules against their formulas (the oracle test of every combination is test_pc_oracle.py)."""

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
    SubVPSDE,
    analytic,
    as_corrector,
    gaussian_score,
    pc_sampler,
    sample_batch,
)
from jaxbayes.sde._correctors import langevin_alpha
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


def test_langevin_step_is_the_floored_snr_rule(x64):
    """``e = 2 alpha snr^2 d / max(||score||^2, d / s(t)^2)``: the SNR step where the score is large, the
    noise-level bound ``2 alpha (snr s(t))^2`` where it is small or zero; the draw ``z`` does not enter."""
    d, snr = 3, 0.2
    for sde in (VPSDE(), VESDE(sigma_max=20.0), SubVPSDE()):
        t = jnp.asarray(0.4)
        s, alpha = sde.std(t), langevin_alpha(sde, t)
        for score in (jnp.full(d, 10.0) / s, jnp.full(d, 0.01), jnp.zeros(d)):
            e = Langevin(snr).step_size(sde, jnp.ones(d), t, score, jnp.full(d, 7.0))
            expected = 2 * alpha * snr**2 * min(d / float(jnp.sum(score**2)) if jnp.any(score) else np.inf, s**2)
            np.testing.assert_allclose(e, expected, rtol=1e-12)
        big = Langevin(snr).step_size(sde, jnp.ones(d), t, jnp.full(d, 10.0) / s, jnp.zeros(d))
        # Song et al.'s drift-to-noise ratio ||e score|| / ||sqrt(2 e) z|| with ||z||^2 = d is sqrt(alpha) snr.
        np.testing.assert_allclose(big * np.sqrt(d) * 10 / s / np.sqrt(2 * big * d), np.sqrt(alpha) * snr, rtol=1e-12)
        np.testing.assert_allclose(Langevin(snr).step_size(sde, jnp.ones(d), t, jnp.zeros(d), jnp.zeros(d)),
                                   AnnealedLangevin(snr).step_size(sde, jnp.ones(d), t, jnp.zeros(d), None),
                                   rtol=1e-12)


def test_langevin_step_is_per_sample_and_finite():
    """A sample's step depends on its own state only (vmapped equals one at a time), and a vanishing score
    (here at the mode) gives the bounded step, not a huge one."""
    sde = VPSDE()
    xs = jax.random.normal(jax.random.key(0), (5, 2))
    scores = -xs.at[0].set(0.0)
    t = jnp.asarray(0.01)
    batched = jax.vmap(lambda x, s: Langevin().step_size(sde, x, t, s, s))(xs, scores)
    single = jnp.stack([Langevin().step_size(sde, x, t, s, s) for x, s in zip(xs, scores, strict=True)])
    np.testing.assert_allclose(batched, single, rtol=1e-6)
    assert float(batched[0]) <= float(2 * (0.16 * sde.std(t)) ** 2) * (1 + 1e-6)


def test_langevin_alpha_is_positive_for_few_noise_levels():
    """``alpha = exp(-beta / N)`` (Song et al.'s ``1 - beta / N`` to first order) stays in (0, 1] even for
    ``N < beta_max``, where ``1 - beta / N < 0`` made the step negative and the samples NaN."""
    sde = VPSDE(N=10)
    assert 0 < float(langevin_alpha(sde, jnp.asarray(1.0))) < 1
    np.testing.assert_allclose(langevin_alpha(VPSDE(), jnp.asarray(0.5)), 1 - VPSDE().beta(0.5) / 1000, rtol=1e-4)
    score = gaussian_score(sde, jnp.zeros(2), jnp.eye(2))
    out = pc_sampler(jax.random.key(0), score, sde, (2,), num_steps=10)
    assert bool(jnp.all(jnp.isfinite(out.samples)))
