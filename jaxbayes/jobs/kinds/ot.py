"""Pod-job kinds of the OT pillar (``jaxbayes run``): a batch of Sinkhorn problems between Gaussian clouds
(``ot.sinkhorn_batch``), and entropic OT between two point sets read from the user's files (``ot.solve``)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbayes import pairwise, parallel
from jaxbayes.jobs import Field, JobConfigError, JobKind, non_negative, one_of, open_source, positive, required
from jaxbayes.jobs import validate as validate_table
from jaxbayes.ot import as_cost, pointcloud, sinkhorn
from jaxbayes.ot.analytic import w2_gaussians


def _problem(key, n: int, dim: int):
    """Problem ``j``: ``n`` points from N(0, I) and ``n`` from N(mu_j, diag(s_j^2)), drawn from ``key_j``."""
    k_mu, k_s, k_x, k_y = jax.random.split(key, 4)
    mu = jax.random.normal(k_mu, (dim,))
    s = jnp.exp(0.3 * jax.random.normal(k_s, (dim,)))
    x = jax.random.normal(k_x, (n, dim))
    y = mu + s * jax.random.normal(k_y, (n, dim))
    return x, y, mu, s


def _solver(ctx):
    """The per-problem solve mapped over the mesh (``shard_map`` + ``vmap``), compiled once per run."""
    if "solve" not in ctx.cache:
        p = ctx.params

        def solve_one(key):
            x, y, mu, s = _problem(key, p["n"], p["dim"])
            out = sinkhorn(pointcloud(x, y, chunk_size=p["chunk_size"] or None), epsilon=p["epsilon"],
                           tol=p["tol"], max_iterations=p["max_iterations"])
            w2 = w2_gaussians(jnp.zeros_like(mu), jnp.ones_like(s), mu, s**2)
            return jnp.stack([out.transport_cost, w2, out.n_iters.astype(jnp.float32),
                              out.converged.astype(jnp.float32), out.error])

        mapped = parallel.data_parallel(solve_one, ctx.mesh)
        ctx.cache["solve"] = jax.jit(mapped, out_shardings=parallel.replicated_sharding(ctx.mesh))
    return ctx.cache["solve"]


def _init(ctx):
    return {"results": jnp.zeros((ctx.params["num_problems"], 5), jnp.float32)}


def _step(ctx, state, i):
    per = ctx.params["problems_per_step"]
    start = i * per
    count = min(per, ctx.params["num_problems"] - start)
    keys = parallel.sample_keys(ctx.key, count, start=start)
    block = _solver(ctx)(keys)
    return {"results": jax.lax.dynamic_update_slice(state["results"], block, (start, 0))}


def _finish(ctx, state):
    r = np.asarray(state["results"])
    cost, w2, iters, converged, error = r.T
    out = {
        "num_problems": int(r.shape[0]),
        "converged_fraction": float(converged.mean()),
        "mean_iterations": float(iters.mean()),
        "max_marginal_error": float(error.max()),
        "mean_transport_cost": float(cost.mean()),
        "mean_closed_form_w2": float(w2.mean()),
        "mean_relative_gap_to_w2": float(np.mean(np.abs(cost - w2) / w2)),
    }
    if ctx.is_main:

        from jaxbayes.demos import plotting

        fig, ax = plotting.figure()
        ax = ax[0][0]
        ax.scatter(w2, cost, s=8)
        lim = [0, float(max(w2.max(), cost.max())) * 1.05]
        ax.plot(lim, lim, "k--", lw=1)
        ax.set(xlabel="closed-form W2^2 of the sampling Gaussians", ylabel="entropic transport cost of samples",
               title=f"{r.shape[0]} Sinkhorn problems")
        out["figures"] = [plotting.save(fig, ctx.output_dir / "costs_vs_w2.png")]
    return out


def _check(p) -> str | None:
    if p["problems_per_step"] > p["num_problems"]:
        return "params.problems_per_step: must be <= params.num_problems"
    return None


# ------------------------------------------------------------------------------------------------ ot.solve
# Rows are checked for NaN/inf this many at a time when the data is opened, so memory stays bounded.
_SCAN_ROWS = 65_536
# Dense mode stores the cost matrix and a kernel of the same size: beyond 2^30 entries (8 GiB in float32 for
# the two) it is refused in favour of matrix_free.
_DENSE_ENTRIES = 2**30

DATA = {
    "source": Field(str, required(), doc="the source points: .npy/.npz, a folder of shards, .csv/.parquet"),
    "source_x": Field((str, list), "", doc="the .npz array of source points, or the table's columns (default: "
                                           "all but the weights)"),
    "source_weights": Field(str, "", doc="the .npz array or table column of non-negative source weights "
                                         "(default: uniform)"),
    "target": Field(str, required(), doc="the target points, in any of the source's formats"),
    "target_x": Field((str, list), "", doc="the .npz array of target points, or the table's columns"),
    "target_weights": Field(str, "", doc="the .npz array or table column of non-negative target weights"),
}


class PointSets:
    """The two point sets of an ``ot.solve`` job (what :func:`open_point_sets` returns; ``ctx.data``).

    Points are read lazily from their row sources (memory-mapped where the format allows); each row is
    flattened to a vector. The weights are read whole (one number per point) and normalised to sum to one.

    Attributes:
      table: the validated ``[data]`` table.
      source, target: the row sources (:func:`jaxbayes.jobs.open_source`).
      a, b: the normalised weights, float64 ``(n,)`` and ``(m,)``.
      n, m, dim: the numbers of points and their dimension.
      iterators: always empty (the kind makes no data iterator).
    """

    def __init__(self, table: dict[str, Any], source, target, a: np.ndarray, b: np.ndarray, dim: int):
        self.table, self.source, self.target, self.a, self.b, self.dim = table, source, target, a, b, dim
        self.n, self.m = len(source), len(target)
        self.iterators: list = []
        self.on_new_iterator = None  # set by the runner on --resume; there is no iterator to position

    def _describe(self, side: str) -> str:
        t = self.table
        columns = t[f"{side}_x"]
        columns = f" [{', '.join(columns)}]" if isinstance(columns, list) else f" [{columns}]" if columns else ""
        weights = f"weights {t[f'{side}_weights']!r}" if t[f"{side}_weights"] else "uniform weights"
        n = self.n if side == "source" else self.m
        return f"{side} {n} x {self.dim} from {t[side]}{columns} ({weights})"

    def summary(self, processes: int | None = None) -> str:
        """One line: both point sets, their files and weights, and each process's share."""
        share = f"; each of {processes} processes reads 1/{processes} of the points" if (processes or 0) > 1 else ""
        return f"{self._describe('source')}, {self._describe('target')}{share}"


