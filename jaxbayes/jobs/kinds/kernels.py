"""Pod-job kinds of the kernels pillar (``jaxbayes run``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbayes import datasets, parallel
from jaxbayes.jobs import Field, JobKind, one_of, positive, required
from jaxbayes.kernels import Dense, ReLU, gp_posterior, gram, serial

_REGRESSION = ("diabetes", "boston", "concrete")


def _network(depth: int, w_std: float, b_std: float):
    layers = []
    for _ in range(depth):
        layers += [Dense(512, W_std=w_std, b_std=b_std), ReLU()]
    return serial(*layers, Dense(1, W_std=w_std, b_std=b_std))


def _user_table(data) -> datasets.Dataset:
    """The job's ``[data]`` as a :class:`jaxbayes.datasets.Dataset`, targets standardised by the training
    rows' mean and standard deviation (GP regression on a table that fits on a host; ``standardize = true``
    in ``[data]`` does the inputs)."""
    train, test = data.split("train"), data.split("test")
    x_train, x_test = train["x"].reshape(len(train["x"]), -1), test["x"].reshape(len(test["x"]), -1)
    mean, std = float(train["y"].mean()), float(train["y"].std()) or 1.0
    info = {"name": data.description, "task": "regression", "y_mean": mean, "y_std": std}
    return datasets.Dataset(x_train, (train["y"] - mean) / std, x_test, (test["y"] - mean) / std, info)


def _check_data(p, data) -> str | None:
    if not data.train.has_y or data.num_classes:
        return "data.y: kernels.nngp_regression needs real-valued targets (a float array or column)"
    if data.test is None:
        return "data.test_fraction: kernels.nngp_regression needs a test set (test_path or test_fraction > 0)"
    if len(data.train) > 20_000:
        return f"data.path: {len(data.train)} training rows; this exact GP kind keeps an n x n Gram (<= 20000)"
    return None


def _setup(ctx):
    """NNGP Gram matrices of train and test points, computed in row tiles split over the global mesh."""
    if "setup" not in ctx.cache:
        p = ctx.params
        ds = (_user_table(ctx.data) if ctx.data is not None
              else datasets.load(p["dataset"], test_fraction=0.2, seed=p["split_seed"]))
        x = np.concatenate([ds.x_train, ds.x_test])
        kernel_fn = _network(p["depth"], p["w_std"], p["b_std"]).kernel_fn
        k = jax.jit(lambda a: gram(kernel_fn, a, chunk_size=p["chunk_size"], mesh=ctx.mesh).nngp,
                    out_shardings=parallel.replicated_sharding(ctx.mesh))(x)
        n = ds.x_train.shape[0]
        k = np.asarray(k, np.float64)
        k_tt, k_st, k_ss = k[:n, :n], k[n:, :n], np.diagonal(k)[n:]
        y = np.asarray(ds.y_train, np.float64)
        # One eigendecomposition K = U diag(s) U^T makes every marginal-likelihood evaluation O(n):
        # log N(y; 0, c K + v I) = -1/2 sum_i [z_i^2 / (c s_i + v) + log(c s_i + v) + log 2 pi], z = U^T y.
        eig, vecs = np.linalg.eigh(k_tt)
        eig = jnp.asarray(np.clip(eig, 0.0, None), jnp.float32)
        z2 = jnp.asarray((vecs.T @ y) ** 2, jnp.float32)

        def neg_lml(log_hyper):
            scale, noise = jnp.exp(log_hyper)
            lam = scale * eig + noise
            return 0.5 * jnp.mean(z2 / lam + jnp.log(lam) + jnp.log(2 * jnp.pi))

        optimizer = optax.adam(p["learning_rate"])

        def unit(state):
            def one(s, _):
                loss, g = jax.value_and_grad(neg_lml)(s["log_hyper"])
                updates, opt = optimizer.update(g, s["opt"], s["log_hyper"])
                return {"log_hyper": optax.apply_updates(s["log_hyper"], updates), "opt": opt}, loss

            return jax.lax.scan(one, state, None, length=p["steps_per_unit"])

        compiled = jax.jit(unit, out_shardings=parallel.replicated_sharding(ctx.mesh))
        ctx.cache["setup"] = (ds, k_tt, k_st, k_ss, y, optimizer, compiled, neg_lml)
    return ctx.cache["setup"]


def _init(ctx):
    *_, optimizer, _, _ = _setup(ctx)
    log_hyper = jnp.log(jnp.array([1.0, 0.5], jnp.float32))
    return {"fit": {"log_hyper": log_hyper, "opt": optimizer.init(log_hyper)}, "loss": jnp.zeros(())}


def _step(ctx, state, i):
    *_, compiled, _ = _setup(ctx)
    fit, losses = compiled(state["fit"])
    return {"fit": fit, "loss": losses[-1]}


def _finish(ctx, state):
    ds, k_tt, k_st, k_ss, y, _, _, neg_lml = _setup(ctx)
    scale, noise = np.exp(np.asarray(state["fit"]["log_hyper"]))
    post = gp_posterior(scale * k_tt, y, scale * k_st, scale * k_ss, noise=noise, full_cov=False)
    mean, var = np.asarray(post.mean), np.asarray(post.var) + noise
    y_test, y_std = np.asarray(ds.y_test), ds.info["y_std"]
    nll = 0.5 * np.log(2 * np.pi * var) + 0.5 * (y_test - mean) ** 2 / var
    out = {
        "n_train": int(k_tt.shape[0]),
        "num_fit_steps": int(ctx.params["num_units"] * ctx.params["steps_per_unit"]),
        "kernel_scale": float(scale),
        "noise_variance": float(noise),
        "neg_log_marginal_likelihood_per_point": float(neg_lml(state["fit"]["log_hyper"])),
        "test_rmse": float(np.sqrt(np.mean((mean - y_test) ** 2)) * y_std),
        "test_nll_standardised": float(nll.mean()),
    }
    if ctx.is_main:

        from jaxbayes.demos import plotting

        fig, ax = plotting.figure()
        ax = ax[0][0]
        order = np.argsort(mean)
        ax.errorbar(np.arange(len(mean)), mean[order], yerr=2 * np.sqrt(var[order]), fmt=".", ms=3, lw=0.5,
                    alpha=0.6, label="NNGP posterior +- 2 sd")
        ax.scatter(np.arange(len(mean)), y_test[order], s=4, c="k", label="held-out target")
        ax.set(xlabel="test point (sorted by mean)", ylabel="standardised target", title=ds.info["name"])
        ax.legend(fontsize=7)
        out["figures"] = [plotting.save(fig, ctx.output_dir / "posterior.png")]
    return out


JOB_KINDS = {
    "kernels.nngp_regression": JobKind(
        name="kernels.nngp_regression",
        description="NNGP Gram matrix of a deep ReLU network built over the mesh, GP hyper-parameters fitted; "
                    "on a bundled table or your [data]",
        params={
            "dataset": Field(str, "diabetes", one_of(*_REGRESSION), "a bundled regression set (without [data])"),
            "split_seed": Field(int, 0, doc="seed of the bundled set's train/test split"),
            "depth": Field(int, 3, positive, "hidden layers"),
            "w_std": Field(float, 1.4, positive, "weight standard deviation"),
            "b_std": Field(float, 0.1, positive, "bias standard deviation"),
            "chunk_size": Field(int, 128, positive, "tile edge of the Gram computation"),
            "num_units": Field(int, required(), positive, "units of fitting; one unit = steps_per_unit"),
            "steps_per_unit": Field(int, 50, positive, "Adam steps on the log marginal likelihood per unit"),
            "learning_rate": Field(float, 0.05, positive, "Adam step size"),
        },
        num_steps=lambda p: p["num_units"],
        length_keys=("num_units",),
        init=_init,
        step=_step,
        finish=_finish,
        check_data=_check_data,
        data="optional",
    ),
}
