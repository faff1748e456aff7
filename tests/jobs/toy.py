"""A small deterministic job kind for the runner's own tests: full-batch gradient descent for least
squares, with the data split over the global mesh (each process loads its own rows)."""

import importlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxbayes import parallel
from jaxbayes.jobs import Field, JobKind, positive, register_job_kind, required


def data(seed: int, n: int, d: int = 3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ np.arange(1.0, d + 1) + 0.1 * rng.normal(size=n)).astype(np.float32)
    return x, y


def _init(ctx):
    return {"w": jnp.zeros(3, jnp.float32)}


def _setup(ctx):
    if "setup" not in ctx.cache:
        if ctx.params["needs"]:
            importlib.import_module(ctx.params["needs"])
        x, y = data(0, ctx.params["n"])
        (gx, gy), _ = parallel.distribute_rows((x, y), ctx.mesh, drop_remainder=False)
        loss = parallel.data_parallel(lambda w, a, b: (a @ w - b) ** 2, ctx.mesh, in_axes=(None, 0, 0),
                                      reduce="mean")

        def update(w, i, a, b):  # global arrays are arguments: multi-process jit cannot close over them
            noise = 1e-3 * jax.random.normal(jax.random.fold_in(ctx.key, i), (3,))
            return w - ctx.params["lr"] * jax.grad(loss)(w, a, b) + noise

        ctx.cache["setup"] = (jax.jit(update, out_shardings=parallel.replicated_sharding(ctx.mesh)), gx, gy)
    return ctx.cache["setup"]


def _step(ctx, state, i):
    if i == ctx.params["fail_at"]:
        raise RuntimeError(f"planned failure at step {i}")
    _hold(ctx, i)
    update, gx, gy = _setup(ctx)
    return {"w": update(state["w"], i, gx, gy)}


def _finish(ctx, state):
    return {"w": np.asarray(state["w"]).tolist()}


TOY = JobKind(
    name="toy.least_squares",
    description="gradient descent on a least-squares problem (runner tests)",
    params={
        "steps": Field(int, required(), positive, "number of steps"),
        "lr": Field(float, 0.1, positive, "step size"),
        "n": Field(int, 64, positive, "rows of data"),
        "hold_at": Field(int, -1, doc="at this step write <output_dir>/holding and block (to be killed there)"),
        "needs": Field(str, "", doc="a module to import at set-up (a missing optional package)"),
        "fail_at": Field(int, -1, doc="raise at this step (-1: never)"),
    },
    num_steps=lambda p: p["steps"],
    length_keys=("steps", "fail_at", "hold_at"),
    init=_init,
    step=_step,
    finish=_finish,
)

def _hold(ctx, i):
    if i == ctx.params["hold_at"]:  # tell the test we got here (every earlier checkpoint is on disk), then wait
        (ctx.output_dir / "holding").touch()
        while True:
            time.sleep(1.0)


def _sgd_step(ctx, state, i):
    """One SGD step of least squares on the next global batch of the job's [data]."""
    _hold(ctx, i)
    if "batches" not in ctx.cache:
        ctx.cache["batches"] = ctx.data.batches(ctx.mesh, ctx.params["batch_size"], ctx.seed)
        grad = jax.grad(lambda w, x, y: jnp.mean((x @ w - y) ** 2))
        ctx.cache["update"] = jax.jit(lambda w, x, y: w - ctx.params["lr"] * grad(w, x, y),
                                      out_shardings=parallel.replicated_sharding(ctx.mesh))
    batch = next(ctx.cache["batches"])
    return {"w": ctx.cache["update"](state["w"], batch["x"], batch["y"])}


TOY_SGD = JobKind(
    name="toy.sgd",
    description="minibatch SGD for least squares on the job's [data] (runner tests of data jobs)",
    params={
        "steps": Field(int, required(), positive, "number of steps"),
        "lr": Field(float, 0.05, positive, "step size"),
        "batch_size": Field(int, 8, positive, "rows per global batch"),
        "hold_at": Field(int, -1, doc="at this step write <output_dir>/holding and block (to be killed there)"),
    },
    num_steps=lambda p: p["steps"],
    length_keys=("steps", "hold_at"),
    init=_init,
    step=_sgd_step,
    finish=_finish,
    data="required",
)

register_job_kind(TOY)
register_job_kind(TOY_SGD)
