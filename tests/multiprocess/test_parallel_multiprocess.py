"""2 processes x 4 CPU devices give the single-process results of jaxbayes.parallel."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxbayes import parallel
from tests.multiprocess.launcher import run_processes
from tests.multiprocess.workers_parallel import global_data, loss


def test_two_processes_match_single_process():
    results = run_processes("tests.multiprocess.workers_parallel:sharded_reduction_and_gradient",
                            num_processes=2, devices_per_process=4)
    x, y = global_data()
    w = jnp.array([0.1, 0.2, -0.3, 0.4])
    value, grad = jax.value_and_grad(lambda w: loss(w, x, y).mean())(w)
    draws = jax.vmap(lambda k: jax.random.normal(k, (2,)))(parallel.sample_keys(jax.random.key(3), 16))
    for r in results:
        np.testing.assert_array_equal(r["devices"], [8, 4, 2])
        np.testing.assert_allclose(r["total"], np.cos(x).sum(0), rtol=1e-5)
        np.testing.assert_allclose(r["value"], value, rtol=1e-5)
        np.testing.assert_allclose(r["grad"], grad, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(r["draws"], draws)
