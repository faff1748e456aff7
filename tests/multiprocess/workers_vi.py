"""Workers for tests/multiprocess/test_vi_multiprocess.py (run inside each process)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbayes import parallel, vi


def global_data(n: int = 64, d: int = 5):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ np.linspace(-1, 1, d) + 0.3 * rng.normal(size=n)).astype(np.float32)
    return x, y


def loglik(w, batch):
    bx, by = batch
    return -0.5 * (by - bx @ w) ** 2 / 0.09


def algorithm(num_data: int):
    return vi.meanfield_vi(loglik, optax.adam(1e-2), num_samples=4, prior=vi.GaussianPrior(0.0, 1.0),
                           num_data=num_data)


def run_steps(batch, num_steps: int = 3, *, out_shardings=None):
    """Three data-parallel VI steps on a batch (global array when sharded); returns the final q and infos."""
    x, _ = batch
    alg = algorithm(4 * x.shape[0])  # the batch is a quarter of a notional data set of 4x its size
    step = jax.jit(alg.step, out_shardings=out_shardings)
    state = alg.init(jax.random.key(100), jnp.zeros(x.shape[1], jnp.float32))
    objectives = []
    for t in range(num_steps):
        state, info = step(jax.random.key(t), state, batch)
        objectives.append(info.objective)
    return state, jnp.stack(objectives)


def data_parallel_vi_steps() -> dict:
    """Each process loads its own rows; the VI state after the steps is replicated on every process."""
    x, y = global_data()
    rows = parallel.process_slice(x.shape[0])
    mesh = parallel.data_mesh()
    batch = (parallel.host_local_to_global(x[rows], mesh), parallel.host_local_to_global(y[rows], mesh))
    state, objectives = run_steps(batch, out_shardings=parallel.replicated_sharding(mesh))
    objectives = jax.jit(lambda o: o, out_shardings=parallel.replicated_sharding(mesh))(objectives)
    return {
        "devices": np.array([jax.device_count(), jax.process_count()]),
        "mean": np.asarray(state.q.mean),
        "log_scale": np.asarray(state.q.log_scale),
        "objectives": np.asarray(objectives),
    }
