"""The tiles of a resumable Gram matrix: which ``T x T`` blocks a GP needs, computed over the mesh, saved one file each.

Points are ordered training rows first, then test rows, and cut into blocks of ``T`` rows. A GP on the
training rows with predictions at the test rows needs ``K_train,train``, ``K_test,train`` and the diagonal
of ``K_test,test``: the blocks ``(I, J)`` with ``J <= I`` whose column block holds a training row, and the
diagonal blocks ``(I, I)``. A step computes ``tiles_per_step`` of them, spread over every device of every
process (``shard_map``, ``lax.map`` over each device's tiles); process 0 saves each finished tile as
``tiles/<I>_<J>.npy`` (``(2, T, T)``: NNGP and NTK) by an atomic rename, so a killed job loses at most the
tiles of the step it was in. A diagonal tile is computed as the symmetric kernel of its block, so a point
paired with itself gets its exact self kernel, as :func:`jaxbayes.kernels.gram` does.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from jaxbayes import parallel
from jaxbayes.parallel import DATA_AXIS

# Bytes of one kernel array of a tile that the automatic tile size aims at: the layers' temporaries are a
# few times this per device, which stays well inside a CPU host's or an accelerator's memory.
_TILE_BYTES = 2**26


class TilePlan(NamedTuple):
    """The blocks of a Gram computation: ``pairs[k] = (I, J)`` is tile ``k``, rows ``I*T:(I+1)*T`` of the
    points against columns ``J*T:(J+1)*T``."""

    num_points: int
    num_train: int
    size: int
    pairs: np.ndarray

    @property
    def num_blocks(self) -> int:
        return -(-self.num_points // self.size)

    def entries(self) -> int:
        """Kernel entries the tiles compute (each tile counts ``T^2``, padding included)."""
        return len(self.pairs) * self.size**2


def plan_tiles(num_points: int, num_train: int, size: int) -> TilePlan:
    """The tiles a GP on the first ``num_train`` points with predictions at the rest needs (module docstring)."""
    blocks = -(-num_points // size)
    pairs = [(i, j) for i in range(blocks) for j in range(i + 1) if j * size < num_train or i == j]
    return TilePlan(num_points, num_train, size, np.asarray(pairs, np.int32).reshape(-1, 2))


def auto_tile_size(positions: int, itemsize: int) -> int:
    """The largest power of two ``T <= 512`` whose tile holds at most ``_TILE_BYTES`` per kernel array, where one
    entry costs ``positions`` numbers (the spatial diagonal, or all spatial pairs under global pooling)."""
    size = 512
    while size > 1 and size * size * positions * itemsize > _TILE_BYTES:
        size //= 2
    return size


def tile_path(directory: Path, i: int, j: int) -> Path:
    return directory / f"{i}_{j}.npy"


def save_tile(directory: Path, i: int, j: int, tile: np.ndarray) -> None:
    """Write one tile so that a reader sees the whole file or none (a temporary file renamed into place)."""
    directory.mkdir(parents=True, exist_ok=True)
    final = tile_path(directory, i, j)
    partial = final.with_suffix(".partial.npy")
    np.save(partial, tile)
    os.replace(partial, final)


def tile_step_fn(kernel_fn: Callable, size: int, mesh: Mesh, axis_name: str = DATA_AXIS) -> Callable:
    """``(points, pairs) -> (len(pairs), 2, T, T)`` NNGP and NTK tiles; ``points`` (padded to whole blocks)
    replicated, ``pairs`` split over ``axis_name`` (a multiple of its size), the result replicated."""

    def one(points, pair):
        i, j = pair[0], pair[1]
        xa = jax.lax.dynamic_slice_in_dim(points, i * size, size)
        xb = jax.lax.dynamic_slice_in_dim(points, j * size, size)

        def stack(k):
            return jnp.stack([k.nngp, k.ntk])

        return jax.lax.cond(i == j, lambda: stack(kernel_fn(xa)), lambda: stack(kernel_fn(xa, xb)))

    def local(points, pairs):
        return jax.lax.map(lambda pair: one(points, pair), pairs)

    sharded = jax.shard_map(local, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec(axis_name)),
                            out_specs=PartitionSpec(axis_name), check_vma=False)
    return jax.jit(sharded, out_shardings=parallel.replicated_sharding(mesh))


def step_pairs(plan: TilePlan, step: int, tiles_per_step: int, devices: int) -> tuple[np.ndarray, int]:
    """The tiles of ``step``, padded (by repeating its last tile) to ``tiles_per_step`` rounded up to a multiple of
    ``devices`` (one shape for every step: one compilation); and how many are real."""
    chosen = plan.pairs[step * tiles_per_step:(step + 1) * tiles_per_step]
    count = len(chosen)
    padded = math.ceil(tiles_per_step / devices) * devices
    return np.concatenate([chosen, np.repeat(chosen[-1:], padded - count, axis=0)]), count


def assemble(directory: Path, plan: TilePlan, which: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``K_train,train`` ``(n, n)``, ``K_test,train`` ``(t, n)`` and ``diag K_test,test`` ``(t,)`` of kernel
    ``which`` (0: NNGP, 1: NTK) from the saved tiles; a missing tile raises ``FileNotFoundError``."""
    size, n = plan.size, plan.num_train
    full = np.zeros((plan.num_blocks * size, -(-n // size) * size), np.float64)
    diagonal = np.zeros(plan.num_blocks * size, np.float64)
    for i, j in plan.pairs:
        tile = np.load(tile_path(directory, i, j), mmap_mode="r")[which]
        if j * size < n:
            full[i * size:(i + 1) * size, j * size:(j + 1) * size] = tile
        if i == j:
            diagonal[i * size:(i + 1) * size] = np.diagonal(tile)
    k_tt = np.tril(full[:n, :n]) + np.tril(full[:n, :n], -1).T  # only blocks J <= I were computed
    return k_tt, full[n:plan.num_points, :n], diagonal[n:plan.num_points]


__all__ = ["TilePlan", "assemble", "auto_tile_size", "plan_tiles", "save_tile", "step_pairs", "tile_path",
           "tile_step_fn"]