def _renamed(err: JobConfigError, where: str) -> JobConfigError:
    """``open_source``'s ``data.source.path/x/y`` messages under this table's keys (``data.source``,
    ``data.source_x``, ``data.source_weights``)."""
    text = str(err)
    # open_source wraps a missing .npz member ("data.source.x: no array ...", a JobConfigError, so a ValueError)
    # in its own "data.source.path: ... is not a readable .npz file: ..."; the inner complaint is the one to show
    text = text[text.rfind(where + "."):] if text.rfind(where + ".") > 0 else text
    for old, new in ((".path:", ":"), (".x:", "_x:"), (".y:", "_weights:")):
        if text.startswith(where + old):
            return JobConfigError(where + new + text[len(where + old):])
    return err


def _open_side(table: dict[str, Any], side: str, base: Path):
    where = f"data.{side}"
    path = base / table[side]
    x, weights = table[f"{side}_x"], table[f"{side}_weights"]
    if path.suffix == ".npy" and x:
        raise JobConfigError(f"{where}_x: a .npy file holds one array (the points); leave {side}_x out")
    if path.suffix == ".npy" and weights:
        raise JobConfigError(f"{where}_weights: a .npy file holds only the points; put points and weights in one "
                             ".npz or a table")
    try:
        rows = open_source(path, x=x, y=weights, where=where)
    except JobConfigError as err:
        raise _renamed(err, where) from None
    n = len(rows)
    if n == 0:
        raise JobConfigError(f"{where}: {path} holds no points")
    key = f"{where}_x" if x else where
    for start in range(0, n, _SCAN_ROWS):
        chunk = rows.rows(np.arange(start, min(n, start + _SCAN_ROWS)))["x"]
        bad = ~np.isfinite(chunk.reshape(len(chunk), -1).astype(np.float64)).all(axis=1)
        if bad.any():
            raise JobConfigError(f"{key}: point {start + int(np.argmax(bad))} of {path} is not finite (NaN or inf)")
    if not weights:
        return rows, np.full(n, 1.0 / n)
    w = rows.targets(np.arange(n)).astype(np.float64)
    for complaint, bad in (("is not finite", ~np.isfinite(w)), ("is negative", w < 0)):
        if bad.any():
            i = int(np.argmax(bad))
            raise JobConfigError(f"{where}_weights: the weight of point {i} {complaint} ({w[i]}) in {path}")
    if not w.sum() > 0:
        raise JobConfigError(f"{where}_weights: every weight in {path} is zero; give some point a positive weight")
    return rows, w / w.sum()


