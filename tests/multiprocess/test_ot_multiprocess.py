"""2 processes x 4 CPU devices give the single-process Sinkhorn result (matrix-free, sharded points; each
process holding half of both clouds, on Explicit and Auto meshes)."""

import jax
import numpy as np

from tests.multiprocess.launcher import run_processes
from tests.multiprocess.workers_ot import point_clouds, solve


def test_two_process_sinkhorn_matches_single_process():
    results = run_processes("tests.multiprocess.workers_ot:sharded_sinkhorn", num_processes=2,
                            devices_per_process=4)
    x, y = point_clouds()
    f, g, cost, n_iters = jax.jit(solve)(x, y)
    grad = jax.jit(jax.grad(lambda x: solve(x, y)[2]))(x)
    for r in results:
        np.testing.assert_array_equal(r["devices"], [8, 2])
        np.testing.assert_allclose(r["f"], f, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(r["g"], g, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(r["cost"], cost, rtol=1e-5)
        assert abs(int(r["n_iters"]) - int(n_iters)) <= 2
        np.testing.assert_allclose(r["grad"], grad, rtol=1e-4, atol=1e-6)


def test_two_process_halves_on_explicit_and_auto_meshes_match_single_process():
    results = run_processes("tests.multiprocess.workers_ot:axis_types_sinkhorn", num_processes=2,
                            devices_per_process=4)
    want = dict(zip(("f", "g", "cost", "n_iters"), jax.jit(solve)(*point_clouds()), strict=True))
    for r in results:
        for kind in ("Explicit", "Auto"):
            np.testing.assert_allclose(r[f"{kind}_f"], want["f"], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(r[f"{kind}_g"], want["g"], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(r[f"{kind}_cost"], want["cost"], rtol=1e-5)
            assert abs(int(r[f"{kind}_n_iters"]) - int(want["n_iters"])) <= 2
