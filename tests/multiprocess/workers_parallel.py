"""Workers for tests/multiprocess/test_parallel_multiprocess.py (run inside each process)."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from jaxbayes import parallel


def global_data(n: int = 16, d: int = 4):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=(n,)).astype(np.float32)


def loss(w, x, y):
    return (jnp.tanh(x @ w) - y) ** 2


def sharded_reduction_and_gradient() -> dict:
    """Each process loads its own rows; the global sum and data-parallel gradient are replicated."""
    x, y = global_data()
    rows = parallel.process_slice(x.shape[0])
    mesh = parallel.data_mesh()
    gx = parallel.host_local_to_global(x[rows], mesh)
    gy = parallel.host_local_to_global(y[rows], mesh)
    w = jnp.array([0.1, 0.2, -0.3, 0.4])
    total = jax.jit(lambda a: jnp.sum(jnp.cos(a), axis=0), out_shardings=parallel.replicated_sharding(mesh))(gx)
    grad_fn = jax.jit(jax.value_and_grad(parallel.data_parallel(loss, mesh, in_axes=(None, 0, 0), reduce="mean")),
                      out_shardings=parallel.replicated_sharding(mesh))
    value, grad = grad_fn(w, gx, gy)
    keys = parallel.sample_keys(jax.random.key(3), 16)
    draws = parallel.data_parallel(lambda k: jax.random.normal(k, (2,)), mesh)(keys)
    return {
        "devices": np.array([jax.device_count(), jax.local_device_count(), jax.process_count()]),
        "total": np.asarray(total),
        "value": np.asarray(value),
        "grad": np.asarray(grad),
        "draws": multihost_utils.process_allgather(draws, tiled=True),
    }
