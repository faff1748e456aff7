"""Score-based generative model of 8x8 digits (PC, EDM Heun, bits/dim, inpainting) and 2-D GMM trajectories.

Trains a small noise-conditioned MLP on scikit-learn's digits as an EDM-preconditioned denoiser (EDM loss),
turns it into the score of the VE SDE with ``sigma`` in ``[0.002, 80]``, samples with the
predictor-corrector sampler and with EDM's Heun sampler, reports bits/dim of held-out digits through the
probability-flow ODE, inpaints the lower half of held-out digits, and draws probability-flow and
reverse-SDE trajectories on a 2-D Gaussian mixture with its exact score.
"""

from __future__ import annotations

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbayes import datasets
from jaxbayes._progress import progress
from jaxbayes.demos.plotting import figure, save
from jaxbayes.ot import sliced_wasserstein
from jaxbayes.parallel import sample_keys
from jaxbayes.sde import (
    VESDE,
    VPSDE,
    edm_denoiser,
    edm_loss,
    edm_sampler,
    log_likelihood,
    pc_sampler,
    sample_batch,
    score_from_denoiser,
    score_trainer,
)
from jaxbayes.sde.analytic import gmm_denoiser, gmm_score
from jaxbayes.sde.nets import ScoreMLP

LEVELS = 17  # digits pixels are k / 16, k = 0..16


