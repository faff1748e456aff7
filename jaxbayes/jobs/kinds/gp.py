"""Pod-job kinds of Gaussian and Student-t process regression on a user's table (``jaxbayes run``).

``gp.regression`` fits an exact GP, ``y ~ N(0, K + s I)``, or Student-t process (Shah, Wilson & Ghahramani,
2014), ``y ~ MVT_nu(0, K + s I)`` with covariance ``K + s I`` (so ``nu > 2``), to the training rows of
``[data]``. ``K = v k_ell(x, x')`` is an ARD kernel (``rbf`` or ``matern52``, one lengthscale per feature).
The hyper-parameters ``theta = (log ell, log v, log s[, log(nu - 2)])`` minimise the negative log marginal
likelihood per training row, ``-log p(y | theta) / n``, by Adam; the targets are standardised by the
training rows' mean and standard deviation first, and every metric is reported in the original units. The
test predictive is the closed-form posterior of the noisy target: Gaussian ``N(m, var + s)``, or
``t_{nu + n}(m, (nu + b - 2) / (nu + n - 2) (K_** + s - K_*X A^{-1} K_X*))`` with ``A = K + s I`` and
``b = y^T A^{-1} y``.

In the library's scale-mixture parameterisation (:mod:`jaxbayes.kernels._student_t`: ``y ~ t_{2 alpha}(0,
(beta / alpha) A)``) this Student-t process is ``alpha = nu / 2``, ``beta = nu / 2 - 1``.

Example job file (``examples/jobs/gp_regression_table.toml``):

.. code-block:: toml

    kind = "gp.regression"
    [data]
    path = "my_table.csv"     # or name = "diabetes"
    y = "target"
    standardize = true
    [params]
    model = "student_t"
    kernel = "matern52"
    num_units = 5             # units of steps_per_unit = 100 Adam steps
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.stats

from jaxbayes import parallel
from jaxbayes.jobs import Field, JobKind, one_of, positive, required
from jaxbayes.kernels import (
    gp_posterior,
    log_marginal_likelihood,
    matern52,
    rbf,
    student_t_log_marginal_likelihood,
    student_t_posterior,
    student_t_predictive_logpdf,
)

_KERNELS = {"rbf": rbf, "matern52": matern52}
# Test rows predicted per call: the cross-covariance block is (chunk, n), at most 4096 x 20000 float32 (328 MB).
_PREDICT_CHUNK = 4096


def _hyper(log_params: dict) -> dict:
    """The hyper-parameters from their unconstrained (log) values; ``df = 2 + exp(.)`` stays above 2."""
    out = {"lengthscale": jnp.exp(log_params["log_lengthscale"]), "signal_variance": jnp.exp(log_params["log_signal"]),
           "noise_variance": jnp.exp(log_params["log_noise"])}
    if "log_df_minus_2" in log_params:
        out["df"] = 2 + jnp.exp(log_params["log_df_minus_2"])
    return out


def _gram(kernel: str, h: dict, a, b):
    return _KERNELS[kernel](a, b, {"lengthscale": h["lengthscale"], "variance": h["signal_variance"]})


def neg_log_marginal_likelihood(log_params: dict, x, y, *, kernel: str):
    """``-log p(y | theta) / n`` of the standardised training targets (the fitted objective).

    With ``log_df_minus_2`` in ``log_params`` it is the Student-t process, ``y ~ MVT_nu(0, K + s I)`` with
    that covariance: :func:`~jaxbayes.kernels.student_t_log_marginal_likelihood` with ``alpha = nu / 2``,
    ``beta = nu / 2 - 1``; otherwise the GP, :func:`~jaxbayes.kernels.log_marginal_likelihood`.

    Example:
      >>> import jax.numpy as jnp
      >>> lp = {"log_lengthscale": jnp.zeros(1), "log_signal": jnp.zeros(()), "log_noise": jnp.zeros(())}
      >>> round(float(neg_log_marginal_likelihood(lp, jnp.zeros((1, 1)), jnp.zeros(1), kernel="rbf")), 4)
      1.2655
    """
    h = _hyper(log_params)
    k = _gram(kernel, h, x, x)
    if "df" in h:
        lml = student_t_log_marginal_likelihood(k, y, alpha=h["df"] / 2, beta=h["df"] / 2 - 1,
                                                noise=h["noise_variance"])
    else:
        lml = log_marginal_likelihood(k, y, noise=h["noise_variance"])
    return -lml / y.shape[0]


def _predict(log_params: dict, x, y, x_test, y_test, *, kernel: str):
    """Predictive of noisy test targets (standardised units): mean, predictive sd, log density and scale (sd of
    the Gaussian, t scale) per row, the predictive df (``inf`` for the GP) and the jitter the solve needed."""
    h = _hyper(log_params)
    k, kx = _gram(kernel, h, x, x), _gram(kernel, h, x_test, x)
    # both kernels are stationary: the prior variance of every test point is the signal variance
    kss = jnp.full(x_test.shape[0], h["signal_variance"], k.dtype)
    noise = h["noise_variance"]
    if "df" in h:
        post = student_t_posterior(k, y, kx, kss, alpha=h["df"] / 2, beta=h["df"] / 2 - 1, noise=noise,
                                   full_cov=False, noisy_targets=True)
        logpdf = student_t_predictive_logpdf(post, y_test)
        return post.mean, jnp.sqrt(post.cov), logpdf, jnp.sqrt(post.scale), post.df, post.jitter
    post = gp_posterior(k, y, kx, kss, noise=noise, full_cov=False)
    sd = jnp.sqrt(post.var + noise)
    logpdf = jax.scipy.stats.norm.logpdf(y_test, post.mean, sd)
    return post.mean, sd, logpdf, sd, jnp.asarray(jnp.inf, k.dtype), post.jitter


def _train(ctx):
    """The training rows (inputs flattened, targets standardised) and the targets' mean and sd."""
    train = ctx.data.split("train")
    x = train["x"].reshape(len(train["x"]), -1)
    y_mean, y_std = float(train["y"].mean()), float(train["y"].std()) or 1.0
    return x, ((train["y"] - y_mean) / y_std).astype(np.float32), y_mean, y_std


