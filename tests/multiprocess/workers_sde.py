"""Workers for tests/multiprocess/test_sde_multiprocess.py (run inside each process)."""

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxbayes import parallel
from jaxbayes.sde import VPSDE, gaussian_score, log_likelihood, pc_sampler, sample_batch

MU = np.array([1.0, -0.5])
COV = np.array([[0.5, 0.2], [0.2, 0.3]])


def sampler(key):
    sde = VPSDE()
    return pc_sampler(key, gaussian_score(sde, MU, COV), sde, (2,), num_steps=20)


def likelihood(key, x):
    sde = VPSDE()
    return log_likelihood(key, gaussian_score(sde, MU, COV), sde, x, solver="rk4", num_steps=20).logp


def sharded_sampling_and_likelihood() -> dict:
    """Samples and log-likelihoods split over 2 processes x 4 devices, gathered on every process."""
    mesh = parallel.data_mesh()
    out = jax.jit(lambda k: sample_batch(sampler, k, 16, mesh=mesh))(jax.random.key(5))
    keys = parallel.sample_keys(jax.random.key(6), 16)
    logp = jax.jit(parallel.data_parallel(likelihood, mesh))(keys, out.samples)
    return {
        "devices": np.array([jax.device_count(), jax.process_count()]),
        "samples": multihost_utils.process_allgather(out.samples, tiled=True),
        "logp": multihost_utils.process_allgather(logp, tiled=True),
    }
