"""One pairwise reduction over two point sets, on one device or sharded over a mesh.

``reduce(tile_fn, x, y, ...)`` computes, for every row ``i`` of ``x``, the combination (sum or log-sum-exp)
over all rows ``j`` of ``y`` of ``tile_fn``'s per-tile partial results, without forming the ``n x m``
matrix. On a mesh (:mod:`jaxbayes.pairwise._placement`) each device reduces its own block of ``x`` against
``y``, and the blocks of ``y`` meet it by the cheapest collective:

* ``y`` replicated: no communication;
* ``y`` split along another mesh axis than ``x``: a local reduction, then one ``psum`` (sums) or a
  ``pmax`` + ``psum`` log-sum-exp combine across that axis;
* ``y`` split along the same axis as ``x``: a ring (``ppermute``): ``D - 1`` steps that pass each device's
  block of ``y`` (and its column arguments) to its neighbour while the running reduction stays put, so no
  device ever holds more than one block of each point set (the pattern of ring attention).

The result follows ``x``'s sharding; it is the same on any mesh up to float rounding (the order in which
blocks are added changes with the device count; both combines are compensated, so the difference stays at a
few ulps of the result).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from jaxbayes._checks import check_int_range
from jaxbayes.pairwise._monoids import as_monoid
from jaxbayes.pairwise._placement import Placement, placement_of
from jaxbayes.pairwise._tiles import finish_state, init_state, local_reduce, tile_output_shapes
from jaxbayes.typing import Array, PyTree

TileFn = Callable[[Any, Array, Array, PyTree, PyTree, Array], PyTree]


def reduce(tile_fn: TileFn, x: Array, y: Array, row_args: PyTree = None, col_args: PyTree = None, *,
           params: Any = None, combine: str = "sum", chunk_size: int | None = None) -> PyTree:
    r"""Row-wise reduction over all pairs ``(x_i, y_j)`` computed tile by tile (see the module docstring).

    Args:
      tile_fn: ``tile_fn(params, x_tile (k, d), y_tile (l, d), row_args_tile, col_args_tile, mask (l,))``
        returning a pytree of per-row partial results ``(k, ...)`` over the tile's ``l`` columns; ``mask`` is
        ``False`` on padded columns, which must not contribute (``-inf`` for a log-sum-exp, ``0`` for a sum).
      x, y: point sets ``(n, d)``, ``(m, d')``, each on one device or split along a mesh axis.
      row_args, col_args: pytrees of arrays with leading size ``n`` / ``m`` (placed like ``x`` / ``y``).
      params: a pytree every tile sees whole (replicated): kernel hyper-parameters, ``epsilon``.
      combine: ``"sum"`` (compensated) or ``"logsumexp"`` (compensated, overflow-free).
      chunk_size: tile side; ``None`` makes one tile of each device's whole block.

    Returns:
      The pytree of ``tile_fn``'s outputs with leading size ``n``, combined over all of ``y``.

    Example:
      >>> import jax.numpy as jnp
      >>> def sq_dist_sum(p, xt, yt, rt, ct, mask):
      ...     d = jnp.sum((xt[:, None] - yt[None]) ** 2, -1)
      ...     return jnp.sum(jnp.where(mask, d, 0.0), axis=1)
      >>> reduce(sq_dist_sum, jnp.zeros((3, 1)), jnp.arange(5.0)[:, None], chunk_size=2).tolist()
      [30.0, 30.0, 30.0]
    """
    monoid = as_monoid(combine)
    if chunk_size is not None:
        check_int_range("chunk_size", chunk_size, 1)
    x, y = jnp.asarray(x), jnp.asarray(y)
    placement = placement_of(x, y)
    shapes = tile_output_shapes(tile_fn, params, x, y, row_args, col_args)
    if placement.is_local:
        state = init_state(monoid, shapes, x.shape[0])
        return finish_state(monoid, local_reduce(tile_fn, monoid, params, x, y, row_args, col_args, state,
                                                 chunk_size))
    return _sharded(tile_fn, monoid, placement, params, x, y, row_args, col_args, shapes, chunk_size)


def _sharded(tile_fn, monoid, placement: Placement, params, x, y, row_args, col_args, shapes, chunk_size):
    xa, ya = placement.x_axis, placement.y_axis
    for name, v, axis in (("x", x, xa), ("y", y, ya)):
        if v.shape[0] % placement.size(axis):
            raise ValueError(f"{name} has {v.shape[0]} points, not a multiple of the {placement.size(axis)} "
                             f"devices of mesh axis {axis!r}; pad it (with zero weights) to a multiple")
    if xa is not None and ya is not None and xa != ya and set(_names(xa)) & set(_names(ya)):
        raise ValueError(f"x and y are split along overlapping mesh axes {xa!r} and {ya!r}")
    place_x = lambda t: jax.tree.map(lambda v: placement.place(jnp.asarray(v), xa), t)  # noqa: E731
    place_y = lambda t: jax.tree.map(lambda v: placement.place(jnp.asarray(v), ya), t)  # noqa: E731
    x, row_args = place_x((x, row_args))
    y, col_args = place_y((y, col_args))
    params = jax.tree.map(lambda v: placement.place(jnp.asarray(v), None) if jnp.ndim(v) else v, params)
    spec = lambda axis, t: jax.tree.map(lambda v: placement.spec(axis, jnp.ndim(v)) if jnp.ndim(v) else  # noqa: E731
                                        PartitionSpec(), t)
    ring = xa is not None and xa == ya

    def body(params, x, y, row_args, col_args):
        state = init_state(monoid, shapes, x.shape[0])
        state = local_reduce(tile_fn, monoid, params, x, y, row_args, col_args, state, chunk_size)
        if ring:
            size = placement.size(xa)
            perm = [(i, (i + 1) % size) for i in range(size)]

            def step(carry, _):
                state, y_block, col_block = carry
                y_block, col_block = jax.lax.ppermute((y_block, col_block), xa, perm)
                state = local_reduce(tile_fn, monoid, params, x, y_block, row_args, col_block, state,
                                     chunk_size)
                return (state, y_block, col_block), None

            (state, _, _), _ = jax.lax.scan(step, (state, y, col_args), None, length=size - 1)
        out = finish_state(monoid, state)
        if ya is not None and not ring:
            out = jax.tree.map(lambda v: monoid.all_reduce(v, ya), out)
        return out

    out_specs = jax.tree.map(lambda s: placement.spec(xa, 1 + len(s.shape)), shapes)
    # check_vma=False: the monoid states start from constants (zeros, -inf) that the tile loop then fills
    # with device-varying values; with the check on, every such carry would need an explicit pcast.
    return jax.shard_map(body, mesh=placement.mesh,
                         in_specs=(spec(None, params), spec(xa, x), spec(ya, y), spec(xa, row_args),
                                   spec(ya, col_args)),
                         out_specs=out_specs, check_vma=False)(params, x, y, row_args, col_args)


def _names(axis) -> tuple:
    return axis if isinstance(axis, tuple) else (axis,)
