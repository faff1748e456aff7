"""Kernels benchmark: NNGP/NTK values and time vs neural-tangents 0.6.5 (own venv, jax 0.5.3); GP posterior
and GP log marginal likelihood + gradient vs tinygp; sparse DKM step time vs n.

Work models for the limit columns:

* NNGP + NTK of an MLP: the two ``n x m`` float64 outputs must be written, ``16 n m`` bytes (every layer's
  elementwise recursion fuses into that pass); the input layer's ``2 n m d`` FLOP is negligible, so the
  bandwidth fraction says how close the pass is to a write-bound kernel.
* GP posterior (float32): a Cholesky ``n^3 / 3`` FLOP, two triangular solves with ``y`` ``2 n^2``, the test
  mean ``2 n t``; with variances, one triangular solve with the ``n x t`` cross-covariance, ``n^2 t``.
* GP lml + gradient (float64): the Cholesky ``n^3 / 3`` plus its reverse mode, whose two ``n x n``
  triangular solves are ``2 n^3``: ``7 n^3 / 3`` FLOP in all.
* CNN Gram (``kernels.gram``'s networks, float32, MNIST 28 x 28): each 3 x 3 convolution layer of the NNGP and
  the NTK is ``2 * 9`` multiply-adds per spatial number per pair (flatten: ``P = 784`` numbers, the spatial
  diagonal; global pooling: ``P^2``), ``36 P`` FLOP per pair per layer; ReLU's arc-cosine step is not counted.
  Both libraries compute only the diagonal for a flatten readout. ``temp_mb`` is XLA's scratch memory for the
  call (``memory_analysis``): the reason a whole-matrix call runs out of memory where tiles do not.
"""

from __future__ import annotations

