"""Helpers for inputs sharded on meshes with Explicit axis types (``jax.make_mesh``'s default).

With Explicit axes an array's sharding is part of its type, and operations whose result sharding would be
ambiguous are refused at trace time: ``shard_map`` wants its inputs already sharded as its ``in_specs`` say,
and an outer product of two arrays sharded along the same mesh axis (``x @ x.T`` on row-sharded ``x``) has no
legal result type. These helpers are no-ops on unsharded arrays and on meshes with Auto axes (whose shardings
are not in the types), so library code calls them unconditionally.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxbayes.typing import PyTree


def is_explicit(mesh: Mesh) -> bool:
    """Whether any axis of ``mesh`` has the Explicit axis type."""
    return any(t == AxisType.Explicit for t in getattr(mesh, "axis_types", ()))


def explicit_spec(x) -> PartitionSpec | None:
    """The explicit sharding in ``x``'s type, or ``None`` when it names no mesh axis (unsharded or Auto)."""
    try:
        sharding = jax.typeof(x).sharding
    except (AttributeError, TypeError):
        return None
    spec = getattr(sharding, "spec", None)
    if spec is None or all(entry is None for entry in spec):
        return None
    return spec


def unshard(tree: PyTree) -> PyTree:
    """Every explicitly sharded leaf of ``tree`` resharded to a full copy on each device; others unchanged.

    Use it on an operand that every device needs whole (the columns of a Gram matrix), so that products with
    a row-sharded operand have a legal, row-sharded result.
    """

    def one(x):
        if explicit_spec(x) is None:
            return x
        return jax.sharding.reshard(x, NamedSharding(jax.typeof(x).sharding.mesh, PartitionSpec()))

    return jax.tree.map(one, tree)


def shard_rows_like(tree: PyTree, ref) -> PyTree:
    """Every leaf of ``tree`` resharded so its leading axis is split as ``ref``'s (when ``ref``'s is explicit).

    ``jax.vmap`` over an explicitly sharded batch needs every mapped argument sharded the same along the
    mapped axis; per-example noise drawn inside a function (unsharded) is brought in line with the data by
    this. The values do not change, so results equal those for unsharded data. A no-op unless ``ref``'s
    leading axis is explicitly sharded.
    """
    spec = explicit_spec(ref)
    if spec is None or spec[0] is None:
        return tree
    mesh = jax.typeof(ref).sharding.mesh

    def one(x):
        return jax.sharding.reshard(x, NamedSharding(mesh, PartitionSpec(spec[0], *([None] * (x.ndim - 1)))))

    return jax.tree.map(one, tree)


def take_rows(x, idx):
    """``x[idx]`` for integer row indices ``idx`` (1-D), also when ``x``'s rows are explicitly sharded.

    A gather from explicitly sharded rows needs its result sharding spelled out: the rows taken stay split
    along the same mesh axis when their number divides evenly over it, else each device gets all of them.
    """
    x = jax.numpy.asarray(x)
    spec = explicit_spec(x)
    if spec is None:
        return x[idx]
    mesh = jax.typeof(x).sharding.mesh
    lead = spec[0]
    names = (lead,) if isinstance(lead, str) else tuple(lead or ())
    size = 1
    for name in names:
        size *= mesh.shape[name]
    keep = lead if lead is not None and idx.shape[0] % size == 0 else None
    out = NamedSharding(mesh, PartitionSpec(keep, *spec[1:]))
    return x.at[idx].get(out_sharding=out)


def reshard_to_specs(args: Sequence[PyTree], mesh: Mesh, specs: Sequence[PartitionSpec]) -> list[PyTree]:
    """Reshard each argument (every leaf of it) to its ``shard_map`` in-spec when ``mesh`` is Explicit.

    ``jax.shard_map`` over an Explicit mesh requires inputs whose type already carries the in-spec; replicated
    parameters and freshly built arrays do not. On Auto meshes the arguments are returned unchanged.
    """
    if not is_explicit(mesh):
        return list(args)
    return [jax.tree.map(lambda x, s=spec: jax.sharding.reshard(x, NamedSharding(mesh, s)), a)
            for a, spec in zip(args, specs, strict=True)]


__all__ = ["explicit_spec", "is_explicit", "reshard_to_specs", "shard_rows_like", "take_rows", "unshard"]
