"""Meshes over the data axis and the shardings that go with them."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxbayes._checks import check_int_range
from jaxbayes.typing import PyTree

DATA_AXIS = "data"


def data_mesh(num_devices: int | None = None, *, axis_name: str = DATA_AXIS,
              devices: Sequence[jax.Device] | None = None, explicit: bool = False) -> Mesh:
    """A 1-D mesh over ``num_devices`` devices (default: every device of every process).

    Args:
      num_devices: how many devices to use; ``None`` uses all of ``devices`` or ``jax.devices()``.
      axis_name: the mesh axis name that data is split along.
      devices: the devices to use (default ``jax.devices()``, the global list on multi-host runs).
      explicit: use JAX's explicit-sharding axis type (shardings in the types); the default ``Auto``
        lets XLA propagate shardings and insert collectives, which every jaxbayes function supports.

    Example:
      >>> mesh = data_mesh(1)
      >>> mesh.shape["data"]
      1
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices) if num_devices is None else check_int_range("num_devices", num_devices, 1, len(devices))
    axis_type = AxisType.Explicit if explicit else AxisType.Auto
    return jax.make_mesh((n,), (axis_name,), axis_types=(axis_type,), devices=devices[:n])


def batch_sharding(mesh: Mesh, ndim: int = 1, *, axis_name: str = DATA_AXIS) -> NamedSharding:
    """The sharding that splits an ``ndim``-dimensional array along its leading axis."""
    return NamedSharding(mesh, PartitionSpec(axis_name, *([None] * (ndim - 1))))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding that keeps a full copy of an array on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def shard_batch(tree: PyTree, mesh: Mesh, *, axis_name: str = DATA_AXIS) -> PyTree:
    """Place every leaf of ``tree`` on ``mesh`` split along its leading axis.

    The leading size of each leaf must be divisible by the mesh size (see :func:`pad_to_multiple`).
    """
    size = mesh.shape[axis_name]

    def put(x):
        if x.ndim == 0 or x.shape[0] % size:
            raise ValueError(
                f"cannot split leading axis of shape {x.shape} over {size} devices; "
                "pad the batch to a multiple of the device count (jaxbayes.parallel.pad_to_multiple)"
            )
        return jax.device_put(x, batch_sharding(mesh, x.ndim, axis_name=axis_name))

    return jax.tree.map(lambda x: put(jax.numpy.asarray(x)), tree)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Place a full copy of every leaf of ``tree`` on each device of ``mesh``."""
    return jax.device_put(tree, replicated_sharding(mesh))
