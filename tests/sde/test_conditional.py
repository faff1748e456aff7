"""Conditional sampling: classifier guidance with the exact likelihood samples the posterior; DPS; inpainting."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes.sde import (
    VPSDE,
    classifier_guidance,
    colorize,
    dps_sampler,
    gaussian_score,
    inpaint,
    ode_sampler,
    sample_batch,
)
from tests.sde.helpers import COV, MU


def test_classifier_guidance_with_exact_likelihood_samples_the_posterior():
    # y = A x + N(0, noise^2): p_t(y | x_t) is Gaussian in closed form, so the guided score is the exact
    # posterior score and the probability-flow ODE samples the exact posterior N(mu_post, S_post).
    sde = VPSDE()
    a, noise, y = np.array([[1.0, 1.0]]), 0.3, np.array([0.2])
    post_cov = np.linalg.inv(np.linalg.inv(COV) + a.T @ a / noise**2)
    post_mean = post_cov @ (np.linalg.solve(COV, MU) + a.T @ y / noise**2)

    def log_lik(x, t):
        m, s = sde.mean_coeff(t), sde.std(t)
        c = m**2 * COV + s**2 * jnp.eye(2)
        gain = m * COV @ jnp.linalg.inv(c)
        mean0 = MU + gain @ (x - m * MU)
        cov0 = COV - gain @ (m * COV)
        r = y - a @ mean0
        v = a @ cov0 @ a.T + noise**2
        return -0.5 * jnp.sum(r * jnp.linalg.solve(v, r))

    guided = classifier_guidance(gaussian_score(sde, MU, COV), log_lik)
    x = jax.jit(lambda k: sample_batch(lambda kk: ode_sampler(kk, guided, sde, (2,), solver="heun", num_steps=100),
                                       k, 3000))(jax.random.key(0)).samples
    x = np.asarray(x)
    se = np.sqrt(np.diag(post_cov) / 3000)
    assert np.all(np.abs(x.mean(0) - post_mean) < 4.5 * se)
    assert np.all(np.abs(np.cov(x.T) - post_cov) < 4.5 * np.sqrt(2 / 3000) * np.max(np.diag(post_cov)) + 2e-3)
    # DPS is approximate, but it must move samples from the prior towards the measurement.
    dps = jax.jit(lambda k: sample_batch(lambda kk: dps_sampler(kk, gaussian_score(sde, MU, COV), sde, y,
                                                                lambda u: a @ u, (2,), step_size=0.2,
                                                                num_steps=100), k, 500))(jax.random.key(1))
    res_dps = np.abs(np.asarray(dps.samples) @ a.T - y).mean()
    res_prior = np.abs(np.random.default_rng(0).multivariate_normal(MU, COV, 500) @ a.T - y).mean()
    assert res_dps < 0.5 * res_prior and int(dps.nfe[0]) == 101
    with pytest.raises(ValueError, match="forward_fn"):
        dps_sampler(jax.random.key(0), gaussian_score(sde, MU, COV), sde, y, lambda u: u, (2,))


def test_inpainting_keeps_observed_and_samples_the_rest():
    # Independent coordinates: the missing ones must follow their prior marginal; known ones stay fixed.
    sde = VPSDE()
    cov = np.diag([0.5, 0.2, 0.8])
    mu = np.array([1.0, -1.0, 0.5])
    y, mask = jnp.array([3.0, 0.0, -2.0]), jnp.array([1.0, 0.0, 1.0])
    out = jax.jit(lambda k: sample_batch(lambda kk: inpaint(kk, gaussian_score(sde, mu, cov), sde, y, mask,
                                                            num_steps=200, corrector="none"), k, 3000))(
        jax.random.key(0))
    x = np.asarray(out.samples)
    assert np.all(x[:, 0] == 3.0) and np.all(x[:, 2] == -2.0)
    assert abs(x[:, 1].mean() + 1.0) < 4.5 * np.sqrt(0.2 / 3000)
    assert abs(x[:, 1].var() - 0.2) < 4.5 * 0.2 * np.sqrt(2 / 3000)
    # Colourisation keeps the grey level exactly.
    gray = jax.random.uniform(jax.random.key(1), (4, 4))
    img_score = gaussian_score(sde, np.full(48, 0.5), 0.1 * np.eye(48))
    flat = lambda x, t: img_score(x.reshape(-1), t).reshape(x.shape)
    col = colorize(jax.random.key(2), flat, sde, gray, num_steps=20)
    np.testing.assert_allclose(col.samples.mean(-1), gray, atol=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        inpaint(jax.random.key(0), flat, sde, jnp.zeros((4, 4, 3)), jnp.zeros((4, 4)))
    with pytest.raises(ValueError, match="orthogonal"):
        inpaint(jax.random.key(0), flat, sde, jnp.zeros((4, 4, 3)), jnp.zeros((4, 4, 3)), transform=jnp.ones((3, 3)))



def test_inpainting_at_the_defaults_samples_the_missing_marginal():
    # The defaults (reverse diffusion, one Langevin step per level on the whole state, num_steps = sde.N) with
    # independent coordinates, where replacement is exact: the missing one follows its prior marginal.
    # (For correlated coordinates replacement is approximate; see inpaint's docstring.)
    sde = VPSDE()
    cov, mu = np.diag([0.5, 0.2, 0.8]), np.array([1.0, -1.0, 0.5])
    y, mask = jnp.array([3.0, 0.0, -2.0]), jnp.array([1.0, 0.0, 1.0])
    n = 2000
    out = jax.jit(lambda k: sample_batch(lambda kk: inpaint(kk, gaussian_score(sde, mu, cov), sde, y, mask), k, n))(
        jax.random.key(3))
    x = np.asarray(out.samples, np.float64)
    assert np.all(x[:, 0] == 3.0) and np.all(x[:, 2] == -2.0) and int(out.nfe[0]) == 2 * sde.N + 1
    assert abs(x[:, 1].mean() + 1.0) < 4.5 * np.sqrt(0.2 / n)
    assert abs(x[:, 1].var() - 0.2) < 4.5 * 0.2 * np.sqrt(2 / n)