def open_point_sets(table: Mapping[str, Any], base: Path) -> PointSets:
    """Validate an ``ot.solve`` ``[data]`` table and open its two point sets (``JobKind.open_data``).

    .. code-block:: toml

        [data]
        source = "source.npy"        # .npy / .npz / a folder of shards / .csv / .parquet, relative to the job file
        source_x = ""                # .npz array name or table columns (default: every column but the weights)
        source_weights = ""          # .npz array or table column of non-negative weights (default: uniform)
        target = "target.csv"
        target_x = ["a", "b"]
        target_weights = "w"

    Every point is checked to be finite and the weights to be non-negative with positive sum; a bad file,
    key or column raises :class:`~jaxbayes.jobs.JobConfigError` naming the key.

    Example:
      >>> import numpy as np, tempfile, pathlib
      >>> folder = pathlib.Path(tempfile.mkdtemp())
      >>> np.save(folder / "x.npy", np.zeros((5, 2))); np.savez(folder / "y.npz", y=np.ones((4, 2)), w=np.arange(4.0))
      >>> data = open_point_sets({"source": "x.npy", "target": "y.npz", "target_x": "y", "target_weights": "w"}, folder)
      >>> data.n, data.m, data.dim, data.b.tolist()
      (5, 4, 2, [0.0, 0.16666666666666666, 0.3333333333333333, 0.5])
    """
    table = validate_table(table, DATA, "data")
    (source, a), (target, b) = (_open_side(table, side, base) for side in ("source", "target"))
    dim, dim_target = int(np.prod(source.x_shape)), int(np.prod(target.x_shape))
    if dim != dim_target:
        key = "data.target_x" if table["target_x"] else "data.target"
        raise JobConfigError(f"{key}: the target points have {dim_target} features, the source points {dim}")
    return PointSets(table, source, target, a, b, dim)


def _float_dtype():
    return jax.dtypes.canonicalize_dtype(np.float64)  # float32 unless x64 is enabled


