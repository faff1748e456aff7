"""Workers for tests/multiprocess/test_kernels_multiprocess.py (run inside each process)."""

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxbayes import parallel
from jaxbayes.kernels import (
    CG,
    Dense,
    ReLU,
    gp_condition,
    gp_predict_batched,
    gram,
    kernel_operator,
    log_marginal_likelihood,
    rbf,
    serial,
)
from jaxbayes.sde import mmd2

NET = serial(Dense(1, 1.5, 0.1), ReLU(), Dense(1, 1.5, 0.1), ReLU(), Dense(1))


def global_data(n: int = 32, m: int = 16, d: int = 3):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x, np.sin(x[:, 0]).astype(np.float32), rng.normal(size=(m, d)).astype(np.float32)


def sharded_gram_and_prediction() -> dict:
    """Rows of the Gram matrix and test points are split over 8 devices in 2 processes."""
    x, y, xt = global_data()
    mesh = parallel.data_mesh()
    rows = parallel.process_slice(x.shape[0])
    gx = parallel.host_local_to_global(x[rows], mesh)
    rep = parallel.replicated_sharding(mesh)
    full_x = jax.make_array_from_callback(x.shape, rep, lambda idx: x[idx])
    gxt = jax.make_array_from_callback(xt.shape, rep, lambda idx: xt[idx])
    gy = jax.make_array_from_callback(y.shape, rep, lambda idx: y[idx])
    km = jax.jit(lambda a: gram(NET.kernel_fn, a, chunk_size=2, mesh=mesh), out_shardings=rep)(gx)

    def predict(k, yy, a, b):
        cond = gp_condition(k, yy, noise=0.1)
        return gp_predict_batched(NET.kernel_fn, cond, a, b, mesh=mesh)

    post = jax.jit(predict, out_shardings=rep)(km.nngp, gy, full_x, gxt)
    return {"nngp": np.asarray(km.nngp), "ntk": np.asarray(km.ntk), "mean": np.asarray(post.mean),
            "var": np.asarray(post.var)}


def matrix_free_global_data(n: int = 256, d: int = 2):
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 5, size=(n, d)).astype(np.float32)
    return x, (np.sin(2 * x[:, 0]) + 0.1 * rng.normal(size=n)).astype(np.float32), \
        (rng.normal(size=(n, d)) + 0.3).astype(np.float32)


MF_PARAMS = {"lengthscale": 0.7, "variance": 1.2}
MF_SOLVER = CG(tol=1e-5, preconditioner_rank=20, num_probes=8)


def matrix_free_gp_and_mmd(axis_type: str = "explicit") -> dict:
    """Each process holds half of the points; the matrix-free GP (products on the pairwise engine's ring) and
    the MMD between two sharded sample sets run on a mesh of all 8 devices of the 2 processes."""
    x, y, z = matrix_free_global_data()
    kind = jax.sharding.AxisType.Explicit if axis_type == "explicit" else jax.sharding.AxisType.Auto
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(kind,))
    rows = parallel.process_slice(x.shape[0])
    put = lambda a: jax.make_array_from_process_local_data(  # noqa: E731
        NamedSharding(mesh, P("data", *([None] * (a.ndim - 1)))), a[rows], a.shape)
    gx, gy, gz = put(x), put(y), put(z)
    rep = NamedSharding(mesh, P())

    def fit(a, b):
        op = kernel_operator(rbf, a, MF_PARAMS, chunk_size=16)
        cond = gp_condition(op, b, noise=0.1, solver=MF_SOLVER)
        return cond.alpha

    out = {"alpha": np.asarray(jax.jit(fit, out_shardings=rep)(gx, gy)),
           "mmd": np.asarray(jax.jit(lambda a, b: mmd2(a, b, bandwidth=1.0, chunk_size=16))(gx, gz))}
    if axis_type == "explicit":
        # known issue: on an Auto mesh across 2 processes the compiled log-det step (PCG + Lanczos
        # quadrature) hangs on jax 0.10 CPU; the solve above and every product run there
        lml = jax.jit(lambda a, b: log_marginal_likelihood(kernel_operator(rbf, a, MF_PARAMS, chunk_size=16), b,
                                                           noise=0.1, solver=MF_SOLVER, key=jax.random.key(0)))
        out["lml"] = np.asarray(lml(gx, gy))
    return out
