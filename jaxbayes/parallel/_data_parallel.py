"""Per-sample functions mapped over a batch that is split across the devices of a mesh.

``data_parallel(fn, mesh)`` runs ``jax.shard_map`` over the leading axis with ``jax.vmap`` inside, so each
device maps ``fn`` over its own slice and never waits for another device's data-dependent loops
(convergence tests, adaptive step counts). Batches whose size is not a multiple of the device count are
padded with copies of their first element and the padding is dropped (or masked out of reductions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from jaxbayes._checks import check_choice
from jaxbayes.parallel._explicit import is_explicit, reshard_to_specs, unshard
from jaxbayes.parallel._mesh import DATA_AXIS
from jaxbayes.typing import PyTree


def pad_to_multiple(tree: PyTree, multiple: int) -> tuple[PyTree, int]:
    """Pad every leaf's leading axis to a multiple of ``multiple`` with copies of its first row.

    Returns the padded tree and the original leading size.
    """
    sizes = {x.shape[0] for x in jax.tree.leaves(tree)}
    if len(sizes) != 1:
        raise ValueError(f"all mapped arguments must share one leading size, got sizes {sorted(sizes)}")
    (n,) = sizes
    pad = (-n) % multiple

    def padded(x):
        if not pad:
            return x
        # Explicitly sharded rows cannot be sliced or extended in place: gather them first.
        x = unshard(x)
        return jnp.concatenate([x, jnp.broadcast_to(x[:1], (pad, *x.shape[1:]))], axis=0)

    return jax.tree.map(padded, tree), n


def data_parallel(
    fn: Callable,
    mesh: Mesh,
    *,
    in_axes: int | None | Sequence[int | None] = 0,
    reduce: Literal["sum", "mean"] | None = None,
    axis_name: str = DATA_AXIS,
) -> Callable:
    """Map a per-sample ``fn`` over the leading axis of its arguments, split across ``mesh``.

    Args:
      fn: a function of one sample (arguments without the batch axis) returning a pytree.
      mesh: the mesh whose ``axis_name`` axis the batch is split along.
      in_axes: ``0`` for arguments with a batch axis, ``None`` for arguments broadcast to every sample
        (parameters), given per positional argument or once for all.
      reduce: ``None`` returns the per-sample outputs stacked in order; ``"sum"`` or ``"mean"`` returns
        their sum or mean over the batch, computed locally and combined with one ``psum``.
      axis_name: the mesh axis to split along.

    Returns:
      A function of the same arguments as ``fn`` with batch axes added; it can be ``jit``-ed and
      differentiated (``grad`` of a ``reduce="mean"`` loss gives the data-parallel gradient).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbayes.parallel import data_mesh
      >>> f = data_parallel(lambda w, x: jnp.dot(w, x), data_mesh(1), in_axes=(None, 0))
      >>> f(jnp.ones(2), jnp.arange(6.0).reshape(3, 2)).tolist()
      [1.0, 5.0, 9.0]
    """
    if reduce is not None:
        check_choice("reduce", reduce, ("sum", "mean"))
    size = mesh.shape[axis_name]

    def wrapped(*args):
        axes = (in_axes,) * len(args) if in_axes is None or isinstance(in_axes, int) else tuple(in_axes)
        if len(axes) != len(args):
            raise ValueError(f"in_axes has {len(axes)} entries but the function got {len(args)} arguments")
        if any(a not in (0, None) for a in axes):
            raise ValueError(f"in_axes entries must be 0 or None, got {axes}")
        mapped = [a for a, ax in zip(args, axes, strict=True) if ax == 0]
        if not mapped:
            raise ValueError("data_parallel needs at least one argument with in_axes=0")
        padded, n = pad_to_multiple(mapped, size)
        weight = jnp.arange(jax.tree.leaves(padded)[0].shape[0]) < n
        it = iter(padded)
        full = [next(it) if ax == 0 else a for a, ax in zip(args, axes, strict=True)]
        specs = tuple(PartitionSpec(axis_name) if ax == 0 else PartitionSpec() for ax in axes)

        def local(w, *local_args):
            out = jax.vmap(fn, in_axes=axes)(*local_args)
            if reduce is None:
                return out
            summed = jax.tree.map(lambda o: jnp.tensordot(w.astype(o.dtype), o, axes=1), out)
            return jax.lax.psum(summed, axis_name)

        out_specs = PartitionSpec(axis_name) if reduce is None else PartitionSpec()
        in_specs = (PartitionSpec(axis_name), *specs)
        # On an Explicit mesh shard_map needs every input's type to carry its in-spec (parameters arrive
        # unsharded, the batch maybe sharded otherwise); on an Auto mesh this is a no-op.
        inputs = reshard_to_specs((weight, *full), mesh, in_specs)
        # check_vma=False: per-sample functions often start loop carries from constants (zeros potentials,
        # iteration counters); with the check on, every such carry would need an explicit pcast.
        out = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)(*inputs)
        if reduce is None:
            if n == jax.tree.leaves(padded)[0].shape[0]:
                return out
            # Explicit shardings cannot drop rows of a sharded axis; gather the (padded) outputs first.
            return jax.tree.map(lambda o: (unshard(o) if is_explicit(mesh) else o)[:n], out)
        return out if reduce == "sum" else jax.tree.map(lambda o: o / n, out)

    return wrapped
