"""Shared sampler pieces: the chunked per-step noise, Tweedie's denoiser, the start state."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxbayes.sde import VPSDE, gaussian_score, tweedie_denoise


def test_chunked_step_noise_is_iid_normal_and_per_step():
    from jaxbayes.sde._sampling import NOISE_CHUNK, scan_with_noise

    steps, dim = 2 * NOISE_CHUNK + 5, 3  # two full chunks and a remainder

    def collect(key):
        def body(carry, i, z):
            return carry.at[i].set(z[0] + 10.0 * z[1])  # z[1] must be independent of z[0]

        return scan_with_noise(body, jnp.zeros((steps, dim)), key, steps, 2, jnp.zeros(dim))

    zs = np.asarray(jax.jit(jax.vmap(collect))(jax.random.split(jax.random.key(0), 2000)))  # (2000, steps, dim)
    flat = zs.reshape(2000, -1)
    n = flat.shape[0]
    # Each entry is N(0, 101); every pair of (step, coordinate) entries uncorrelated: 5-sigma bounds for n draws.
    np.testing.assert_allclose(flat.var(0) / 101.0, 1.0, atol=5 * np.sqrt(2 / n))
    corr = np.corrcoef(flat.T)[np.triu_indices(flat.shape[1], 1)]
    assert np.max(np.abs(corr)) < 5.5 / np.sqrt(n)


def test_tweedie_is_the_posterior_mean_of_gaussian_data(x64):
    # x0 ~ N(mu, C), x_t = m x0 + s z: E[x0 | x_t] = mu + m C (m^2 C + s^2 I)^{-1} (x_t - m mu).
    sde = VPSDE()
    mu, cov = np.array([1.0, -0.5]), np.array([[0.5, 0.2], [0.2, 0.3]])
    t, x = 0.4, np.array([0.3, 0.9])
    m, s = float(sde.mean_coeff(t)), float(sde.std(t))
    want = mu + m * cov @ np.linalg.solve(m**2 * cov + s**2 * np.eye(2), x - m * mu)
    np.testing.assert_allclose(tweedie_denoise(gaussian_score(sde, mu, cov), sde, jnp.asarray(x), t), want,
                               rtol=1e-10)
