"""Stochastic interpolants against the Gaussian closed forms: velocity <-> score, loss, ODE and SDE samplers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes.sde import Interpolant, gaussian_velocity, interpolant_loss, interpolant_sampler, sample_batch
from tests.sde.helpers import COV, MU, N, moments_ok


@pytest.mark.parametrize("kind", ["linear", "trig"])
def test_interpolant_velocity_score_and_loss(kind, x64):
    it = Interpolant(kind)
    v = gaussian_velocity(it, MU, COV)
    x = np.array([0.3, -0.2])
    for t in (0.0, 0.3, 0.8):
        a, b, _, _ = it.coeffs(t)
        c = a**2 * np.eye(2) + b**2 * COV
        exact_score = -np.linalg.solve(c, x - b * MU)
        np.testing.assert_allclose(it.score_from_velocity(v(x, t), x, t), exact_score, rtol=1e-9)
        if t > 0:
            np.testing.assert_allclose(it.velocity_from_score(exact_score, x, t), v(x, t), rtol=1e-9)
    # The ODE (noise = 0) with the exact velocity carries N(0, I) to the data distribution.
    out = jax.jit(jax.vmap(lambda k: interpolant_sampler(k, v, it, (2,), num_steps=200).samples))(
        jax.random.split(jax.random.key(0), 2000))
    assert np.all(np.abs(np.asarray(out).mean(0) - MU) < 4.5 * np.sqrt(np.diag(COV) / 2000) + 5e-3)
    x1 = jax.random.multivariate_normal(jax.random.key(1), jnp.asarray(MU), jnp.asarray(COV), (4000,))
    zero = lambda x, t: jnp.zeros_like(x)
    assert float(interpolant_loss(jax.random.key(2), v, it, x1)) < float(interpolant_loss(jax.random.key(2), zero,
                                                                                            it, x1))
    with pytest.raises(ValueError, match="kind"):
        Interpolant("cubic")


def test_sde_sampler_matches_the_gaussian():
    for kind in ("linear", "trig"):
        it = Interpolant(kind)
        v = gaussian_velocity(it, MU, COV)
        out = jax.jit(lambda k, it=it, v=v: sample_batch(
            lambda kk: interpolant_sampler(kk, v, it, (2,), noise=1.0, num_steps=200), k, N))(jax.random.key(4))
        moments_ok(out.samples, MU, COV)