def _global_points(rows, weights: np.ndarray, mesh, dim: int):
    """Points, weights and a real-point mask as global arrays split by rows over ``mesh``; each process reads
    only its own rows. Padding to a multiple of the devices repeats the last point with weight zero (a
    zero-weight point adds nothing to any soft-min, so the solve is that of the unpadded problem)."""
    n, dtype = len(rows), _float_dtype()
    padded = -(-n // mesh.shape[parallel.DATA_AXIS]) * mesh.shape[parallel.DATA_AXIS]
    mine = np.arange(padded)[parallel.process_slice(padded)]
    clipped = np.minimum(mine, n - 1)
    local = {"x": rows.rows(clipped)["x"].reshape(len(mine), dim).astype(dtype),
             "w": np.where(mine < n, weights[clipped], 0.0).astype(dtype),
             "real": (mine < n).astype(dtype)}
    return {k: jax.make_array_from_process_local_data(parallel.batch_sharding(mesh, v.ndim), v,
                                                      (padded,) + v.shape[1:]) for k, v in local.items()}


@functools.cache
def _programs(mesh, cost: str, dense: bool, chunk_size: int, tol: float, iterations: int, tau_a: float,
              tau_b: float):
    """The compiled cost scale, Sinkhorn unit and barycentric map for one configuration (cached, so runs in one
    process with the same settings compile once). Results are replicated on every device."""
    cost_fn = as_cost(cost)

    def geometry(x, y):
        geom = pointcloud(x, y, cost=cost_fn, chunk_size=None if dense else chunk_size)
        # dense: the cost matrix is built once, split by rows like x (Geometry.materialize), and Sinkhorn runs
        # its absorbed dense loop; matrix-free: tiles are recomputed per soft-min, never the n x m matrix
        return geom.materialize() if dense else geom

    def scale(src, tgt):
        # the library's cost scale (Geometry.cost_scale: the unweighted mean of C), over the real points only
        rows = pairwise.row_sums(cost_fn.pairwise, src["x"], tgt["x"], tgt["real"], chunk_size=chunk_size)
        return jnp.sum(src["real"] * rows) / (jnp.sum(src["real"]) * jnp.sum(tgt["real"]))

    def unit(state, src, tgt, eps):
        out = sinkhorn(geometry(src["x"], tgt["x"]), src["w"], tgt["w"], epsilon=eps, relative_epsilon=False,
                       tau_a=tau_a, tau_b=tau_b, tol=tol, max_iterations=iterations, init=(state["f"], state["g"]))
        return {"f": out.f, "g": out.g, "cost": out.cost, "primal_cost": out.primal_cost,
                "transport_cost": out.transport_cost, "error": out.error, "converged": out.converged,
                "iterations": state["iterations"] + out.n_iters, "units": state["units"] + 1}

    def barycentric(state, src, tgt, eps):
        # T(x_i) = sum_j P_ij y_j / sum_j P_ij, both sums in one plan product with [y, 1]. The row factor
        # a_i cancels, so rows use log a = 0: each row of P / a_i sums to ~1 (no underflow for small a_i,
        # and padded zero-weight rows stay finite).
        y1 = jnp.concatenate([tgt["x"], jnp.ones_like(tgt["x"][:, :1])], axis=1)
        log_b = jnp.where(tgt["w"] > 0, jnp.log(jnp.where(tgt["w"] > 0, tgt["w"], 1.0)), -jnp.inf)
        p = geometry(src["x"], tgt["x"]).plan_apply(state["f"], state["g"], jnp.zeros_like(state["f"]), log_b,
                                                    eps, y1, 1)
        return p[:, :-1] / p[:, -1:]

    out = parallel.replicated_sharding(mesh)
    return (jax.jit(scale, out_shardings=out), jax.jit(unit, out_shardings=out),
            jax.jit(barycentric, out_shardings=out))


def _solve_setup(ctx):
    """Global point arrays, the absolute epsilon and the compiled programs, built once per run."""
    if "solve" not in ctx.cache:
        p, data = ctx.params, ctx.data
        programs = _programs(ctx.mesh, p["cost"], not p["matrix_free"], p["chunk_size"], p["tol"],
                             p["iterations_per_unit"], p["tau_a"], p["tau_b"])
        src = _global_points(data.source, data.a, ctx.mesh, data.dim)
        tgt = _global_points(data.target, data.b, ctx.mesh, data.dim)
        scale = programs[0](src, tgt)
        eps = jnp.asarray(p["epsilon"], scale.dtype) * (scale if p["relative_epsilon"] else 1.0)
        ctx.cache["solve"] = (src, tgt, scale, eps, programs)
    return ctx.cache["solve"]


def _solve_init(ctx):
    src, tgt, _, eps, _ = _solve_setup(ctx)
    zero = jnp.zeros((), eps.dtype)
    return {"f": jnp.zeros_like(src["w"]), "g": jnp.zeros_like(tgt["w"]), "cost": zero, "primal_cost": zero,
            "transport_cost": zero, "error": zero + jnp.inf, "converged": jnp.asarray(False),
            "iterations": jnp.zeros((), jnp.int32), "units": jnp.zeros((), jnp.int32)}


def _solve_step(ctx, state, i):
    """Unit ``i``: up to ``iterations_per_unit`` Sinkhorn iterations warm-started from the checkpointed
    potentials (``sinkhorn(..., init=(f, g))``), so units continue one solve; nothing once converged."""
    if bool(state["converged"]):
        return state
    src, tgt, _, eps, (_, unit, _) = _solve_setup(ctx)
    return unit(state, src, tgt, eps)


def _solve_finish(ctx, state):
    p, data = ctx.params, ctx.data
    src, tgt, scale, eps, (_, _, barycentric) = _solve_setup(ctx)
    n, m = data.n, data.m
    images = np.asarray(barycentric(state, src, tgt, eps))[:n]
    out = {
        "n": n, "m": m, "dim": data.dim, "cost": p["cost"], "mode": "dense" if not p["matrix_free"] else "matrix-free",
        "balanced": p["tau_a"] == 1.0 and p["tau_b"] == 1.0,
        "epsilon_absolute": float(eps), "cost_scale": float(scale),
        "transport_cost": float(state["transport_cost"]),
        "entropic_cost": float(state["cost"]),
        "primal_cost": float(state["primal_cost"]),
        "iterations": int(state["iterations"]), "units_run": int(state["units"]),
        "converged": bool(state["converged"]), "marginal_error": float(state["error"]), "tol": p["tol"],
    }
    if ctx.is_main:
        f, g = np.asarray(state["f"])[:n], np.asarray(state["g"])[:m]
        np.savez(ctx.output_dir / "potentials.npz", f=f, g=g, a=data.a, b=data.b, epsilon=np.float64(eps))
        np.save(ctx.output_dir / "barycentric_map.npy", images)
        out["files"] = ["potentials.npz", "barycentric_map.npy"]
        out["figures"] = [_plot_map(ctx, images)]
    return out


def _plot_map(ctx, images: np.ndarray) -> str:
    """Source, target and the barycentric map x_i -> T(x_i) of up to 200 source points (first two features)."""
    from matplotlib.collections import LineCollection

    from jaxbayes.demos import plotting

    data, rng = ctx.data, np.random.default_rng(ctx.seed)
    shown = np.sort(rng.choice(data.n, min(data.n, 200), replace=False))
    targets = np.sort(rng.choice(data.m, min(data.m, 2000), replace=False))
    x = data.source.rows(shown)["x"].reshape(len(shown), -1).astype(np.float64)
    y = data.target.rows(targets)["x"].reshape(len(targets), -1).astype(np.float64)
    t = images[shown].astype(np.float64)
    if data.dim == 1:  # one feature: sources on the line 0, targets on the line 1
        x, y, t = (np.stack([v[:, 0], np.full(len(v), level)], 1) for v, level in ((x, 0.0), (y, 1.0), (t, 1.0)))
        labels = ("feature 0", "source (0) / target (1)")
    else:
        x, y, t = x[:, :2], y[:, :2], t[:, :2]
        labels = ("feature 0", "feature 1")
    fig, ax = plotting.figure(size=4.5)
    ax = ax[0][0]
    ax.scatter(y[:, 0], y[:, 1], s=6, c="tab:orange", alpha=0.5, label=f"target ({data.m} points)")
    ax.add_collection(LineCollection(np.stack([x, t], 1), colors="0.5", linewidths=0.5, alpha=0.6))
    ax.scatter(x[:, 0], x[:, 1], s=8, c="tab:blue", label=f"source ({len(shown)} of {data.n})")
    ax.scatter(t[:, 0], t[:, 1], s=10, c="k", marker="x", lw=0.7, label="barycentric image T(x)")
    p = ctx.params
    ax.set(xlabel=labels[0], ylabel=labels[1],
           title=f"{p['cost']} OT, epsilon {p['epsilon']:g}{' x cost scale' if p['relative_epsilon'] else ''}")
    ax.legend(fontsize=7)
    return plotting.save(fig, ctx.output_dir / "barycentric_map.png")


def _solve_check_data(p, data) -> str | None:
    if not p["matrix_free"] and data.n * data.m > _DENSE_ENTRIES:
        return (f"params.matrix_free: dense mode stores the {data.n} x {data.m} cost matrix and a kernel as large "
                f"({data.n * data.m:.3g} entries each, more than {_DENSE_ENTRIES:.3g}); set matrix_free = true")
    return None


def _solve_summary(p, data) -> str:
    relax = "balanced" if p["tau_a"] == 1.0 and p["tau_b"] == 1.0 else f"unbalanced (tau_a {p['tau_a']:g}, " \
                                                                         f"tau_b {p['tau_b']:g})"
    eps = f"epsilon {p['epsilon']:g}{' x the mean cost' if p['relative_epsilon'] else ''}"
    size = data.n * data.m * np.dtype(_float_dtype()).itemsize
    mode = (f"matrix-free ({p['chunk_size']} x {p['chunk_size']} cost tiles, never the {data.n} x {data.m} matrix)"
            if p["matrix_free"] else f"dense ({data.n} x {data.m} cost matrix, {size / 2**20:.3g} MiB, split by "
                                     "rows over the devices)")
    return (f"{relax} entropic OT, {p['cost']} cost, {eps}; {mode}; up to {p['num_units']} units of "
            f"{p['iterations_per_unit']} Sinkhorn iterations (tol {p['tol']:g})")


def _tau(value: float) -> str | None:
    return None if 0.0 < value <= 1.0 else f"must be in (0, 1] (1: the marginal is exact), got {value}"


JOB_KINDS = {
    "ot.sinkhorn_batch": JobKind(
        name="ot.sinkhorn_batch",
        description="a batch of Sinkhorn problems between Gaussian point clouds, split over every device",
        params={
            "num_problems": Field(int, required(), positive, "how many OT problems"),
            "problems_per_step": Field(int, 64, positive, "problems solved per step (checkpoint unit)"),
            "n": Field(int, 256, positive, "points per cloud"),
            "dim": Field(int, 2, positive, "dimension of the points"),
            "epsilon": Field(float, 0.01, positive, "entropic regularisation, relative to the mean cost"),
            "tol": Field(float, 1e-3, positive, "stop when the marginal error is below this"),
            "max_iterations": Field(int, 2000, positive, "iteration cap per problem"),
            "chunk_size": Field(int, 0, non_negative, "matrix-free chunk size (0: dense cost matrix)"),
        },
        num_steps=lambda p: -(-p["num_problems"] // p["problems_per_step"]),
        init=_init,
        step=_step,
        finish=_finish,
        check=_check,
    ),
    "ot.solve": JobKind(
        name="ot.solve",
        description="entropic OT between two point sets from your files (dense or matrix-free Sinkhorn): "
                    "potentials, costs and the barycentric map",
        params={
            "epsilon": Field(float, 0.05, positive, "entropic regularisation (relative to the mean cost unless "
                                                    "relative_epsilon = false)"),
            "relative_epsilon": Field(bool, True, doc="multiply epsilon by the mean cost over all pairs"),
            "cost": Field(str, "sqeuclidean", one_of("sqeuclidean", "euclidean", "cosine"), "the ground cost"),
            "tau_a": Field(float, 1.0, _tau, "source relaxation in (0, 1]; 1 enforces the source marginal"),
            "tau_b": Field(float, 1.0, _tau, "target relaxation in (0, 1]; 1 enforces the target marginal"),
            "matrix_free": Field(bool, False, doc="recompute cost tiles instead of storing the n x m matrix"),
            "chunk_size": Field(int, 1024, positive, "tile side of the matrix-free mode and of the cost scale"),
            "tol": Field(float, 1e-3, positive, "stop when the L1 marginal error is below this"),
            "num_units": Field(int, required(), positive, "checkpointed units of iterations_per_unit iterations"),
            "iterations_per_unit": Field(int, 500, positive, "Sinkhorn iterations per unit (at most)"),
        },
        num_steps=lambda p: p["num_units"],
        length_keys=("num_units",),
        init=_solve_init,
        step=_solve_step,
        finish=_solve_finish,
        check_data=_solve_check_data,
        data="required",
        summary=_solve_summary,
        open_data=open_point_sets,
        data_fields=DATA,
    ),
}
