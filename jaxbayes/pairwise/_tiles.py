"""The tile loop on one device: rows of ``x`` in blocks of ``chunk_size`` (``lax.map``), and for each block the
columns of ``y`` in blocks of ``chunk_size`` (``lax.scan``), so only one ``chunk_size x chunk_size`` tile of the
pairwise matrix exists at a time.

In reverse mode each tile and each row block's column scan are rematerialised (``jax.checkpoint``), so a
gradient keeps the row blocks' inputs and one block's running reductions at a time, never a tile's
``chunk_size^2`` entries beyond the one in flight: memory ``O(n + m + chunk_size^2)`` on one device (the
backward pass evaluates every tile twice more).
Padded rows repeat the first row and are dropped; padded columns repeat the first column and are masked
(``mask`` is ``False`` there), which each tile function applies (e.g. ``-inf`` in a log-sum-exp).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxbayes.pairwise._monoids import is_acc
from jaxbayes.typing import Array, PyTree


def blocks(tree: PyTree, size: int, block: int) -> PyTree:
    """Pad every leaf's leading axis (``size``) to a multiple of ``block`` with its first row and reshape to
    ``(num_blocks, block, ...)``."""
    pad = (-size) % block

    def one(v):
        if pad:
            v = jnp.concatenate([v, jnp.broadcast_to(v[:1], (pad, *v.shape[1:]))])
        return v.reshape((size + pad) // block, block, *v.shape[1:])

    return jax.tree.map(one, tree)


def unblock(tree: PyTree, size: int) -> PyTree:
    return jax.tree.map(lambda v: v.reshape(-1, *v.shape[2:])[:size], tree)


def tile_output_shapes(tile_fn: Callable, params: Any, x: Array, y: Array, row_args: PyTree,
                       col_args: PyTree) -> PyTree:
    """Per-row output structure of ``tile_fn`` (``ShapeDtypeStruct`` leaves without the row axis)."""
    first = lambda t: jax.tree.map(lambda v: jax.ShapeDtypeStruct((1, *v.shape[1:]), v.dtype), t)  # noqa: E731
    bare = lambda t: jax.tree.map(lambda v: jax.ShapeDtypeStruct(jnp.shape(v), jnp.result_type(v)), t)  # noqa: E731
    out = jax.eval_shape(tile_fn, bare(params), first(x), first(y), first(row_args), first(col_args),
                         jax.ShapeDtypeStruct((1,), bool))
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), out)


def init_state(monoid, shapes: PyTree, n: int) -> PyTree:
    return jax.tree.map(lambda s: monoid.init((n, *s.shape), s.dtype), shapes)


def _varying(v: Any) -> frozenset:
    """The manual mesh axes ``v`` varies over inside a ``shard_map`` (empty elsewhere and without the check)."""
    try:
        aval = jax.typeof(v)
    except TypeError:
        return frozenset()
    mat = getattr(aval, "manual_axis_type", None)
    return frozenset(getattr(mat, "varying", None) or getattr(aval, "vma", None) or ())


def _vary_like(state: PyTree, operands: PyTree) -> PyTree:
    """``state`` (constants) marked as varying over the manual axes the operands vary over, so the tile loop's
    carry keeps its type inside a caller's ``shard_map`` (``check_vma=True``); a no-op elsewhere."""
    axes = frozenset().union(*(_varying(v) for v in jax.tree.leaves(operands)))
    if not axes:
        return state

    def cast(v):
        missing = tuple(sorted(axes - _varying(v)))
        return jax.lax.pcast(v, missing, to="varying") if missing else v

    return jax.tree.map(cast, state)


def local_reduce(tile_fn: Callable, monoid, params: Any, x: Array, y: Array, row_args: PyTree,
                 col_args: PyTree, state: PyTree, chunk_size: int | None) -> PyTree:
    """Add every tile of ``(x, y)`` into the per-row monoid ``state`` (leaves ``(n, ...)`` monoid states)."""
    n, m = x.shape[0], y.shape[0]
    k = n if chunk_size is None else min(chunk_size, n)
    l = m if chunk_size is None else min(chunk_size, m)  # noqa: E741
    treedef = jax.tree.structure(state, is_leaf=is_acc)
    state = _vary_like(state, (params, x, y, row_args, col_args))
    xb, rb, sb = blocks((x, row_args, state), n, k)
    yb, cb = blocks((y, col_args), m, l)
    maskb = blocks(jnp.ones((m,), bool), m, l)
    if m % l:
        maskb = maskb.at[-1, l - (-m) % l:].set(False)
    tile = jax.checkpoint(tile_fn)

    def rows(args):
        xt, rt, st = args

        def cols(s, cargs):
            yt, ct, mt = cargs
            out = tile(params, xt, yt, rt, ct, mt)
            leaves = treedef.flatten_up_to(out)
            states = treedef.flatten_up_to(s)
            return treedef.unflatten([monoid.add(a, v) for a, v in zip(states, leaves, strict=True)]), None

        st, _ = jax.lax.scan(cols, st, (yb, cb, maskb))
        return st

    # rows is rematerialised too: reverse mode then keeps one row block's column-scan carries at a time
    # (O(m)), not every block's (O(n m / chunk_size)), at the price of one more forward pass of the tiles
    return unblock(jax.lax.map(jax.checkpoint(rows), (xb, rb, sb)), n)


def finish_state(monoid, state: PyTree) -> PyTree:
    return jax.tree.map(monoid.finish, state, is_leaf=is_acc)
