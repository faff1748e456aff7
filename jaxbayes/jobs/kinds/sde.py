"""Pod-job kinds of the SDE pillar (``jaxbayes run``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbayes import datasets, parallel
from jaxbayes.jobs import Field, JobKind, one_of, positive, required
from jaxbayes.ot import sliced_wasserstein
from jaxbayes.sde import edm_denoiser, edm_loss, edm_sampler, sample_batch, score_trainer
from jaxbayes.sde.nets import ScoreMLP


def _training_data(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out rows in [-1, 1] (digits) or on the scale of the ring mixture."""
    if name == "digits":
        ds = datasets.load("digits", standardize=False)
        return 2 * ds.x_train - 1, 2 * ds.x_test - 1
    mix = datasets.ring_mixture(8, radius=2.0, scale=0.15)
    x = np.asarray(datasets.gaussian_mixture(jax.random.key(123), 5000, mix)[0], np.float32)
    return x[:4000], x[4000:]


def _setup(ctx):
    """Data split over the processes, model, trainer and compiled unit of steps; built once per run."""
    if "setup" not in ctx.cache:
        p = ctx.params
        x_train, x_test = _training_data(p["dataset"])
        train, n = parallel.distribute_rows(x_train, ctx.mesh)
        model = ScoreMLP(hidden=(p["width"],) * p["depth"], embed_dim=32)

        def denoiser(params):
            return edm_denoiser(lambda x, c_noise: model.apply(params, x, c_noise), sigma_data=0.5)

        schedule = optax.cosine_decay_schedule(p["learning_rate"], p["num_units"] * p["steps_per_unit"], 0.1)
        trainer = score_trainer(lambda prm, k, b: edm_loss(k, denoiser(prm), b), optax.adam(schedule),
                                ema_decay=p["ema_decay"])

        def unit(state, data):
            def one(st, _):
                k = jax.random.fold_in(ctx.key, st.step)  # depends on the global step only
                k_batch, k_loss = jax.random.split(k)
                batch = data[jax.random.randint(k_batch, (p["batch_size"],), 0, n)]
                st, info = trainer.step(k_loss, st, batch)
                return st, info.loss

            return jax.lax.scan(one, state, None, length=p["steps_per_unit"])

        compiled = jax.jit(unit, out_shardings=parallel.replicated_sharding(ctx.mesh))
        dim = x_train.shape[1]
        ctx.cache["setup"] = (train, x_test, model, denoiser, trainer, compiled, dim)
    return ctx.cache["setup"]


def _init(ctx):
    _, _, model, _, trainer, _, dim = _setup(ctx)
    params = model.init(jax.random.fold_in(ctx.key, 2**31 - 1), jnp.zeros(dim), 0.5)
    return {"train": trainer.init(jax.random.fold_in(ctx.key, 2**31 - 2), params), "loss": jnp.zeros((), jnp.float32)}


def _step(ctx, state, i):
    train, *_, compiled, _ = _setup(ctx)
    train_state, losses = compiled(state["train"], train)
    return {"train": train_state, "loss": losses.mean()}


def _finish(ctx, state):
    p = ctx.params
    _, x_test, _, denoiser, _, _, dim = _setup(ctx)
    den = denoiser(state["train"].ema_params)
    sampler = lambda k: edm_sampler(k, den, (dim,), num_steps=p["sampler_steps"])
    out = jax.jit(lambda k: sample_batch(sampler, k, p["num_samples"], mesh=ctx.mesh),
                  out_shardings=parallel.replicated_sharding(ctx.mesh))(jax.random.fold_in(ctx.key, 2**31 - 2))
    samples = np.asarray(out.samples)
    x_train, _ = _training_data(p["dataset"])
    metrics = {
        "train_steps": int(state["train"].step),
        "last_unit_mean_loss": float(state["loss"]),
        "sampler_nfe": int(np.asarray(out.nfe)[0]),
        "samples_finite": bool(np.isfinite(samples).all()),
        "sliced_w2_samples_to_heldout": float(sliced_wasserstein(jax.random.key(0), samples, x_test)),
        "sliced_w2_train_to_heldout": float(sliced_wasserstein(jax.random.key(0), x_train[: len(samples)], x_test)),
    }
    if ctx.is_main:
        from jaxbayes.demos import plotting

        fig, ax = plotting.figure()
        ax = ax[0][0]
        if p["dataset"] == "digits":
            k = int(np.ceil(np.sqrt(len(samples))))
            canvas = np.zeros((k * 9, k * 9))
            for j, img in enumerate(samples[: k * k]):
                r, c = divmod(j, k)
                canvas[r * 9:r * 9 + 8, c * 9:c * 9 + 8] = np.clip((img.reshape(8, 8) + 1) / 2, 0, 1)
            ax.imshow(canvas, cmap="gray_r")
            ax.axis("off")
        else:
            ax.scatter(x_test[:, 0], x_test[:, 1], s=3, alpha=0.3, label="held-out")
            ax.scatter(samples[:, 0], samples[:, 1], s=3, alpha=0.5, label="samples")
            ax.legend(fontsize=7)
            ax.set_aspect("equal")
        ax.set_title(f"EDM Heun samples ({metrics['sampler_nfe']} NFE)", fontsize=9)
        metrics["figures"] = [plotting.save(fig, ctx.output_dir / "samples.png")]
    return metrics


JOB_KINDS = {
    "sde.train_and_sample": JobKind(
        name="sde.train_and_sample",
        description="train an EDM-preconditioned score MLP on data split over every device, then sample",
        params={
            "dataset": Field(str, "ring_gmm", one_of("ring_gmm", "digits"), "training data"),
            "num_units": Field(int, required(), positive, "units of training; one unit = steps_per_unit"),
            "steps_per_unit": Field(int, 100, positive, "optimiser steps per unit (checkpoint granularity)"),
            "batch_size": Field(int, 256, positive, "global minibatch size"),
            "learning_rate": Field(float, 2e-3, positive, "peak Adam step size (cosine decay)"),
            "ema_decay": Field(float, 0.99, lambda v: None if 0 <= v < 1 else f"must be in [0, 1), got {v}"),
            "width": Field(int, 128, positive, "hidden units per layer"),
            "depth": Field(int, 3, positive, "hidden layers"),
            "num_samples": Field(int, 512, positive, "samples drawn at the end"),
            "sampler_steps": Field(int, 18, positive, "EDM Heun noise levels (NFE = 2 N - 1)"),
        },
        num_steps=lambda p: p["num_units"],
        init=_init,
        step=_step,
        finish=_finish,
    ),
}
