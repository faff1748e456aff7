"""Kernels benchmark: NNGP/NTK values and time vs neural-tangents 0.6.5 (own venv, jax 0.5.3); GP posterior
vs tinygp; sparse DKM step time vs n."""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import peer_env, record, time_fn
from jaxbayes.kernels import Conv, Dense, GlobalAvgPool, ReLU, dkm, dkm_layers, gp_posterior, serial

PEER = pathlib.Path(__file__).parent / "peers" / "neural_tangents_peer.py"


def _mlp():
    layers = [Dense(1, 1.5, 0.1)]
    for _ in range(4):
        layers += [ReLU(), Dense(1, 1.5, 0.1)]
    return serial(*layers)


def run(outdir: pathlib.Path, *, quick: bool) -> list[dict]:
    rows = []
    sizes = [1000, 2000] if quick else [1000, 2000, 4000, 8000]
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        inputs = {}
        for n in sizes:
            inputs[f"mlp_x1_{n}"] = rng.normal(size=(n, 16))
            inputs[f"mlp_x2_{n}"] = rng.normal(size=(n // 2, 16))  # distinct sets: no diagonal rounding
        inputs["cnn_x1"] = rng.normal(size=(32, 8, 8, 3))
        inputs["cnn_x2"] = rng.normal(size=(16, 8, 8, 3))
        try:
            env = peer_env("neural-tangents", ["jax[cpu]==0.5.3", "neural-tangents==0.6.5"])
            peer = env.run(PEER, inputs, timeout=1800)
        except Exception as err:  # noqa: BLE001 - report plainly and compare with our own closed forms only
            peer = None
            rows.append(record("nngp_ntk", "peer", "neural-tangents", error=str(err)[-300:]))
        net = _mlp()
        f = jax.jit(lambda a, b: net.kernel_fn(a, b)[:2])
        for n in sizes:
            x1, x2 = jnp.asarray(inputs[f"mlp_x1_{n}"]), jnp.asarray(inputs[f"mlp_x2_{n}"])
            t, (nngp, ntk) = time_fn(f, x1, x2, repeats=3)
            metrics = {}
            if peer is not None:
                metrics = {"max_abs_diff_nngp": float(np.max(np.abs(np.asarray(nngp) - peer[f"mlp_nngp_{n}"]))),
                           "max_abs_diff_ntk": float(np.max(np.abs(np.asarray(ntk) - peer[f"mlp_ntk_{n}"])))}
            rows.append(record("nngp_ntk", f"relu-mlp-depth4 n={n}x{n // 2}", "jaxbayes", t, **metrics))
            if peer is not None:
                pt = float(peer[f"mlp_time_{n}"])
                rows.append({"benchmark": "nngp_ntk", "case": f"relu-mlp-depth4 n={n}x{n // 2}",
                             "impl": "neural-tangents", "time_s": pt})
        cnn = serial(Conv(1, (3, 3), 1.4, 0.1), ReLU(), Conv(1, (3, 3), 1.4, 0.1), ReLU(), GlobalAvgPool(),
                     Dense(1, 1.0, 0.1))
        fc = jax.jit(lambda a, b: cnn.kernel_fn(a, b)[:2])
        t, (nngp, ntk) = time_fn(fc, jnp.asarray(inputs["cnn_x1"]), jnp.asarray(inputs["cnn_x2"]), repeats=5)
        metrics = {}
        if peer is not None:
            metrics = {"max_abs_diff_nngp": float(np.max(np.abs(np.asarray(nngp) - peer["cnn_nngp"]))),
                       "max_abs_diff_ntk": float(np.max(np.abs(np.asarray(ntk) - peer["cnn_ntk"])))}
        rows.append(record("nngp_ntk", "cnn 8x8x3 32x16", "jaxbayes", t, **metrics))
        if peer is not None:
            rows.append({"benchmark": "nngp_ntk", "case": "cnn 8x8x3 32x16", "impl": "neural-tangents",
                         "time_s": float(peer["cnn_time"])})

    # GP posterior at n = 2k vs tinygp, like for like: float32, the same kernel matrix, noise 0.01 and no jitter
    # (tinygp adds none), one Cholesky each; outputs the predictive mean, then mean and marginal variances.
    n = 2000
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(n, 1)), jnp.float32)
    y = jnp.sin(3 * x[:, 0])
    xt = jnp.linspace(-3, 3, 200)[:, None]
    import tinygp

    ker = tinygp.kernels.ExpSquared(scale=0.5)

    def ours_post(a, b, c):
        return gp_posterior(ker(a, a), b, ker(c, a), jnp.ones(c.shape[0]), noise=0.01, full_cov=False, jitter=0.0)

    def theirs_post(a, b, c):
        return tinygp.GaussianProcess(ker, a, diag=0.01).condition(b, c).gp

    cases = {"mean": (jax.jit(lambda a, b, c: ours_post(a, b, c).mean),
                      jax.jit(lambda a, b, c: theirs_post(a, b, c).loc)),
             "mean+var": (jax.jit(lambda a, b, c: (lambda p: (p.mean, p.var))(ours_post(a, b, c))),
                          jax.jit(lambda a, b, c: (lambda g: (g.loc, g.variance))(theirs_post(a, b, c))))}
    for label, (ours, theirs) in cases.items():
        t, r1 = time_fn(ours, x, y, xt, repeats=5)
        t2, r2 = time_fn(theirs, x, y, xt, repeats=5)
        diffs = jax.tree.map(lambda u, v: float(jnp.max(jnp.abs(u - v))), r1, r2)
        metrics = {"max_abs_diff_mean": diffs if label == "mean" else diffs[0]}
        if label != "mean":
            metrics["max_abs_diff_var"] = diffs[1]
        rows.append(record("gp_posterior", f"n={n} {label}", "jaxbayes", t, **metrics))
        rows.append(record("gp_posterior", f"n={n} {label}", "tinygp", t2))

    # sparse DKM objective+gradient step time vs n (64 inducing points)
    m = dkm(dkm_layers(2), sparse=True)
    times = {}
    for n in ([1000, 2000, 4000] if quick else [1000, 2000, 4000, 8000, 16000]):
        x = jnp.asarray(rng.normal(size=(n, 8)), jnp.float32)
        y = jnp.sin(x[:, :1])
        p = m.init_params(x[:64], y)
        step = jax.jit(lambda pp, a, b: jax.grad(lambda q: m.objective(q, a, b).objective)(pp))
        t, _ = time_fn(step, p, x, y, repeats=3)
        times[n] = t.median_s
        rows.append(record("sparse_dkm_grad", f"n={n} P=64", "jaxbayes", t,
                           ratio_to_n1000=t.median_s / times[1000]))
    return rows
