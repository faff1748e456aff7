"""Workers for tests/multiprocess/test_ot_multiprocess.py (run inside each process)."""

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxbayes import ot, parallel


def point_clouds(n: int = 64, m: int = 48, d: int = 3):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, d)).astype(np.float32), (rng.normal(size=(m, d)) + 0.5).astype(np.float32)


def solve(x, y):
    out = ot.sinkhorn(ot.pointcloud(x, y, chunk_size=16), tol=1e-5, max_iterations=3000)
    return out.f, out.g, out.cost, out.n_iters


def sharded_sinkhorn() -> dict:
    """Each process loads its own rows of both clouds; Sinkhorn and its gradient run on the global mesh."""
    x, y = point_clouds()
    mesh = parallel.data_mesh()
    gx = parallel.host_local_to_global(x[parallel.process_slice(x.shape[0])], mesh)
    gy = parallel.host_local_to_global(y[parallel.process_slice(y.shape[0])], mesh)
    rep = parallel.replicated_sharding(mesh)
    f, g, cost, n_iters = jax.jit(solve, out_shardings=rep)(gx, gy)
    grad = jax.jit(jax.grad(lambda x, y: solve(x, y)[2]), out_shardings=rep)(gx, gy)
    return {
        "devices": np.array([jax.device_count(), jax.process_count()]),
        "f": np.asarray(f), "g": np.asarray(g), "cost": np.asarray(cost), "n_iters": np.asarray(n_iters),
        "grad": np.asarray(multihost_utils.process_allgather(grad, tiled=True)),
    }


def axis_types_sinkhorn() -> dict:
    """Each process holds half of x and of y (``jax.make_array_from_process_local_data``) on a mesh of all
    global devices with Explicit, then Auto axes; Sinkhorn on the point cloud, gathered onto every device."""
    x, y = point_clouds()
    out = {}
    for kind in (AxisType.Explicit, AxisType.Auto):
        mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(kind,), devices=jax.devices())
        split = NamedSharding(mesh, P("data", None))
        gx = jax.make_array_from_process_local_data(split, x[parallel.process_slice(x.shape[0])])
        gy = jax.make_array_from_process_local_data(split, y[parallel.process_slice(y.shape[0])])
        assert gx.shape == x.shape and not gx.is_fully_addressable
        res = jax.jit(solve, out_shardings=NamedSharding(mesh, P()))(gx, gy)
        out.update({f"{kind.name}_{k}": np.asarray(v) for k, v in zip(("f", "g", "cost", "n_iters"), res,
                                                                       strict=True)})
    return out
