"""Multi-host start-up and per-process data loading.

On a TPU pod, a SLURM allocation or a Kubernetes job, :func:`initialize` calls
``jax.distributed.initialize()``, which detects the cluster; on a single process it does nothing. Each
process then loads only its own slice of the data (:func:`process_slice`) and assembles the global,
sharded array with :func:`host_local_to_global`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from jaxbayes._checks import check_int_range
from jaxbayes.parallel._mesh import DATA_AXIS, batch_sharding

_CLUSTER_ENV = ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS",
                "JAX_COORDINATOR_ADDRESS", "OMPI_COMM_WORLD_SIZE")


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Sequence[int] | None = None,
    initialization_timeout: int = 300,
) -> bool:
    """Join a multi-process JAX run, or do nothing on a single process.

    With explicit ``coordinator_address``, ``num_processes`` and ``process_id`` (local runs, tests) these
    are passed to ``jax.distributed.initialize``. Without them, the cluster is auto-detected (TPU pods,
    SLURM, Kubernetes, MPI) when its environment variables are present, and otherwise this is a no-op.
    CPU processes use the gloo collectives. Calling it twice is harmless.

    Returns:
      ``True`` if this process is now part of a multi-process run.
    """
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    explicit = (coordinator_address, num_processes, process_id)
    if any(v is not None for v in explicit) and not all(v is not None for v in explicit):
        raise ValueError("give coordinator_address, num_processes and process_id together, or none of them")
    if num_processes is not None:
        check_int_range("num_processes", num_processes, 1)
        check_int_range("process_id", process_id, 0, num_processes - 1)
        if num_processes == 1:
            return False
    elif not any(name in os.environ for name in _CLUSTER_ENV):
        return False
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=initialization_timeout,
    )
    return jax.process_count() > 1


def is_main_process() -> bool:
    """``True`` on process 0, the one that logs, shows progress and writes reports."""
    return jax.process_index() == 0


def process_slice(num_items: int, *, process_index: int | None = None, process_count: int | None = None) -> slice:
    """The contiguous slice of ``range(num_items)`` that this process loads.

    Items are split evenly; ``num_items`` must be divisible by the process count so every process holds
    an equal share of the global array.

    Example:
      >>> process_slice(8, process_index=1, process_count=2)
      slice(4, 8, None)
    """
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    num_items = check_int_range("num_items", num_items, 0)
    if num_items % count:
        raise ValueError(f"num_items={num_items} must be divisible by the process count {count}")
    per = num_items // count
    return slice(index * per, (index + 1) * per)


def host_local_to_global(local: np.ndarray | jax.Array, mesh: Mesh, *, axis_name: str = DATA_AXIS) -> jax.Array:
    """Assemble each process's local rows into one global array split along ``axis_name``.

    Process ``p`` passes rows ``process_slice(n)`` of the global data; the result has leading size ``n``.
    """
    local = np.asarray(local)
    return jax.make_array_from_process_local_data(batch_sharding(mesh, local.ndim, axis_name=axis_name), local)


def distribute_rows(data, mesh: Mesh, *, axis_name: str = DATA_AXIS, drop_remainder: bool = True):
    """Global arrays split over ``mesh`` from a pytree of row-indexed arrays that every process can index.

    Each process reads only its contiguous share ``process_slice(n)`` of the rows (a memory-mapped array is
    read no further) and passes it to ``jax.make_array_from_process_local_data``. With ``drop_remainder`` the
    last ``N mod device_count`` rows are dropped so every device holds the same number; otherwise ``N`` must
    be divisible by the device count.

    Returns:
      ``(global_data, n)``: the pytree of global arrays and the number ``n`` of rows they hold.

    Example:
      >>> import numpy as np
      >>> from jaxbayes.parallel import data_mesh
      >>> (x, y), n = distribute_rows((np.ones((10, 2)), np.arange(10)), data_mesh(8))
      >>> n, x.shape, y.shape
      (8, (8, 2), (8,))
    """
    sizes = {int(np.shape(leaf)[0]) for leaf in jax.tree.leaves(data)}
    if len(sizes) != 1:
        raise ValueError(f"all arrays in data must share one leading size, got {sorted(sizes)}")
    total = sizes.pop()
    devices = mesh.shape[axis_name]
    n = (total // devices) * devices if drop_remainder else total
    if n == 0 or n % devices:
        raise ValueError(f"data has {total} rows; need a positive multiple of the {devices} devices "
                         f"of mesh axis {axis_name!r}" + ("" if drop_remainder else " (or drop_remainder=True)"))
    rows = process_slice(n)
    return jax.tree.map(lambda leaf: host_local_to_global(leaf[rows], mesh, axis_name=axis_name), data), n