def _setup(ctx):
    """Training arrays on this process's first device, the optimiser and the compiled unit, built once per run.

    An exact GP does not split over devices (one Cholesky of the whole Gram), so each process fits on one of
    its devices, all processes the same deterministic program; copying the state to every device would only
    repeat the O(n^3) work (8 times over on a host of 8 simulated CPU devices)."""
    if "setup" not in ctx.cache:
        p = ctx.params
        x, y, y_mean, y_std = _train(ctx)
        device = ctx.mesh.local_devices[0]
        # float32 throughout: the targets are standardised and the fitted noise variance stays far above
        # float32's resolution of K's eigenvalues on such tables (float64 would halve the speed, far worse on
        # most accelerators); a Gram that does not factor gets the library's jitter (finish reports it).
        xd, yd = jax.device_put(x, device), jax.device_put(y, device)
        optimizer = optax.adam(p["learning_rate"])
        loss = functools.partial(neg_log_marginal_likelihood, kernel=p["kernel"])

        def unit(state, x, y):
            def one(s, _):
                value, grad = jax.value_and_grad(loss)(s["log_params"], x, y)
                updates, opt = optimizer.update(grad, s["opt"], s["log_params"])
                return {"log_params": optax.apply_updates(s["log_params"], updates), "opt": opt}, value

            fitted, losses = jax.lax.scan(one, {"log_params": state["log_params"], "opt": state["opt"]}, None,
                                          length=p["steps_per_unit"])
            return {**fitted, "loss": losses[-1]}

        ctx.cache["setup"] = (x, y, xd, yd, y_mean, y_std, optimizer, jax.jit(unit), jax.jit(loss), device)
    return ctx.cache["setup"]


def _local(state, device):
    """This process's copy of the (replicated) state, on ``device``."""
    return jax.tree.map(lambda a: jax.device_put(a.addressable_data(0), device), state)


def _init(ctx):
    p = ctx.params
    x, *_, optimizer, _, _, _ = _setup(ctx)
    f32 = np.float32
    log_params = {"log_lengthscale": jnp.full(x.shape[1], math.log(p["init_lengthscale"]), f32),
                  "log_signal": jnp.asarray(math.log(p["init_signal_variance"]), f32),
                  "log_noise": jnp.asarray(math.log(p["init_noise_variance"]), f32)}
    if p["model"] == "student_t":
        log_params["log_df_minus_2"] = jnp.asarray(math.log(p["init_df"] - 2), f32)
    return {"log_params": log_params, "opt": optimizer.init(log_params), "loss": jnp.zeros((), f32)}


