"""Pod-job kinds of the VI pillar (``jaxbayes run``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbayes import datasets, parallel
from jaxbayes.jobs import Field, JobKind, one_of, positive, required
from jaxbayes.vi import GaussianPrior, fit, gaussian_vi, metrics

_CLASSIFICATION = ("breast_cancer", "digits", "iris", "wine")


def _setup(ctx):
    """Data, algorithm and compiled step, built once per run and kept in ``ctx.cache``."""
    if "setup" not in ctx.cache:
        ds, data, n = _load(ctx)
        alg, zeros = _algorithm(ctx, ds.x_train.shape[1], ds.info["n_classes"])
        run = jax.jit(lambda s, d: fit(ctx.key, alg, s, ctx.params["steps_per_checkpoint_unit"], data=d)[0],
                      out_shardings=parallel.replicated_sharding(ctx.mesh))
        ctx.cache["setup"] = (ds, data, n, alg, zeros, run)
    return ctx.cache["setup"]


def _load(ctx):
    """Each process loads its own rows of the training set; the global arrays are split over the mesh."""
    ds = datasets.load(ctx.params["dataset"], test_fraction=0.2, seed=0)
    data, n = parallel.distribute_rows((ds.x_train, ds.y_train), ctx.mesh)
    return ds, data, n


def _model(num_classes: int):
    def loglik(theta, batch):
        x, y = batch
        logits = x @ theta["w"] + theta["b"]
        return jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    return loglik


def _algorithm(ctx, num_features: int, num_classes: int):
    p = ctx.params
    prior_scale = jnp.float32(p["prior_scale"])
    zeros = {"w": jnp.zeros((num_features, num_classes)), "b": jnp.zeros(num_classes)}
    prior = GaussianPrior(jax.tree.map(jnp.zeros_like, zeros), jax.tree.map(lambda z: z + prior_scale, zeros))
    alg = gaussian_vi(_model(num_classes), optax.adam(p["learning_rate"]), family=p["family"],
                      rank=p["rank"], num_samples=p["num_samples"], prior=prior)
    return alg, zeros


def _init(ctx):
    _, data, _, alg, zeros, _ = _setup(ctx)
    # the init key (a low-rank factor's draw) is folded off the run key, apart from fit's steps and _finish's -1
    return alg.init(jax.random.fold_in(ctx.key, -2 % 2**31), zeros, batch=data)


def _step(ctx, state, i):
    _, data, _, _, _, run = _setup(ctx)
    return run(state, data)


def _finish(ctx, state):
    ds, _, n, alg, _, _ = _setup(ctx)
    draws = alg.sample(jax.random.fold_in(ctx.key, -1 % 2**31), state, 256)
    logits = jnp.einsum("nd,sdk->snk", ds.x_test, draws["w"]) + draws["b"][:, None, :]
    probs = jax.nn.softmax(logits).mean(0)
    out = {
        "train_rows_used": n,
        "test_accuracy": float(metrics.accuracy(probs, ds.y_test)),
        "test_nll": float(metrics.nll(probs, ds.y_test)),
        "test_ece": float(metrics.ece(probs, ds.y_test)),
        "vi_steps": int(state.step),
        "skipped_steps": int(state.num_skipped),
    }
    if ctx.is_main:

        diagram = metrics.reliability_diagram(probs, ds.y_test)
        from jaxbayes.demos import plotting

        fig, ax = plotting.figure()
        ax = ax[0][0]
        filled = np.asarray(diagram.count) > 0
        conf, acc = np.asarray(diagram.confidence)[filled], np.asarray(diagram.accuracy)[filled]
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.plot(conf, acc, "o-")
        ax.set(xlabel="confidence", ylabel="accuracy", title=f"{ctx.params['dataset']} ({ctx.params['family']})")
        out["figures"] = [plotting.save(fig, ctx.output_dir / "reliability.png")]
    return out


JOB_KINDS = {
    "vi.softmax_regression": JobKind(
        name="vi.softmax_regression",
        description="Gaussian VI posterior of Bayesian softmax regression on a bundled classification data set",
        params={
            "dataset": Field(str, "breast_cancer", one_of(*_CLASSIFICATION), "a classification data set"),
            "family": Field(str, "fullrank", one_of("meanfield", "lowrank", "fullrank"), "variational family"),
            "rank": Field(int, 2, positive, "rank of the low-rank factor"),
            "num_units": Field(int, required(), positive, "units of work; one unit = steps_per_checkpoint_unit"),
            "steps_per_checkpoint_unit": Field(int, 50, positive, "VI steps per unit"),
            "learning_rate": Field(float, 0.02, positive, "Adam step size"),
            "num_samples": Field(int, 4, positive, "Monte-Carlo samples per step"),
            "prior_scale": Field(float, 1.0, positive, "standard deviation of the N(0, s^2) prior"),
        },
        num_steps=lambda p: p["num_units"],
        init=_init,
        step=_step,
        finish=_finish,
    ),
}
