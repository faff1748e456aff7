"""Where two point sets live on a mesh: which mesh axis splits the rows of ``x`` and of ``y``.

The engine reads the placement from the arrays themselves, so a user only shards the inputs:

* a concrete ``jax.Array`` with a :class:`~jax.sharding.NamedSharding` gives its mesh and spec;
* under ``jit`` a mesh with **Explicit** axes puts the spec in the array's type (``jax.typeof(x).sharding``);
* under ``jit`` a mesh with **Auto** axes keeps only the mesh in the type, not the spec: the engine then splits
  both point sets over the mesh's one axis of size > 1 when their sizes divide it (``shard_map`` moves the
  blocks where XLA had put them), and otherwise leaves the partitioning to XLA.

Inside ``shard_map`` (manual axes) nothing is split again: each device reduces the blocks it holds.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from jaxbayes.parallel import is_explicit
from jaxbayes.typing import Array

AxisName = str | tuple[str, ...] | None


@dataclasses.dataclass(frozen=True)
class Placement:
    """The mesh and the axis (or axes) splitting the leading dimension of ``x`` and of ``y``.

    Attributes:
      mesh: a ``Mesh`` or ``AbstractMesh`` (``None``: one device, or XLA partitions).
      x_axis, y_axis: mesh axis name(s) splitting the points of ``x`` / ``y``, ``None`` if replicated.
    """

    mesh: Any = None
    x_axis: AxisName = None
    y_axis: AxisName = None

    @property
    def is_local(self) -> bool:
        return self.mesh is None or (self.x_axis is None and self.y_axis is None)

    def size(self, axis: AxisName) -> int:
        """Number of blocks along ``axis`` (1 for ``None``)."""
        if axis is None:
            return 1
        names = axis if isinstance(axis, tuple) else (axis,)
        return math.prod(self.mesh.shape[a] for a in names)

    @property
    def explicit(self) -> bool:
        return self.mesh is not None and is_explicit(self.mesh)

    def spec(self, axis: AxisName, ndim: int) -> PartitionSpec:
        return PartitionSpec(axis, *([None] * (ndim - 1)))

    def place(self, v: Array, axis: AxisName) -> Array:
        """``v`` with its leading axis split along ``axis`` (a no-op unless the mesh's axes are Explicit,
        where ``shard_map`` needs the input's type to match its ``in_specs``)."""
        if not self.explicit:
            return v
        target = self.spec(axis, v.ndim)
        if _spec_of(v) == _normalise(target, v.ndim):
            return v
        return jax.sharding.reshard(v, NamedSharding(self.mesh, target))


def _normalise(spec: PartitionSpec | None, ndim: int) -> tuple:
    if spec is None:
        return (None,) * ndim
    parts = tuple(spec) + (None,) * (ndim - len(spec))
    return tuple(p[0] if isinstance(p, tuple) and len(p) == 1 else p for p in parts)


def _sharding_of(v: Array) -> Any:
    if isinstance(v, jax.Array) and not isinstance(v, jax.core.Tracer):
        return getattr(v, "sharding", None)
    return getattr(jax.typeof(v), "sharding", None)


def _spec_of(v: Array) -> tuple | None:
    s = _sharding_of(v)
    return _normalise(s.spec, v.ndim) if isinstance(s, NamedSharding) else None


def _mesh_of(v: Array) -> Any:
    s = _sharding_of(v)
    if not isinstance(s, NamedSharding) or not s.mesh.shape:
        return None
    return s.mesh


def _usable_axes(mesh: Any) -> list[str]:
    """Axes of size > 1 that are not manual (inside ``shard_map`` the blocks are already local)."""
    return [name for name, t in zip(mesh.axis_names, mesh.axis_types, strict=True)
            if t != AxisType.Manual and mesh.shape[name] > 1]


def placement_of(x: Array, y: Array) -> Placement:
    """The :class:`Placement` of two point sets, read from their shardings (see the module docstring).

    Example:
      >>> import jax.numpy as jnp
      >>> placement_of(jnp.zeros((4, 2)), jnp.zeros((3, 2))).is_local
      True
    """
    meshes = [m for m in (_mesh_of(x), _mesh_of(y)) if m is not None]
    if not meshes:
        return Placement()
    mesh = meshes[0]
    if len(meshes) == 2 and (meshes[0].axis_names, meshes[0].axis_sizes) != (meshes[1].axis_names,
                                                                                 meshes[1].axis_sizes):
        raise ValueError(f"x and y are on different meshes: {meshes[0]} and {meshes[1]}")
    usable = set(_usable_axes(mesh))
    if not usable:
        return Placement()

    def axis_from_spec(v):
        spec = _spec_of(v)
        lead = None if spec is None else spec[0]
        names = lead if isinstance(lead, tuple) else (lead,)
        if lead is not None and all(n in usable for n in names):
            return lead
        return None

    x_axis, y_axis = axis_from_spec(x), axis_from_spec(y)
    auto = all(t == AxisType.Auto for t in mesh.axis_types)
    if x_axis is None and y_axis is None and auto and isinstance(x, jax.core.Tracer) and len(usable) == 1:
        # Auto axes under jit: the spec is not in the type; split both sets over the mesh's one axis.
        (axis,) = usable
        size = mesh.shape[axis]
        x_axis = axis if x.shape[0] % size == 0 else None
        y_axis = axis if y.shape[0] % size == 0 else None
    return Placement(mesh, x_axis, y_axis)