def _step(ctx, state, i):
    _, _, xd, yd, *_, compiled, _, device = _setup(ctx)
    new = compiled(_local(state, device), xd, yd)
    # every process holds the same values: they make the replicated global state the runner checkpoints
    replicated = parallel.replicated_sharding(ctx.mesh)
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(replicated, np.asarray(a)), new)


def _finish(ctx, state):
    p = ctx.params
    x, y, xd, yd, y_mean, y_std, _, _, loss, device = _setup(ctx)
    log_params = _local(state["log_params"], device)
    test = ctx.data.split("test")
    x_test = test["x"].reshape(len(test["x"]), -1)
    y_test = test["y"].astype(np.float64)
    z_test = ((y_test - y_mean) / y_std).astype(np.float32)
    predict = jax.jit(functools.partial(_predict, kernel=p["kernel"]))
    # test rows in chunks of one padded shape (one compilation); padding rows repeat the last row
    m = len(x_test)
    chunk = min(m, _PREDICT_CHUNK)
    parts = []
    for start in range(0, m, chunk):
        rows = np.minimum(np.arange(start, start + chunk), m - 1)
        out = predict(log_params, xd, yd, x_test[rows], z_test[rows])
        parts.append([np.asarray(a, np.float64) for a in out[:4]] + [float(out[4]), float(out[5])])
    mean, sd, logpdf, scale = (np.concatenate([q[j] for q in parts])[:m] for j in range(4))
    df, jitter = parts[0][4], max(q[5] for q in parts)
    half = scipy.stats.norm.ppf(0.975) if math.isinf(df) else scipy.stats.t.ppf(0.975, df)
    h = {k: np.asarray(v, np.float64) for k, v in _hyper(log_params).items()}
    mean_o, sd_o = mean * y_std + y_mean, sd * y_std
    lower, upper = mean_o - half * scale * y_std, mean_o + half * scale * y_std
    out = {
        "model": p["model"],
        "kernel": p["kernel"],
        "n_train": int(len(x)),
        "n_test": int(m),
        "features": int(x.shape[1]),
        "num_fit_steps": int(p["num_units"] * p["steps_per_unit"]),
        "lengthscales": h["lengthscale"].tolist(),
        "signal_variance": float(h["signal_variance"]),
        "noise_variance": float(h["noise_variance"]),
        **({"df": float(h["df"]), "predictive_df": float(df)} if "df" in h else {}),
        "y_mean": y_mean,
        "y_std": y_std,
        "neg_log_marginal_likelihood_per_point": float(loss(log_params, xd, yd)),
        "test_rmse": float(np.sqrt(np.mean((mean_o - y_test) ** 2))),
        "test_rmse_train_mean": float(np.sqrt(np.mean((y_mean - y_test) ** 2))),
        # densities of the original targets: y = y_mean + y_std z, so log p(y) = log p(z) - log y_std
        "test_nll": float(-(logpdf.mean() - math.log(y_std))),
        "test_coverage_95": float(np.mean((y_test >= lower) & (y_test <= upper))),
        # added to K + s I (the matrix the objective factors too) by the jittered Cholesky; 0: none needed
        "jitter": jitter,
    }
    if ctx.is_main:
        from jaxbayes.demos import plotting

        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        np.savez(ctx.output_dir / "predictions.npz", mean=mean_o, sd=sd_o, lower=lower, upper=upper, y=y_test,
                 log_density=logpdf - math.log(y_std))
        fig, ax = plotting.figure(size=4.2)
        ax = ax[0][0]
        order = np.argsort(mean_o)
        name = "GP" if p["model"] == "gp" else "Student-t process"
        ax.errorbar(np.arange(m), mean_o[order], yerr=2 * sd_o[order], fmt=".", ms=3, lw=0.5, alpha=0.6,
                    label=f"{name} mean \u00b1 2 sd")
        ax.scatter(np.arange(m), y_test[order], s=4, c="k", label="held-out target")
        ax.set(xlabel="test row (sorted by predicted mean)", ylabel=ctx.data.table.get("y") or "target")
        ax.set_title(f"{name} ({p['kernel']} ARD), n = {len(x)}", fontsize=10)
        ax.legend(fontsize=7)
        out["figures"] = [plotting.save(fig, ctx.output_dir / "predictive.png")]
        out["predictions"] = "predictions.npz"
    return out


