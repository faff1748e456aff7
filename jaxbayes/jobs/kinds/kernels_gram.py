"""The ``kernels.gram`` pod job: the NNGP/NTK Gram matrix of a CNN on the user's images, in resumable tiles over
every device of every host, then GP or Student-t prediction on the test split.

The network is ``depth`` blocks of ``Conv(filter_size) -> ReLU`` and a readout: ``"flatten"`` (then only the
spatial diagonal of each pair is needed, ``P = H * W`` numbers per kernel entry, see
:class:`jaxbayes.kernels.DiagonalKernel`) or ``"global_avg_pool"`` (every pair of positions: ``P^2`` per entry,
so its cost per entry grows with the square of the pixel count), then ``Dense(1)``. Every process holds all
the points (a tile pairs arbitrary rows); the tiles (:mod:`jaxbayes.jobs.kinds._gram_tiles`) are split over
the mesh and saved as they finish, so ``--resume`` continues at the first unfinished step (with
``checkpoint_every = 1``, the next tiles). At the end process 0 assembles the blocks a GP needs, fits the
hyper-parameters by maximum marginal likelihood (:mod:`jaxbayes.jobs.kinds._gram_fit`) and predicts: class
labels are regressed as centred one-hot targets (Lee et al., ICLR 2018; Novak et al., ICLR 2019), their
probabilities are ``P(argmax f = c)`` under the predictive; real targets are standardised.
"""

from __future__ import annotations

import math
import os
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from jaxbayes import parallel
from jaxbayes.jobs import Field, JobKind, one_of, positive
from jaxbayes.jobs.kinds._gram_fit import class_probabilities, fit_gp, fit_student_t
from jaxbayes.jobs.kinds._gram_tiles import (
    TilePlan,
    assemble,
    auto_tile_size,
    plan_tiles,
    save_tile,
    step_pairs,
    tile_step_fn,
)
from jaxbayes.jobs.kinds._reports import classification_report
from jaxbayes.kernels import Conv, Dense, Flatten, GlobalAvgPool, ReLU, gp_posterior, serial, student_t_posterior
from jaxbayes.parallel import DATA_AXIS

# Spatial numbers x layers per second that one CPU core sustains, measured on a 2-core x86 host (the example
# job on all 5000 MNIST images, 128 x 128 tiles: 6.1e4 entries/s; global pooling, bench_kernels' cnn_gram row
# and a 150-image job: ~50 entries/s); the start-up summary's time prediction uses them.
_CPU_POSITION_LAYERS_PER_CORE_S = {"flatten": 7.0e7, "global_avg_pool": 4.5e7}


def _network(p):
    layers = []
    for _ in range(p["depth"]):
        layers += [Conv(1, (p["filter_size"],) * 2, p["w_std"], p["b_std"]), ReLU()]
    readout = Flatten() if p["readout"] == "flatten" else GlobalAvgPool()
    return serial(*layers, readout, Dense(1, p["w_std"], p["b_std"]))


def _positions(p, x_shape) -> int:
    """Numbers per kernel entry at each layer: the spatial diagonal (flatten) or all pairs of positions."""
    pixels = math.prod(x_shape[:-1])
    return pixels if p["readout"] == "flatten" else pixels**2


def _itemsize(p) -> int:
    return 8 if p["precision"] == "float64" else 4


def _plan(p, data) -> TilePlan:
    n_train, n_test = len(data.train), len(data.test)
    size = p["tile_size"] or auto_tile_size(_positions(p, data.x_shape), _itemsize(p))
    return plan_tiles(n_train + n_test, n_train, size)


