"""Pod-job kinds of the VI pillar (``jaxbayes run``): softmax regression on a bundled table, and a Bayesian
neural network (mean-field or sparse-subspace VI) on the user's own ``[data]``."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbayes import datasets, parallel
from jaxbayes.jobs import Field, JobKind, one_of, positive, required
from jaxbayes.jobs.kinds._reports import classification_report
from jaxbayes.vi import GaussianPrior, bnn_vi, fit, gaussian_vi, ssvi

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
    report = classification_report(ctx, probs, ds.y_test, f"{ctx.params['dataset']} ({ctx.params['family']})")
    return {"train_rows_used": n, **report, "vi_steps": int(state.step), "skipped_steps": int(state.num_skipped)}


class MLP(nn.Module):
    """Optional 3x3 ReLU convolutions (stride 2 each), then a flattened ReLU MLP with ``num_outputs`` logits."""

    conv_channels: Sequence[int]
    hidden: Sequence[int]
    num_outputs: int

    @nn.compact
    def __call__(self, x):
        for channels in self.conv_channels:
            x = nn.relu(nn.Conv(channels, (3, 3), strides=(2, 2))(x))
        x = x.reshape(x.shape[0], -1)
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_outputs)(x)


def _bnn_setup(ctx):
    """Model, algorithm, the checkpointed batch iterator and the compiled steps, built once per run."""
    if "bnn" not in ctx.cache:
        p, data = ctx.params, ctx.data
        module = MLP(tuple(p["conv_channels"]), tuple(p["hidden"]), data.num_classes)
        common = dict(num_data=len(data.train), method=p["method"], prior_scale=p["prior_scale"],
                      init_scale=p["init_scale"])
        optimizer = optax.adam(p["learning_rate"])
        if p["family"] == "ssvi":
            alg = ssvi(module, optimizer, density=p["density"], update_every=p["update_every"],
                       anneal_steps=p["anneal_steps"], **common)
        else:
            alg = bnn_vi(module, optimizer, **common)
        batches = data.batches(ctx.mesh, p["batch_size"], ctx.seed)
        replicated = parallel.replicated_sharding(ctx.mesh)

        def run(state, xs, ys, first):
            def body(s, inputs):
                i, x, y = inputs
                return alg.step(jax.random.fold_in(ctx.key, i), s, (x, y))[0], None
            steps = first + jnp.arange(xs.shape[0])
            return jax.lax.scan(body, state, (steps, xs, ys))[0]

        ctx.cache["bnn"] = (alg, batches, jax.jit(run, out_shardings=replicated))
    return ctx.cache["bnn"]


def _bnn_init(ctx):
    alg, batches, _ = _bnn_setup(ctx)
    example = jnp.zeros((1,) + ctx.data.x_shape, jnp.float32)
    return alg.init(jax.random.fold_in(ctx.key, -2 % 2**31), example)


def _bnn_step(ctx, state, i):
    _, batches, run = _bnn_setup(ctx)
    unit = ctx.params["steps_per_unit"]
    taken = [next(batches) for _ in range(unit)]
    xs = jnp.stack([b["x"] for b in taken])
    ys = jnp.stack([b["y"] for b in taken])
    return run(state, xs, ys, jnp.int32(i * unit))


def _bnn_finish(ctx, state):
    alg, _, _ = _bnn_setup(ctx)
    p = ctx.params
    x_test, n_test = ctx.data.global_inputs("test", ctx.mesh)
    predict = jax.jit(lambda s, x: alg.predict(jax.random.fold_in(ctx.key, -1 % 2**31), s, x,
                                               num_samples=p["predict_samples"], chunk_size=8),
                      out_shardings=parallel.replicated_sharding(ctx.mesh))
    probs = np.asarray(predict(state, x_test))[:n_test]
    labels = ctx.data.targets("test")
    title = f"{p['family']} BNN, {len(ctx.data.train)} training rows"
    report = classification_report(ctx, jnp.asarray(probs), jnp.asarray(labels), title)
    return {"train_rows": len(ctx.data.train), "test_rows": n_test, **report, "vi_steps": int(state.step),
            "skipped_steps": int(state.num_skipped), "epochs": round(int(state.step) * p["batch_size"]
                                                                        / len(ctx.data.train), 3)}


def _bnn_check(p) -> str | None:
    if p["predict_samples"] % 8:
        return f"params.predict_samples: must be a multiple of 8, got {p['predict_samples']}"
    for key in ("hidden", "conv_channels"):
        if not all(isinstance(w, int) and not isinstance(w, bool) and 0 < w <= 65536 for w in p[key]):
            return f"params.{key}: expected a list of layer widths in [1, 65536], got {p[key]!r}"
    return None


def _bnn_check_data(p, data) -> str | None:
    if not data.num_classes:
        return "data.y: vi.bnn is a classifier and needs integer class labels (y = ...)"
    if p["batch_size"] > len(data.train):
        return f"params.batch_size: {p['batch_size']} is larger than the {len(data.train)} training rows"
    if p["conv_channels"] and len(data.x_shape) != 3:
        return f"params.conv_channels: convolutions need image rows (H, W, C), the data has rows {data.x_shape}"
    return None


def _bnn_summary(p, data) -> str:
    steps = p["num_units"] * p["steps_per_unit"]
    epochs = steps * p["batch_size"] / max(len(data.train), 1)
    return (f"{p['family']} BNN, conv {list(p['conv_channels'])}, hidden {list(p['hidden'])}, "
            f"{data.num_classes} classes; {steps} steps of {p['batch_size']} rows ({epochs:.1f} epochs)")


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
        length_keys=("num_units",),
        init=_init,
        step=_step,
        finish=_finish,
    ),
    "vi.bnn": JobKind(
        name="vi.bnn",
        description="mean-field or sparse-subspace VI posterior of a ReLU MLP/CNN classifier on your [data]",
        params={
            "family": Field(str, "meanfield", one_of("meanfield", "ssvi"), "mean-field (bnn_vi) or SSVI"),
            "hidden": Field(list, [128, 128], doc="widths of the hidden Dense layers"),
            "conv_channels": Field(list, [], doc="channels of 3x3 stride-2 convolutions before them (images)"),
            "method": Field(str, "local", one_of("local", "flipout", "sample"), "reparameterisation"),
            "num_units": Field(int, required(), positive, "units of work; one unit = steps_per_unit steps"),
            "steps_per_unit": Field(int, 100, positive, "VI steps per unit (a checkpoint is a whole unit)"),
            "batch_size": Field(int, 256, positive, "rows per global batch (a multiple of the devices)"),
            "learning_rate": Field(float, 1e-3, positive, "Adam step size"),
            "prior_scale": Field(float, 1.0, positive, "std of the N(0, s^2) weight prior"),
            "init_scale": Field(float, 1e-3, positive, "initial posterior std"),
            "density": Field(float, 0.5, lambda v: None if 0 < v <= 1 else f"must be in (0, 1], got {v}",
                             "SSVI: fraction of active weights"),
            "update_every": Field(int, 100, positive, "SSVI: steps between subspace updates"),
            "anneal_steps": Field(int, 1000, positive, "SSVI: steps over which the drop fraction anneals"),
            "predict_samples": Field(int, 32, positive, "posterior draws for the test predictive"),
        },
        num_steps=lambda p: p["num_units"],
        length_keys=("num_units",),
        init=_bnn_init,
        step=_bnn_step,
        finish=_bnn_finish,
        check=_bnn_check,
        check_data=_bnn_check_data,
        data="required",
        summary=_bnn_summary,
    ),
}
