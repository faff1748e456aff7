"""Losses against closed-form expectations, the train step, conditional sampling and interpolants."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import integrate

from jaxbayes.sde import (
    VESDE,
    VPSDE,
    Interpolant,
    analytic,
    classifier_guidance,
    colorize,
    ddpm_loss,
    dps_sampler,
    dsm_loss,
    edm_loss,
    gaussian_score,
    gaussian_velocity,
    gmm_denoiser,
    inpaint,
    interpolant_loss,
    interpolant_sampler,
    ode_sampler,
    sample_batch,
    score_trainer,
    smld_loss,
)
from jaxbayes.sde.nets import ScoreMLP, SmallUNet

MU = np.array([1.0, -0.5])
COV = np.array([[0.5, 0.2], [0.2, 0.3]])


def _expected_dsm(sde, ts):
    """E_z||s score + z||^2 / d = 1 - s^2 tr(C_t^{-1}) / d at each t (E[z | x_t] = -s score)."""
    out = []
    for t in ts:
        m, s = float(sde.mean_coeff(t)), float(sde.std(t))
        c = m**2 * COV + s**2 * np.eye(2)
        out.append(1 - s**2 * np.trace(np.linalg.inv(c)) / 2)
    return np.array(out)


def test_dsm_and_ddpm_losses_match_closed_form_at_exact_score():
    sde = VPSDE(N=50)
    score = gaussian_score(sde, MU, COV)
    x0 = jax.random.multivariate_normal(jax.random.key(1), jnp.asarray(MU), jnp.asarray(COV), (20000,))
    want = integrate.quad(lambda t: _expected_dsm(sde, [t])[0], sde.eps, sde.T)[0] / (sde.T - sde.eps)
    got = float(dsm_loss(jax.random.key(2), score, sde, x0))
    # per-sample losses are bounded by ~ chi^2_2 / 2 scale: MC std < 1.5 / sqrt(n)
    assert abs(got - want) < 4 * 1.5 / np.sqrt(20000)
    ts = sde.eps + np.arange(sde.N) * (sde.T - sde.eps) / (sde.N - 1)
    got = float(ddpm_loss(jax.random.key(3), score, sde, x0))
    assert abs(got - _expected_dsm(sde, ts).mean()) < 4 * 1.5 / np.sqrt(20000)
    # The exact score beats a wrong one with the same random numbers, in every loss.
    wrong = gaussian_score(sde, MU, 2 * COV)
    for loss in (lambda f: dsm_loss(jax.random.key(4), f, sde, x0, likelihood_weighting=True),
                 lambda f: dsm_loss(jax.random.key(4), f, sde, x0, reduce="sum"),
                 lambda f: ddpm_loss(jax.random.key(4), f, sde, x0)):
        assert float(loss(score)) < float(loss(wrong))
    ve = VESDE(sigma_max=10.0, N=50)
    assert float(smld_loss(jax.random.key(5), gaussian_score(ve, MU, COV), ve, x0)) < float(
        smld_loss(jax.random.key(5), gaussian_score(ve, MU, 2 * COV), ve, x0))
    den, den_wrong = gmm_denoiser([1.0], MU[None], COV[None]), gmm_denoiser([1.0], MU[None], 2 * COV[None])
    assert float(edm_loss(jax.random.key(6), den, x0)) < float(edm_loss(jax.random.key(6), den_wrong, x0))
    with pytest.raises(TypeError, match="VPSDE"):
        ddpm_loss(jax.random.key(0), score, VESDE(), x0)
    with pytest.raises(ValueError, match="reduce"):
        dsm_loss(jax.random.key(0), score, sde, x0, reduce="max")
    with pytest.raises(ValueError, match="batch"):
        dsm_loss(jax.random.key(0), score, sde, x0[0])
    with pytest.raises(ValueError, match="score_fn"):
        dsm_loss(jax.random.key(0), lambda x, t: x[:1], sde, x0)


def test_trainer_learns_gaussian_score_parameters_and_ema():
    # Score family of N(a, b) data; DSM is minimised at the true (a, b) = (2, 0.25).
    sde = VPSDE()

    def score_model(p):
        return lambda x, t: -(x - sde.mean_coeff(t) * p["a"]) / (sde.mean_coeff(t) ** 2 * jnp.exp(p["logb"])
                                                               + sde.std(t) ** 2)

    data = 2.0 + 0.5 * jax.random.normal(jax.random.key(0), (4096, 1))
    trainer = score_trainer(lambda p, k, b: dsm_loss(k, score_model(p), sde, b), optax.adam(0.05), ema_decay=0.9)
    state = trainer.init({"a": jnp.array(0.0), "logb": jnp.array(0.0)})
    step = jax.jit(trainer.step)
    ema = state.ema_params
    for i in range(300):
        idx = jax.random.randint(jax.random.key(i), (256,), 0, 4096)
        new, info = step(jax.random.key(10_000 + i), state, data[idx])
        ema = jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, ema, new.params)
        state = new
    assert int(state.step) == 300 and np.isfinite(float(info.loss)) and float(info.grad_norm) >= 0
    assert abs(float(state.ema_params["a"]) - 2.0) < 0.15
    assert abs(float(jnp.exp(state.ema_params["logb"])) - 0.25) < 0.1
    np.testing.assert_allclose(state.ema_params["a"], ema["a"], rtol=1e-5)
    with pytest.raises(ValueError, match="ema_decay"):
        score_trainer(lambda p, k, b: 0.0, optax.sgd(0.1), ema_decay=1.0)


def test_networks_shapes_single_and_batched():
    mlp = ScoreMLP(hidden=(16, 16))
    p = mlp.init(jax.random.key(0), jnp.zeros(3), 0.5)
    np.testing.assert_allclose(jax.vmap(lambda x, t: mlp.apply(p, x, t))(jnp.ones((4, 3)), jnp.full(4, 0.3)),
                               mlp.apply(p, jnp.ones((4, 3)), jnp.full(4, 0.3)), rtol=1e-5, atol=1e-6)
    unet = SmallUNet(channels=(4, 8, 8), groups=2)
    # Deterministic stand-in weights (random init only costs compile time); conv weights fit any image size.
    shapes = jax.eval_shape(unet.init, jax.random.key(0), jnp.zeros((8, 8, 1)), 0.5)
    q = jax.tree.map(lambda a: 0.1 * jnp.cos(jnp.arange(a.size, dtype=a.dtype)).reshape(a.shape), shapes)
    for shape in ((8, 8, 1), (28, 28, 1)):
        single = jax.jit(unet.apply)(q, jnp.ones(shape), 0.1)
        batch = jax.jit(unet.apply)(q, jnp.ones((2, *shape)), jnp.full(2, 0.1))
        assert single.shape == shape and batch.shape == (2, *shape)
        np.testing.assert_allclose(single, batch[0], rtol=1e-5, atol=1e-6)


def _exact_posterior(a, noise):
    prec = np.linalg.inv(COV) + a.T @ a / noise**2
    cov = np.linalg.inv(prec)
    return cov, a


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


def test_analytic_module_is_public():
    assert callable(analytic.gaussian_pf_trajectory)