def _num_steps(p, data) -> int:
    return -(-len(_plan(p, data).pairs) // p["tiles_per_step"])


def _check_data(p, data) -> str | None:
    if len(data.x_shape) != 3:
        return f"data.x: kernels.gram needs images (N, H, W, C), got rows of shape {data.x_shape}"
    if data.test is None:
        return "data.test_fraction: kernels.gram predicts on a test set (test_path or test_fraction > 0)"
    if not data.train.has_y:
        return "data.y: kernels.gram needs targets (class labels or real values)"
    if data.num_classes == 1:
        return "data.y: every label is 0; kernels.gram needs at least two classes (or real-valued targets)"
    if len(data.train) > 100_000:
        return (f"data.path: {len(data.train)} training rows; the exact GP at the end factors an n x n matrix "
                "(<= 100000)")
    h, w = data.x_shape[:2]
    if p["filter_size"] > min(h, w):
        return f"params.filter_size: {p['filter_size']} is larger than the images ({h} x {w})"
    return None


def _summary(p, data) -> str:
    plan = _plan(p, data)
    positions = _positions(p, data.x_shape)
    work = plan.entries() * p["depth"] * positions
    cores = os.cpu_count() or 1
    seconds = work / (_CPU_POSITION_LAYERS_PER_CORE_S[p["readout"]] * cores)
    growth = "the pixel count" if p["readout"] == "flatten" else "the square of the pixel count (global pooling)"
    return (f"{len(plan.pairs)} tiles of {plan.size} x {plan.size} ({plan.entries():.3g} kernel entries, "
            f"{positions} numbers each: cost per entry grows with {growth}); "
            f"predicted {seconds / 60:.1f} min on {cores} CPU cores (accelerators: faster)")


def _setup(ctx):
    if "gram" not in ctx.cache:
        p, data = ctx.params, ctx.data
        plan = _plan(p, data)
        dtype = jnp.float64 if p["precision"] == "float64" else jnp.float32
        train, test = data.split("train"), data.split("test")
        points = np.concatenate([train["x"], test["x"]]).astype(dtype)
        padded = plan.num_blocks * plan.size
        # pad with copies of the first point (a zero image has zero variance, whose angles are 0/0)
        points = np.concatenate([points, np.repeat(points[:1], padded - len(points), axis=0)])
        pairs = step_pairs(plan, 0, p["tiles_per_step"], ctx.mesh.size)[0]
        pair_sharding = jax.sharding.NamedSharding(ctx.mesh, jax.sharding.PartitionSpec(DATA_AXIS))
        with jax.enable_x64(p["precision"] == "float64"):
            points = jax.device_put(points, parallel.replicated_sharding(ctx.mesh))
            # compiled here, so that the steps' timing (kernel entries per second) is the computation's alone
            compute = tile_step_fn(_network(p).kernel_fn, plan.size, ctx.mesh).lower(
                points, jax.ShapeDtypeStruct(pairs.shape, jnp.int32, sharding=pair_sharding)).compile()
        ctx.cache["gram"] = {"plan": plan, "points": points, "compute": compute, "pair_sharding": pair_sharding,
                             "seconds": 0.0, "tiles": 0,
                             "train_y": train["y"], "test_y": test["y"]}
    return ctx.cache["gram"]


def _tile_dir(ctx):
    return ctx.output_dir / "tiles"


def _init(ctx):
    _setup(ctx)
    return {"tiles_done": jnp.zeros((), jnp.int32)}


def _step(ctx, state, i):
    g, p = _setup(ctx), ctx.params
    pairs, count = step_pairs(g["plan"], i, p["tiles_per_step"], ctx.mesh.size)
    start = time.perf_counter()
    with jax.enable_x64(p["precision"] == "float64"):
        pairs_global = jax.make_array_from_callback(pairs.shape, g["pair_sharding"], lambda index: pairs[index])
        tiles = np.asarray(g["compute"](g["points"], pairs_global))
    g["seconds"] += time.perf_counter() - start
    g["tiles"] += count
    if ctx.is_main:
        for (a, b), tile in zip(pairs[:count], tiles[:count], strict=True):
            save_tile(_tile_dir(ctx), int(a), int(b), tile)
    return {"tiles_done": state["tiles_done"] + count}


def _targets(y, num_classes):
    """Centred one-hot rows for labels (``onehot - 1/C``), else the standardised column."""
    if num_classes:
        return np.eye(num_classes)[y] - 1.0 / num_classes, 0.0, 1.0
    mean, std = float(np.mean(y)), float(np.std(y)) or 1.0
    return ((y - mean) / std)[:, None], mean, std


def _predict(ctx, k_tt, k_st, k_ss, y_train):
    """Fit on the eigendecomposition, then the library's closed-form posterior at the fitted values."""
    p, num_classes = ctx.params, ctx.data.num_classes
    y, mean, std = _targets(y_train, num_classes)
    eig, vecs = np.linalg.eigh(k_tt)
    eig = np.clip(eig, 0.0, None)
    q = np.sum((vecs.T @ y) ** 2, axis=1)
    with jax.enable_x64(True):
        if p["model"] == "gp":
            fit = fit_gp(eig, q, y.shape[1])
            post = gp_posterior(fit.scale * k_tt, y, fit.scale * k_st, fit.scale * k_ss,
                                noise=fit.scale * fit.noise_ratio, full_cov=False)
            loc, var, draws, df = np.asarray(post.mean), np.asarray(post.var) + fit.scale * fit.noise_ratio, None, None
        else:
            fit = fit_student_t(eig, q, y.shape[1])
            post = student_t_posterior(k_tt, y, k_st, k_ss, alpha=fit.alpha, beta=fit.beta, noise=fit.noise_ratio,
                                       full_cov=False, noisy_targets=True)
            loc, var = np.asarray(post.mean), np.asarray(post.scale)
            # sigma^2 / (beta'/alpha') ~ InvGamma(alpha', alpha'): the scale every class shares
            a_post = float(post.alpha)
            rng = np.random.default_rng(ctx.seed)
            draws, df = np.sqrt(a_post / rng.gamma(a_post, size=512)), float(post.df)
    return fit, loc, var, draws, df, mean, std


def _finish(ctx, state):
    g, p = _setup(ctx), ctx.params
    out = {"tiles": len(g["plan"].pairs), "tile_size": g["plan"].size,
           "kernel_entries_per_second": g["tiles"] * g["plan"].size ** 2 / g["seconds"] if g["seconds"] else None,
           "peak_rss_gb_this_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if not ctx.is_main:
        return out  # the tiles, and so the prediction, are on process 0
    which = 0 if p["kernel"] == "nngp" else 1
    k_tt, k_st, k_ss = assemble(_tile_dir(ctx), g["plan"], which)
    fit, loc, var, draws, df, mean, std = _predict(ctx, k_tt, k_st, k_ss, g["train_y"])
    out.update({"n_train": int(k_tt.shape[0]), "n_test": int(k_st.shape[0]), "noise_ratio": fit.noise_ratio,
                "log_marginal_likelihood_per_entry": fit.log_marginal_likelihood_per_entry})
    out.update({"kernel_scale": fit.scale} if p["model"] == "gp" else {"alpha": fit.alpha, "beta": fit.beta})
    y_test = g["test_y"]
    if ctx.data.num_classes:
        probs = class_probabilities(loc, np.sqrt(var), draws)
        title = f"{ctx.data.description}: {p['kernel'].upper()} {p['model']} of a {p['depth']}-layer CNN"
        out.update(classification_report(ctx, probs, y_test, title))
        return out
    z = (y_test - mean) / std
    if df is None:
        nll = 0.5 * np.log(2 * np.pi * var) + 0.5 * (z - loc[:, 0]) ** 2 / var
    else:  # the marginal predictive of a Student-t process is a t with the posterior's df (var = its scale^2)
        nll = -scipy.stats.t.logpdf(z, df=df, loc=loc[:, 0], scale=np.sqrt(var))
    out.update({"test_rmse": float(np.sqrt(np.mean((loc[:, 0] * std + mean - y_test) ** 2))),
                "test_nll": float(np.mean(nll) + np.log(std))})
    return out


PARAMS = {
    "depth": Field(int, 3, positive, "Conv -> ReLU blocks"),
    "filter_size": Field(int, 3, positive, "edge of the square convolution filters"),
    "readout": Field(str, "flatten", one_of("flatten", "global_avg_pool"),
                     "flatten: cost per entry ~ pixels; global_avg_pool: ~ pixels^2"),
    "w_std": Field(float, 1.4, positive, "weight standard deviation"),
    "b_std": Field(float, 0.1, positive, "bias standard deviation"),
    "kernel": Field(str, "nngp", one_of("nngp", "ntk"), "the GP's prior covariance (ntk: the NTK used as a kernel)"),
    "model": Field(str, "gp", one_of("gp", "student_t"), "Gaussian or Student-t process prediction"),
    "precision": Field(str, "float32", one_of("float32", "float64"), "dtype of the kernel computation and tiles"),
    "tile_size": Field(int, 0, lambda v: None if v >= 0 else f"must be >= 0, got {v}",
                       "tile edge (0: the largest power of two <= 512 with <= 64 MiB per kernel array)"),
    "tiles_per_step": Field(int, 16, positive, "tiles per step (one checkpoint unit), split over all devices"),
}

JOB_KINDS = {
    "kernels.gram": JobKind(
        name="kernels.gram",
        description="NNGP/NTK Gram matrix of a CNN on your images in resumable tiles over every device, then "
                    "GP / Student-t prediction with accuracy and NLL",
        params=PARAMS,
        num_steps=_num_steps,
        init=_init,
        step=_step,
        finish=_finish,
        check_data=_check_data,
        data="required",
        summary=_summary,
    ),
}