def _check(p) -> str | None:
    if p["model"] == "student_t" and p["init_df"] <= 2:
        return f"params.init_df: the Student-t process needs df > 2 (finite covariance), got {p['init_df']}"
    return None


def _check_data(p, data) -> str | None:
    if not data.train.has_y:
        return "data.y: gp.regression needs a real-valued target column (data.y = ...)"
    if data.num_classes:
        return ("data.y: gp.regression needs real-valued targets, but data.y holds integers (read as class "
                "labels); store them as floats (e.g. 3.0)")
    if data.test is None:
        return "data.test_fraction: gp.regression needs a test set (data.test_path or data.test_fraction > 0)"
    n = len(data.train)
    if n > p["max_rows"]:
        return (f"data.path: {n} training rows, more than params.max_rows = {p['max_rows']} (an exact GP keeps an "
                "n x n Gram and costs O(n^3) per step); subsample the table or raise params.max_rows")
    for split in ("train", "test"):
        rows = data.split(split)
        for key in ("x", "y"):
            bad = int(np.sum(~np.isfinite(rows[key])))
            if bad:
                return f"data.{key}: {bad} non-finite values (NaN or inf) in the {split} rows"
    return None


def _flop_per_step(n: int, d: int) -> float:
    """Rough FLOP of one Adam step: the Cholesky of the n x n Gram (n^3/3) and, in its gradient, two n x n
    triangular solves (n^3 each), so 7/3 n^3, plus the Gram and its gradient (about 6 n^2 d)."""
    return 7 / 3 * n**3 + 6 * n * n * d


def _summary(p, data) -> str:
    n, d = len(data.train), int(np.prod(data.x_shape))
    unit = p["steps_per_unit"] * _flop_per_step(n, d)
    return (f"exact {'GP' if p['model'] == 'gp' else 'Student-t process'}, {p['kernel']} ARD, on {n} rows x {d} "
            f"features; {p['num_units']} units of {p['steps_per_unit']} Adam steps, each ~7/3 n^3 = "
            f"{_flop_per_step(n, d):.2g} FLOP ({unit:.2g} FLOP per unit); the {n} x {n} float32 Gram "
            f"({4 * n * n / 2**20:.3g} MiB) is factored on one device per process")


JOB_KINDS = {
    "gp.regression": JobKind(
        name="gp.regression",
        description="exact GP or Student-t process regression on your [data] table, ARD kernel hyper-parameters "
                    "fitted by marginal likelihood",
        params={
            "model": Field(str, "gp", one_of("gp", "student_t"), "Gaussian process or Student-t process"),
            "kernel": Field(str, "rbf", one_of(*_KERNELS), "ARD kernel: one lengthscale per feature"),
            "num_units": Field(int, required(), positive, "units of fitting; one unit = steps_per_unit"),
            "steps_per_unit": Field(int, 100, positive, "Adam steps on the negative log marginal likelihood per unit"),
            "learning_rate": Field(float, 0.05, positive, "Adam step size (on the log hyper-parameters)"),
            "init_lengthscale": Field(float, 1.0, positive, "initial lengthscale of every feature"),
            "init_signal_variance": Field(float, 1.0, positive, "initial signal variance (standardised targets)"),
            "init_noise_variance": Field(float, 0.1, positive, "initial noise variance (standardised targets)"),
            "init_df": Field(float, 5.0, positive, "initial degrees of freedom of the Student-t process (> 2)"),
            "max_rows": Field(int, 20_000, positive, "refuse more training rows than this (n^3 per step)"),
        },
        num_steps=lambda p: p["num_units"],
        length_keys=("num_units",),
        init=_init,
        step=_step,
        finish=_finish,
        check=_check,
        check_data=_check_data,
        data="required",
        summary=_summary,
    ),
}
