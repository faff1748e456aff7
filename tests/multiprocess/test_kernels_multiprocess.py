"""2 processes x 4 CPU devices give the single-process kernels Gram matrix and GP prediction."""

import jax.numpy as jnp
import numpy as np

from jaxbayes.kernels import gp_posterior
from tests.multiprocess.launcher import run_processes
from tests.multiprocess.workers_kernels import NET, global_data


def test_two_processes_match_single_process():
    results = run_processes("tests.multiprocess.workers_kernels:sharded_gram_and_prediction",
                            num_processes=2, devices_per_process=4)
    x, y, xt = global_data()
    k = NET.kernel_fn(x)
    ref = gp_posterior(k.nngp, y, NET.kernel_fn(xt, x).nngp, jnp.diagonal(NET.kernel_fn(xt).nngp), noise=0.1,
                       full_cov=False)
    for r in results:
        np.testing.assert_allclose(r["nngp"], k.nngp, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r["ntk"], k.ntk, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r["mean"], ref.mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(r["var"], ref.var, rtol=1e-3, atol=1e-5)
