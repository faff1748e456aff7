"""2 processes x 4 CPU devices give the single-process samples and likelihoods of jaxbayes.sde."""

import jax
import numpy as np

from jaxbayes import parallel
from jaxbayes.sde import sample_batch
from tests.multiprocess.launcher import run_processes
from tests.multiprocess.workers_sde import likelihood, sampler


def test_two_processes_match_single_process():
    results = run_processes("tests.multiprocess.workers_sde:sharded_sampling_and_likelihood",
                            num_processes=2, devices_per_process=4)
    samples = jax.jit(lambda k: sample_batch(sampler, k, 16))(jax.random.key(5)).samples
    logp = jax.jit(jax.vmap(likelihood))(parallel.sample_keys(jax.random.key(6), 16), samples)
    for r in results:
        np.testing.assert_array_equal(r["devices"], [8, 2])
        np.testing.assert_allclose(r["samples"], samples, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(r["logp"], logp, rtol=1e-4, atol=1e-4)
