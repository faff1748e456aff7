"""A data-parallel VI step across 2 real processes equals the single-process computation."""

import jax.numpy as jnp
import numpy as np

from tests.multiprocess.launcher import run_processes
from tests.multiprocess.workers_vi import global_data, run_steps


def test_two_process_data_parallel_vi_step_matches_single_process():
    results = run_processes("tests.multiprocess.workers_vi:data_parallel_vi_steps", num_processes=2,
                            devices_per_process=4)
    x, y = global_data()
    ref_state, ref_obj = run_steps((jnp.asarray(x), jnp.asarray(y)))
    for res in results:
        np.testing.assert_array_equal(res["devices"], [8, 2])
        np.testing.assert_allclose(res["objectives"], ref_obj, rtol=1e-5)
        np.testing.assert_allclose(res["mean"], ref_state.q.mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res["log_scale"], ref_state.q.log_scale, rtol=1e-5, atol=1e-6)
