"""Workers for tests/multiprocess/test_kernels_multiprocess.py (run inside each process)."""

import jax
import numpy as np

from jaxbayes import parallel
from jaxbayes.kernels import Dense, ReLU, gp_condition, gp_predict_batched, gram, serial

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
