"""Tiled and sharded Gram matrices: the ``(n, m)`` NNGP and NTK computed block by block, optionally on a mesh.

Each entry of a network kernel depends only on its own pair of points (and their own variances), so tiling
does not change the numbers: block ``(I, J)`` of the tiled result is ``kernel_fn(x1[I], x2[J])``. Rows are
split across the ``"data"`` axis of a mesh with ``jax.shard_map``; every device computes its row block
against all of ``x2`` in column tiles of ``chunk_size`` (``lax.map``), bounding memory per device to
``rows_per_device x chunk_size`` kernel entries (times the spatial size for images).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from jaxbayes._checks import check_int_range
from jaxbayes._deprecation import renamed_arguments
from jaxbayes.kernels._kernel import validate_inputs
from jaxbayes.parallel import DATA_AXIS, is_explicit, pad_to_multiple, reshard_to_specs, unshard
from jaxbayes.typing import Array, ArrayLike


class KernelMatrices(NamedTuple):
    """The NNGP and NTK Gram matrices, each ``(n, m)``."""

    nngp: Array
    ntk: Array


def _tiles(x: Array, size: int) -> tuple[Array, int]:
    padded, n = pad_to_multiple(x, size)
    return padded.reshape(-1, size, *x.shape[1:]), n


def _row_block(kernel_fn: Callable, xa: Array, x2: Array, chunk_size: int | None) -> KernelMatrices:
    """Kernels of a row block against all of ``x2`` in column tiles (``lax.map`` over tiles)."""
    if chunk_size is None or chunk_size >= x2.shape[0]:
        k = kernel_fn(xa, x2)
        return KernelMatrices(k.nngp, k.ntk)
    tiles, m = _tiles(x2, chunk_size)

    def one(xb):
        k = kernel_fn(xa, xb)
        return k.nngp, k.ntk

    nngp, ntk = jax.lax.map(one, tiles)  # (tiles, rows, block)

    def merge(a):
        return jnp.moveaxis(a, 0, 1).reshape(xa.shape[0], -1)[:, :m]

    return KernelMatrices(merge(nngp), merge(ntk))


@renamed_arguments(block_size="chunk_size")
def gram(kernel_fn: Callable, x1: ArrayLike, x2: ArrayLike | None = None, *, chunk_size: int | None = 256,
         mesh: Mesh | None = None, axis_name: str = DATA_AXIS) -> KernelMatrices:
    """The ``(n, m)`` NNGP and NTK Gram matrices of ``kernel_fn`` in tiles, optionally split over a mesh.

    Args:
      kernel_fn: ``(x1, x2) -> Kernel`` with vector outputs (e.g. ``serial(...).kernel_fn``).
      x1: inputs ``(n, ...)``.
      x2: inputs ``(m, ...)``; ``x1`` if omitted (the symmetric Gram matrix, whose diagonal is then
        computed from each point's own kernel, exactly as ``kernel_fn(x1)`` does).
      chunk_size: tile edge (rows per tile on each device and columns per tile); ``None`` for no tiling.
      mesh: a mesh whose ``axis_name`` axis splits the rows of ``x1``; the result comes back row-sharded
        over it (``jax.device_get`` or ``np.asarray`` gathers it on the host). ``None``: one device.
      axis_name: the mesh axis to split rows along.

    Returns:
      :class:`KernelMatrices` with ``nngp`` and ``ntk`` of shape ``(n, m)``, equal (to rounding) to
      ``kernel_fn(x1, x2)`` computed in one piece.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbayes.kernels import Dense, ReLU, serial
      >>> from jaxbayes.parallel import data_mesh
      >>> net = serial(Dense(1), ReLU(), Dense(1))
      >>> x = jnp.linspace(-1, 1, 10).reshape(5, 2)
      >>> km = gram(net.kernel_fn, x, chunk_size=2, mesh=data_mesh(1))
      >>> bool(jnp.allclose(km.nngp, net.kernel_fn(x).nngp, atol=1e-6))
      True
    """
    if chunk_size is not None:
        chunk_size = check_int_range("chunk_size", chunk_size, 1)
    x1, x2 = validate_inputs(x1, x2)
    symmetric = x2 is None
    x2 = x1 if x2 is None else x2

    def rows(xa, xb):
        if chunk_size is None or chunk_size >= xa.shape[0]:
            return _row_block(kernel_fn, xa, xb, chunk_size)
        tiles, n_local = _tiles(xa, chunk_size)
        out = jax.lax.map(lambda t: _row_block(kernel_fn, t, xb, chunk_size), tiles)
        return jax.tree.map(lambda a: a.reshape(-1, a.shape[-1])[:n_local], out)

    if mesh is None:
        out = rows(x1, x2)
    else:
        size = mesh.shape[axis_name]
        padded, n = pad_to_multiple(x1, size)
        in_specs = (PartitionSpec(axis_name), PartitionSpec())
        out = jax.shard_map(rows, mesh=mesh, in_specs=in_specs, out_specs=PartitionSpec(axis_name),
                            check_vma=False)(*reshard_to_specs((padded, x2), mesh, in_specs))
        if n != padded.shape[0]:
            # Rows of an explicitly sharded axis cannot be dropped in place; gather the padded result first.
            out = jax.tree.map(lambda a: (unshard(a) if is_explicit(mesh) else a)[:n], out)
    if symmetric:
        # A tile sees x1[I] and x2[J] as different inputs, so a point paired with itself gets
        # sqrt(q^2 - c^2) from rounding (~sqrt(eps) relative). Use each point's exact self kernel instead.
        def own(xi):
            k = kernel_fn(xi[None])
            return k.nngp[0, 0], k.ntk[0, 0]

        # lax.map needs its rows replicated; the diagonal goes in by a mask (a scatter into explicitly
        # sharded rows would be refused), which keeps the result's row sharding.
        dn, dt = jax.lax.map(own, unshard(x1), batch_size=chunk_size)
        idx = jnp.arange(x1.shape[0])
        eye = idx[:, None] == idx[None, :]
        out = KernelMatrices(jnp.where(eye, dn[:, None], out.nngp), jnp.where(eye, dt[:, None], out.ntk))
    return out


__all__ = ["KernelMatrices", "gram"]