def _grid(ax, images, title):
    n = int(math.ceil(math.sqrt(len(images))))
    canvas = np.zeros((n * 9, n * 9))
    for i, img in enumerate(images):
        r, c = divmod(i, n)
        canvas[r * 9:r * 9 + 8, c * 9:c * 9 + 8] = np.clip(img.reshape(8, 8), 0, 1)
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def demo(outdir: pathlib.Path, *, quick: bool = False) -> dict:
    outdir = pathlib.Path(outdir)
    key = jax.random.key(0)
    figures = []
    metrics: dict = {}

    # ---- digits: data in [-1, 1], EDM-preconditioned MLP denoiser -> VE score --------------------
    # (EDM's preconditioning keeps the network's input and target at unit scale for every noise level, so
    # the deterministic samplers work after a short CPU training run; a raw eps-network does not.)
    data = datasets.load("digits", standardize=False)
    x_train = 2 * np.asarray(data.x_train, np.float32) - 1
    x_test = 2 * np.asarray(data.x_test, np.float32) - 1
    sde = VESDE(sigma_min=0.002, sigma_max=80.0)
    model = ScoreMLP(hidden=(256, 256, 256), embed_dim=32)
    params = model.init(jax.random.key(1), jnp.zeros(64), 0.5)

    def denoiser_of(p):
        return edm_denoiser(lambda x, c_noise: model.apply(p, x, c_noise), sigma_data=0.5)

    num_steps = 400 if quick else 3000
    trainer = score_trainer(lambda p, k, b: edm_loss(k, denoiser_of(p), b),
                            optax.adam(optax.cosine_decay_schedule(2e-3, num_steps, 0.1)),
                            ema_decay=0.99 if quick else 0.999)
    step = jax.jit(trainer.step)
    state = trainer.init(jax.random.fold_in(key, -1 % 2**31), params)
    losses = []
    for i in progress(range(num_steps), desc="train score model"):
        k_batch, k_step = jax.random.split(jax.random.fold_in(key, i))
        batch = x_train[np.asarray(jax.random.randint(k_batch, (128,), 0, len(x_train)))]
        state, info = step(k_step, state, batch)
        losses.append(float(info.loss))
    den = denoiser_of(state.ema_params)
    score = score_from_denoiser(den, sde)
    metrics["train_steps"] = num_steps
    metrics["final_loss"] = float(np.mean(losses[-50:]))

    n_samples = 36 if quick else 64
    pc_steps = 100 if quick else 500
    pc = jax.jit(lambda k: sample_batch(lambda kk: pc_sampler(kk, score, sde, (64,), num_steps=pc_steps,
                                                              snr=0.1), k, n_samples))(jax.random.key(2))
    edm = jax.jit(lambda k: sample_batch(lambda kk: edm_sampler(kk, den, (64,), num_steps=18), k, n_samples))(
        jax.random.key(3))
    to01 = lambda x: (np.asarray(x) + 1) / 2
    fig, axes = figure(3, size=3.2)
    _grid(axes[0][0], to01(x_test[:n_samples]), "held-out digits")
    _grid(axes[0][1], to01(pc.samples), f"PC sampler ({int(pc.nfe[0])} NFE)")
    _grid(axes[0][2], to01(edm.samples), f"EDM Heun ({int(edm.nfe[0])} NFE)")
    figures.append(save(fig, outdir / "sde_digits_samples.png"))
    ref = np.asarray(x_test)
    metrics["pc_nfe"] = int(pc.nfe[0])
    metrics["edm_nfe"] = int(edm.nfe[0])
    to_test = lambda a: float(sliced_wasserstein(jax.random.key(4), a, ref[:n_samples * 4]))
    metrics["pc_sliced_w2_to_test"] = to_test(pc.samples)
    metrics["edm_sliced_w2_to_test"] = to_test(edm.samples)
    metrics["train_sliced_w2_to_test"] = to_test(x_train[:n_samples])

    # ---- bits/dim of dequantised held-out digits ---------------------------------------------------
    n_test = 32 if quick else 200
    k_deq = jax.random.key(5)
    counts = np.rint((np.asarray(x_test[:n_test]) + 1) / 2 * 16)
    u = np.asarray(jax.random.uniform(k_deq, counts.shape))
    x_deq = jnp.asarray(2 * (counts + u) / LEVELS - 1, jnp.float32)  # uniform dequantisation onto [-1, 1]
    lik = jax.jit(jax.vmap(lambda k, x: log_likelihood(k, score, sde, x, rtol=1e-4, atol=1e-4,
                                                       num_levels=LEVELS, data_range=(-1.0, 1.0))))
    out = lik(sample_keys(jax.random.key(6), n_test), x_deq)
    metrics["test_bits_per_dim"] = float(np.mean(out.bpd))
    # Baseline: independent per-pixel Gaussians fitted to dequantised training digits (same offset).
    tc = np.rint((x_train + 1) / 2 * 16)
    xt_deq = 2 * (tc + np.asarray(jax.random.uniform(jax.random.key(7), tc.shape))) / LEVELS - 1
    mu, sd = xt_deq.mean(0), xt_deq.std(0)
    base_lp = np.sum(-0.5 * ((np.asarray(x_deq) - mu) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi), axis=1)
    metrics["baseline_diag_gaussian_bits_per_dim"] = float(np.mean((-base_lp / 64 + np.log(LEVELS / 2)) / np.log(2)))
    metrics["uniform_bits_per_dim"] = float(np.log2(LEVELS))

    # ---- inpainting the lower half ------------------------------------------------------------------
    from jaxbayes.sde import inpaint

    n_inp = 8
    mask = jnp.asarray(np.repeat((np.arange(8) < 4)[:, None], 8, 1).reshape(64), jnp.float32)
    ys = jnp.asarray(x_test[:n_inp])
    inp = jax.jit(jax.vmap(lambda k, y: inpaint(k, score, sde, y, mask, num_steps=pc_steps, snr=0.1)))(
        sample_keys(jax.random.key(8), n_inp), ys)
    fig, axes = figure(3, size=3.2)
    _grid(axes[0][0], to01(ys), "held-out")
    _grid(axes[0][1], to01(ys * mask - (1 - mask)), "upper half observed")
    _grid(axes[0][2], to01(inp.samples), "inpainted")
    figures.append(save(fig, outdir / "sde_digits_inpainting.png"))
    metrics["inpaint_observed_max_abs_error"] = float(jnp.max(jnp.abs((inp.samples - ys) * mask)))
    metrics["inpaint_missing_rmse"] = float(jnp.sqrt(jnp.mean(((inp.samples - ys) * (1 - mask)) ** 2)))

    # ---- 2-D GMM with the exact score ---------------------------------------------------------------
    mix = datasets.ring_mixture(8, radius=4.0, scale=0.3)
    gsde = VPSDE()
    gscore = gmm_score(gsde, mix.weights, mix.means, mix.covs)
    n_traj, n_pts, steps = 24, 2000, 100
    ts = jnp.linspace(gsde.T, gsde.eps, steps + 1)

    def trajectory(k, stochastic):
        x = jax.random.normal(jax.random.fold_in(k, 0), (2,)) * gsde.prior_std

        def body(x, i):
            t, dt = ts[i], ts[i + 1] - ts[i]
            drift = gsde.reverse_drift(gscore, x, t, ode=not stochastic)
            noise = gsde.diffusion(t) * jnp.sqrt(-dt) * jax.random.normal(jax.random.fold_in(k, i + 1), (2,))
            x = x + drift * dt + (noise if stochastic else 0.0)
            return x, x

        return jax.lax.scan(body, x, jnp.arange(steps))[1]

    keys = sample_keys(jax.random.key(9), n_traj)
    ode_paths = np.asarray(jax.jit(jax.vmap(lambda k: trajectory(k, False)))(keys))
    sde_paths = np.asarray(jax.jit(jax.vmap(lambda k: trajectory(k, True)))(keys))
    gden = gmm_denoiser(mix.weights, mix.means, mix.covs)
    gm_edm = jax.jit(lambda k: sample_batch(lambda kk: edm_sampler(kk, gden, (2,), num_steps=18), k, n_pts))(
        jax.random.key(10)).samples
    truth = np.asarray(datasets.gaussian_mixture(jax.random.key(11), n_pts, mix)[0])
    fig, axes = figure(3, size=3.4)
    for ax, paths, title in ((axes[0][0], ode_paths, "probability-flow ODE paths"),
                             (axes[0][1], sde_paths, "reverse-SDE paths")):
        for p in paths:
            ax.plot(p[:, 0], p[:, 1], lw=0.6, alpha=0.7)
        ax.scatter(paths[:, 0, 0], paths[:, 0, 1], marker="o", facecolors="none", edgecolors="C0", s=18,
                   zorder=3, label="start (t = T, prior draw)")
        ax.scatter(paths[:, -1, 0], paths[:, -1, 1], marker="x", c="C3", s=18, zorder=4, label="end (t = eps)")
        ax.scatter(np.asarray(mix.means)[:, 0], np.asarray(mix.means)[:, 1], c="k", s=12, zorder=5,
                   label="mixture means")
        ax.set_title(title, fontsize=9)
        ax.set(xlabel="$x_1$", ylabel="$x_2$")
        ax.legend(fontsize=6, loc="lower left")
        ax.set_aspect("equal")
    axes[0][2].scatter(truth[:, 0], truth[:, 1], s=2, alpha=0.3, label="data")
    axes[0][2].scatter(np.asarray(gm_edm)[:, 0], np.asarray(gm_edm)[:, 1], s=2, alpha=0.3, label="EDM Heun, 35 NFE")
    axes[0][2].legend(fontsize=7, markerscale=4)
    axes[0][2].set(xlabel="$x_1$", ylabel="$x_2$", title="samples vs data")
    axes[0][2].set_aspect("equal")
    figures.append(save(fig, outdir / "sde_gmm_trajectories.png"))
    metrics["gmm_edm_sliced_w2"] = float(sliced_wasserstein(jax.random.key(12), np.asarray(gm_edm), truth))
    other = np.asarray(datasets.gaussian_mixture(jax.random.key(13), n_pts, mix)[0])
    metrics["gmm_null_sliced_w2"] = float(sliced_wasserstein(jax.random.key(12), other, truth))
    fig, axes = figure(1, size=3.4)
    axes[0][0].plot(losses, lw=0.7)
    axes[0][0].set_xlabel("step")
    axes[0][0].set_ylabel("EDM loss")
    axes[0][0].set_yscale("log")
    figures.append(save(fig, outdir / "sde_digits_loss.png"))
    metrics["figures"] = figures
    return metrics