import pathlib
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import Timing, peer_env, record, time_fn, time_interleaved
from jaxbayes.datasets import mnist_images
from jaxbayes.kernels import (
    Conv,
    Dense,
    Flatten,
    GlobalAvgPool,
    ReLU,
    dkm,
    dkm_layers,
    gp_posterior,
    log_marginal_likelihood,
    serial,
)

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
        images = (mnist_images()[0] / 255.0).astype(np.float32)
        for readout, (n, m) in _GRAM_CASES.items():
            rows_used = rng.permutation(len(images))[:n + m]  # the subset is sorted by class
            inputs[f"gram_{readout}_x1"], inputs[f"gram_{readout}_x2"] = images[rows_used[:n]], images[rows_used[n:]]
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
            work = dict(size=n, series="relu-mlp-depth4", bytes_moved=16.0 * n * (n // 2))
            rows.append(record("nngp_ntk", f"relu-mlp-depth4 n={n}x{n // 2}", "jaxbayes", t, **work, **metrics))
            if peer is not None:
                pt = float(peer[f"mlp_time_{n}"])
                rows.append(record("nngp_ntk", f"relu-mlp-depth4 n={n}x{n // 2}", "neural-tangents",
                                   Timing(0.0, pt, pt, pt, 1), **work))
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

        rows += _gram_rows(inputs, peer)

    rows += _gp_rows(quick)
    rows += _dkm_rows(quick)
    return rows


# (rows, columns) of the CNN Gram cases: flatten costs P = 784 numbers per pair, global pooling P^2 = 614656
_GRAM_CASES = {"flatten": (256, 256), "global_avg_pool": (8, 8)}


def _gram_network(readout: str):
    """``kernels.gram``'s default network: 3 blocks of Conv 3x3 -> ReLU, the readout, Dense."""
    layers = []
    for _ in range(3):
        layers += [Conv(1, (3, 3), 1.4, 0.1), ReLU()]
    return serial(*layers, Flatten() if readout == "flatten" else GlobalAvgPool(), Dense(1, 1.4, 0.1))


def _gram_rows(inputs: dict, peer: dict | None) -> list[dict]:
    rows = []
    for readout, (n, m) in _GRAM_CASES.items():
        x1, x2 = jnp.asarray(inputs[f"gram_{readout}_x1"]), jnp.asarray(inputs[f"gram_{readout}_x2"])
        net = _gram_network(readout)
        f = jax.jit(lambda a, b, net=net: net.kernel_fn(a, b)[:2])
        temp_mb = f.lower(x1, x2).compile().memory_analysis().temp_size_in_bytes / 2**20
        t, (nngp, ntk) = time_fn(f, x1, x2, repeats=3)
        positions = 784 if readout == "flatten" else 784**2
        case = f"cnn3-{readout} mnist 28x28 {n}x{m} float32"
        work = dict(flops=3 * 36.0 * positions * n * m, series=f"cnn3-{readout}")
        metrics = {"kernel_entries_per_s": n * m / t.median_s, "temp_mb": temp_mb}
        if peer is not None and f"gram_{readout}_nngp" in peer:
            for name, ours in (("nngp", nngp), ("ntk", ntk)):
                theirs = peer[f"gram_{readout}_{name}"]
                metrics[f"max_rel_diff_{name}"] = float(np.max(np.abs(np.asarray(ours) - theirs)) / np.max(theirs))
        rows.append(record("cnn_gram", case, "jaxbayes", t, **work, **metrics))
        if peer is not None and f"gram_{readout}_time" in peer:
            pt = float(peer[f"gram_{readout}_time"])
            rows.append(record("cnn_gram", case, "neural-tangents", Timing(0.0, pt, pt, pt, 1), **work,
                               kernel_entries_per_s=n * m / pt, temp_mb=float(peer[f"gram_{readout}_temp_mb"])))
    return rows


def _gp_rows(quick: bool) -> list[dict]:
    """GP posterior (float32) and lml + gradient (float64) vs tinygp, like for like: the same kernel matrix,
    noise and no jitter (tinygp adds none), one Cholesky each."""
    try:
        import tinygp
    except ImportError as err:  # the bench extra is not installed: say so in the table
        return [record("gp_posterior", "peer", "tinygp", error=str(err))]
    rows = []
    rng = np.random.default_rng(1)
    ker = tinygp.kernels.ExpSquared(scale=0.5)
    t_test = 200
    xt = jnp.linspace(-3, 3, t_test)[:, None]

    def ours_post(a, b, c):
        return gp_posterior(ker(a, a), b, ker(c, a), jnp.ones(c.shape[0]), noise=0.01, full_cov=False, jitter=0.0)

    def theirs_post(a, b, c):
        return tinygp.GaussianProcess(ker, a, diag=0.01).condition(b, c).gp

    cases = {"mean": (jax.jit(lambda a, b, c: ours_post(a, b, c).mean),
                      jax.jit(lambda a, b, c: theirs_post(a, b, c).loc)),
             "mean+var": (jax.jit(lambda a, b, c: (lambda p: (p.mean, p.var))(ours_post(a, b, c))),
                          jax.jit(lambda a, b, c: (lambda g: (g.loc, g.variance))(theirs_post(a, b, c))))}
    for n in ([1000, 2000] if quick else [1000, 2000, 4000]):
        x = jnp.asarray(rng.normal(size=(n, 1)), jnp.float32)
        y = jnp.sin(3 * x[:, 0])
        for label, (ours, theirs) in cases.items():
            timed = time_interleaved({"ours": partial(ours, x, y, xt), "theirs": partial(theirs, x, y, xt)},
                                     repeats=5)
            (t, r1), (t2, r2) = timed["ours"], timed["theirs"]
            diffs = jax.tree.map(lambda u, v: float(jnp.max(jnp.abs(u - v))), r1, r2)
            metrics = {"max_abs_diff_mean": diffs if label == "mean" else diffs[0]}
            if label != "mean":
                metrics["max_abs_diff_var"] = diffs[1]
            work = dict(size=n, series=label, flops=n**3 / 3 + 2 * n**2 + 2 * n * t_test
                        + (n**2 * t_test if label != "mean" else 0))
            rows.append(record("gp_posterior", f"n={n} {label}", "jaxbayes", t, **work, **metrics))
            rows.append(record("gp_posterior", f"n={n} {label}", "tinygp", t2, **work))

    # lml + gradient in the lengthscale and noise (float64, RBF on 1-D inputs), the fitting step's work
    with jax.enable_x64(True):
        def ours_lml(theta, a, b):
            k = tinygp.kernels.ExpSquared(scale=jnp.exp(theta[0]))
            return log_marginal_likelihood(k(a, a), b, noise=jnp.exp(theta[1]))

        def theirs_lml(theta, a, b):
            k = tinygp.kernels.ExpSquared(scale=jnp.exp(theta[0]))
            return tinygp.GaussianProcess(k, a, diag=jnp.exp(theta[1])).log_probability(b)

        theta = jnp.log(jnp.array([0.5, 0.01]))
        fns = {"ours": jax.jit(jax.value_and_grad(ours_lml)), "theirs": jax.jit(jax.value_and_grad(theirs_lml))}
        for n in ([1000, 3000] if quick else [1000, 3000, 5000]):
            x = jnp.asarray(rng.normal(size=(n, 1)))
            y = jnp.sin(3 * x[:, 0])
            timed = time_interleaved({k: partial(f, theta, x, y) for k, f in fns.items()}, repeats=3)
            (t, (v1, g1)), (t2, (v2, g2)) = timed["ours"], timed["theirs"]
            work = dict(size=n, flops=7 * n**3 / 3, peak="float64")
            rows.append(record("gp_lml_grad", f"n={n} float64", "jaxbayes", t, **work,
                               lml_abs_diff=abs(float(v1 - v2)), grad_max_abs_diff=float(jnp.max(jnp.abs(g1 - g2)))))
            rows.append(record("gp_lml_grad", f"n={n} float64", "tinygp", t2, **work))
    return rows


def _dkm_rows(quick: bool) -> list[dict]:
    """Sparse DKM objective+gradient step time vs n (64 inducing points)."""
    rows = []
    rng = np.random.default_rng(2)
    m = dkm(dkm_layers(2), sparse=True)
    times = {}
    for n in ([1000, 2000, 4000] if quick else [1000, 2000, 4000, 8000, 16000]):
        x = jnp.asarray(rng.normal(size=(n, 8)), jnp.float32)
        y = jnp.sin(x[:, :1])
        p = m.init_params(x[:64], y)
        step = jax.jit(lambda pp, a, b: jax.grad(lambda q: m.objective(q, a, b).objective)(pp))
        t, _ = time_fn(step, p, x, y, repeats=3)
        times[n] = t.median_s
        rows.append(record("sparse_dkm_grad", f"n={n} P=64", "jaxbayes", t, size=n,
                           ratio_to_n1000=t.median_s / times[1000]))
    return rows
