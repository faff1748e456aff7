"""Pod-job kinds of the OT pillar (``jaxbayes run``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxbayes import parallel
from jaxbayes.jobs import Field, JobKind, non_negative, positive, required
from jaxbayes.ot import pointcloud, sinkhorn
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
}
