"""Conditional sampling: classifier guidance with the exact likelihood samples the posterior; DPS; inpainting."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes.sde import (
    VPSDE,
    classifier_guidance,
    color_transform,
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


def test_colorize_at_the_defaults_samples_the_colour_marginals():
    """colorize at its defaults (VPSDE, reverse diffusion + one Langevin step per level, 1000 steps, denoising)
    on 2 x 2 RGB images whose colour-transformed channels ``u = x @ color_transform()`` are independent Gaussians
    (per pixel and channel means and variances), so replacement is exact: the grey channel ``u_0`` is held at
    ``sqrt(3) gray`` and the generated ``u_1, u_2`` follow their exact marginals. n = 2000 draws: each of the 8
    generated means within 4.5 standard errors ``sqrt(v / n)`` and each variance within 4.5 ``v sqrt(2 / n)``;
    a 1.3 x variance oracle is rejected."""
    sde = VPSDE()
    m = np.asarray(color_transform(), np.float64)
    rng = np.random.default_rng(11)
    mu_u = rng.uniform(-0.5, 0.5, (2, 2, 3))
    v_u = rng.uniform(0.05, 0.3, (2, 2, 3))
    mean_x = (mu_u @ m.T).reshape(-1)
    cov_x = np.zeros((12, 12))
    for p in range(4):
        i, j = divmod(p, 2)
        cov_x[3 * p:3 * p + 3, 3 * p:3 * p + 3] = m @ np.diag(v_u[i, j]) @ m.T
    img_score = gaussian_score(sde, mean_x, cov_x)
    score = lambda x, t: img_score(x.reshape(-1), t).reshape(x.shape)
    gray = jnp.asarray(rng.uniform(0.2, 0.8, (2, 2)), jnp.float32)
    n = 2000
    out = jax.jit(lambda k: sample_batch(lambda kk: colorize(kk, score, sde, gray), k, n))(jax.random.key(4))
    u = np.asarray(out.samples, np.float64) @ m
    np.testing.assert_allclose(u[..., 0], np.broadcast_to(np.sqrt(3) * np.asarray(gray), (n, 2, 2)), atol=1e-5)
    gen_mu, gen_v = mu_u[..., 1:], v_u[..., 1:]
    mean_z = np.abs(u[..., 1:].mean(0) - gen_mu) / np.sqrt(gen_v / n)
    var_z = np.abs(u[..., 1:].var(0) - gen_v) / (gen_v * np.sqrt(2 / n))
    assert mean_z.max() < 4.5 and var_z.max() < 4.5, (mean_z, var_z)  # measured: 1.1 and 2.8
    wrong_z = np.abs(u[..., 1:].var(0) - 1.3 * gen_v) / (1.3 * gen_v * np.sqrt(2 / n))
    assert wrong_z.min() > 4.5, wrong_z  # measured: 5.4 (every coordinate rejects the wrong variance)
