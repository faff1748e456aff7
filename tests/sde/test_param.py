"""Parameterisation converters (score, noise, data, velocity) round-trip and mean what they say."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes.sde import (
    VESDE,
    VPSDE,
    SubVPSDE,
    convert_fn,
    denoiser_from_score,
    from_score,
    gaussian_score,
    gmm_denoiser,
    score_from_denoiser,
    to_score,
)

W = np.array([0.2, 0.5, 0.3])
MU = np.array([[-2.0, 0.0], [1.0, 2.0], [2.0, -1.5]])
COV = np.array([[[0.5, 0.1], [0.1, 0.3]], [[0.2, 0.0], [0.0, 0.6]], [[0.4, -0.2], [-0.2, 0.4]]])
SDES = [VESDE(), VPSDE(), SubVPSDE()]


@pytest.mark.parametrize("sde", SDES, ids=["ve", "vp", "subvp"])
def test_converters_round_trip_and_meaning(sde, x64):
    score_fn = gaussian_score(sde, MU[0], COV[0])
    x, t = jnp.array([0.2, -0.4]), 0.3
    sc = score_fn(x, t)
    for kind in ("score", "eps", "x0", "velocity"):
        np.testing.assert_allclose(to_score(from_score(sc, x, t, sde, kind), x, t, sde, kind), sc, rtol=1e-9)
    np.testing.assert_allclose(from_score(sc, x, t, sde, "velocity"), sde.reverse_drift(score_fn, x, t, ode=True))
    # x0 is Tweedie's posterior mean: for Gaussian data E[x0 | x_t] in closed form.
    m, s = sde.mean_coeff(t), sde.std(t)
    c = m**2 * COV[0] + s**2 * jnp.eye(2)
    post = MU[0] + m * COV[0] @ jnp.linalg.solve(c, x - m * MU[0])
    np.testing.assert_allclose(from_score(sc, x, t, sde, "x0"), post, rtol=1e-9)
    eps_fn = convert_fn(score_fn, sde, source="score", target="eps")
    np.testing.assert_allclose(convert_fn(eps_fn, sde, source="eps")(x, t), sc, rtol=1e-9)
    # EDM denoiser of an SDE model equals the exact Gaussian denoiser, and converts back.
    den = denoiser_from_score(score_fn, sde)
    sigma = float(sde.sigma(t))
    np.testing.assert_allclose(den(x, sigma), gmm_denoiser([1.0], MU[:1], COV[:1])(x, sigma), rtol=1e-7)
    np.testing.assert_allclose(score_from_denoiser(den, sde)(x, t), sc, rtol=1e-7)
    with pytest.raises(ValueError, match="kind"):
        to_score(sc, x, t, sde, "v")
    with pytest.raises(ValueError, match="source"):
        convert_fn(score_fn, sde, source="noise")
