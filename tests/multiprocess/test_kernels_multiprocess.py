"""2 processes x 4 CPU devices give the single-process kernels Gram matrix and GP prediction."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes.kernels import gp_condition, gp_posterior, kernel_operator, log_marginal_likelihood, rbf
from tests.multiprocess.launcher import run_processes
from tests.multiprocess.workers_kernels import MF_PARAMS, MF_SOLVER, NET, global_data, matrix_free_global_data


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


@functools.cache
def matrix_free_reference():
    """The same solves on one process (computed once for both axis types): the solution and the log-det
    probes (same key) do not depend on where the points live, up to float32 rounding of the differently
    ordered tile sums; and the exact float64 solution and MMD."""
    x, y, z = matrix_free_global_data()
    op = kernel_operator(rbf, x, MF_PARAMS, chunk_size=16)
    alpha = np.asarray(gp_condition(op, y, noise=0.1, solver=MF_SOLVER).alpha)
    lml = np.asarray(log_marginal_likelihood(op, y, noise=0.1, solver=MF_SOLVER, key=jax.random.key(0)))
    exact_alpha = np.linalg.solve(np.asarray(op.dense(), np.float64) + 0.1 * np.eye(len(x)), y)
    d2 = lambda a, b: ((a[:, None] - b[None]) ** 2).sum(-1)  # noqa: E731
    kxx, kzz, kxz = (np.exp(-0.5 * d2(a, b).astype(np.float64)) for a, b in ((x, x), (z, z), (x, z)))
    n = len(x)
    exact_mmd = ((kxx.sum() - n) / (n * (n - 1)) + (kzz.sum() - n) / (n * (n - 1)) - 2 * kxz.mean())
    return alpha, lml, exact_alpha, exact_mmd


@pytest.mark.parametrize("axis_type", ["explicit", "auto"])
def test_two_processes_matrix_free_gp_and_mmd_match_one_process(axis_type):
    results = run_processes("tests.multiprocess.workers_kernels:matrix_free_gp_and_mmd", num_processes=2,
                            devices_per_process=4, axis_type=axis_type)
    alpha, lml, exact_alpha, exact_mmd = matrix_free_reference()
    for r in results:
        np.testing.assert_allclose(r["alpha"], alpha, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(r["alpha"], exact_alpha, rtol=1e-2, atol=1e-2)
        if axis_type == "explicit":
            np.testing.assert_allclose(r["lml"], lml, rtol=1e-4)
        np.testing.assert_allclose(r["mmd"], exact_mmd, atol=1e-5)
