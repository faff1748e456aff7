"""The core types of the compositional kernel layers (:class:`Kernel`, :class:`Layer`), input validation,
the kernels of raw inputs and the layout helpers that every layer shares.

Every layer is a :class:`Layer` of four pure functions: ``init_fn(key, input_shape) -> (output_shape,
params)`` and ``apply_fn(params, x)`` define a *finite* random network (NTK parameterisation, weights
``N(0, 1)`` scaled by ``W_std / sqrt(fan_in)``), ``kernel_map(Kernel) -> Kernel`` pushes the infinite-width
kernels through the layer, and ``kernel_fn(x1, x2=None)`` evaluates the whole network's kernels on inputs.
Layers live by kind in ``_linear.py``, ``_elementwise.py`` and ``_combinators.py``; a new layer is one
function returning :func:`make_layer`\\ ``(init_fn, apply_fn, kernel_map)``.

Kernel layout: for inputs with spatial dimensions ``S`` (``()`` for vectors, ``(H, W)`` for NHWC images)
and ``n``/``m`` points, ``nngp`` and ``ntk`` have shape ``(n, m, *S, *S)`` (covariance between position
``i`` of ``x1`` and position ``j`` of ``x2``) and ``var1``/``var2`` hold each point's own spatial covariance
``(n, *S, *S)``. After ``Flatten``/``GlobalAvgPool`` (or for vector inputs) these are ``(n, m)`` and ``(n,)``.

References: Neal (1996); Lee et al., "Deep neural networks as Gaussian processes" (ICLR 2018); Jacot et al.,
"Neural tangent kernel" (NeurIPS 2018); Novak et al., "Neural Tangents" (ICLR 2020).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp

from jaxbayes._checks import check_finite, check_floating
from jaxbayes.parallel import unshard
from jaxbayes.typing import Array, ArrayLike


class Kernel(NamedTuple):
    """Infinite-width kernels of a network between two sets of inputs.

    Attributes:
      nngp: the NNGP kernel ``E[f(x1) f(x2)]`` per output unit, shape ``(n, m, *S, *S)``.
      ntk: the neural tangent kernel ``<df(x1)/dtheta, df(x2)/dtheta>``, same shape.
      var1: each ``x1`` point's own covariance ``(n, *S, *S)`` (needed by the nonlinearities).
      var2: the same for ``x2``; ``None`` when ``x2`` is ``x1``.
    """

    nngp: Array
    ntk: Array
    var1: Array
    var2: Array | None


class DiagonalKernel(Kernel):
    """A :class:`Kernel` that keeps only the spatial diagonal: ``nngp``/``ntk`` ``(n, m, *S)``, ``var1`` ``(n, *S)``.

    Convolutions, dense layers and nonlinearities map the diagonal entries ``K[i, i]`` of a kernel to
    diagonal entries using diagonal entries only (a convolution's filter shifts both positions together), and
    :func:`Flatten` averages the diagonal. A network whose spatial part ends in ``Flatten`` therefore needs
    ``prod(S)`` numbers per pair of points instead of ``prod(S)^2`` (Novak et al., ICLR 2019, section 3.1;
    neural-tangents' ``diagonal_spatial``); ``kernel_fn`` switches to this layout by itself (see
    :attr:`Layer.spatial`). A subclass, so its layout travels with the type through ``jit`` and ``lax.map``.
    """

    __slots__ = ()


class Layer(NamedTuple):
    """A network layer: finite-width ``init_fn``/``apply_fn`` and infinite-width ``kernel_map``/``kernel_fn``.

    Attributes:
      init_fn: ``(key, input_shape) -> (output_shape, params)``; shapes exclude the batch axis.
      apply_fn: ``(params, x) -> y`` on a batch ``x`` of shape ``(batch, *input_shape)``.
      kernel_map: ``Kernel -> Kernel``, the layer's closed-form action on NNGP and NTK.
      kernel_fn: ``(x1, x2=None) -> Kernel`` for the network that starts with this layer.
      spatial: which spatial pairs of its input kernel the layer reads: ``"pointwise"`` (output diagonal
        from input diagonal: dense, convolution, nonlinearities), ``"readout"`` (only the diagonal,
        whatever follows: :func:`Flatten`) or ``"all_pairs"`` (pooling, and any layer that does not say).
        A network whose first non-pointwise layer is a readout computes in the :class:`DiagonalKernel` layout.
    """

    init_fn: Callable
    apply_fn: Callable
    kernel_map: Callable[[Any], Any]
    kernel_fn: Callable[..., Any]
    spatial: str = "all_pairs"


# ----------------------------------------------------------------------------------------------------
# layout helpers


SPATIAL_ACCESS = ("pointwise", "readout", "all_pairs")


def num_spatial(k: Kernel) -> int:
    return k.nngp.ndim - 2 if isinstance(k, DiagonalKernel) else (k.nngp.ndim - 2) // 2


def spatial_diagonal(var: Array, s: int) -> Array:
    """Per-position variances ``(n, *S)`` from a point's spatial covariance ``(n, *S, *S)``."""
    if s == 0:
        return var
    n, spatial = var.shape[0], var.shape[1:1 + s]
    p = math.prod(spatial)
    return jnp.diagonal(var.reshape(n, p, p), axis1=1, axis2=2).reshape(n, *spatial)


def diagonal_pairs(k: Kernel) -> tuple[tuple[Array, Array], tuple[Array, Array], tuple[Array, Array] | None]:
    """Broadcastable (q_a, q_b) diagonal pairs for the cross kernel, var1 and var2 layouts."""
    if isinstance(k, DiagonalKernel):
        d1 = k.var1
        d2 = d1 if k.var2 is None else k.var2
        self2 = None if k.var2 is None else (d2, d2)
        return (d1[:, None], unshard(d2)[None]), (d1, d1), self2
    s = num_spatial(k)
    d1 = spatial_diagonal(k.var1, s)
    d2 = d1 if k.var2 is None else spatial_diagonal(k.var2, s)
    n, m = d1.shape[0], d2.shape[0]
    spatial = d1.shape[1:]
    ones = (1,) * s
    # The column variances pair with every row: whole on each device when the rows are explicitly sharded.
    cross = (d1.reshape(n, 1, *spatial, *ones), unshard(d2).reshape(1, m, *ones, *spatial))
    self1 = (d1.reshape(n, *spatial, *ones), d1.reshape(n, *ones, *spatial))
    self2 = None if k.var2 is None else (d2.reshape(m, *spatial, *ones), d2.reshape(m, *ones, *spatial))
    return cross, self1, self2


# ----------------------------------------------------------------------------------------------------
# kernel_fn construction and input validation


_UNROLL_CHANNELS = 16


def unchecked_input_kernel(x1: Array, x2: Array | None, *, diagonal: bool = False) -> Kernel:
    """Kernels of the inputs themselves: ``x1 . x2 / channels`` per spatial pair; NTK zero.

    With ``diagonal=True`` (spatial inputs) only the pairs at the same position, a :class:`DiagonalKernel`.
    """
    s = x1.ndim - 2
    c = x1.shape[-1]
    if diagonal and s:
        other = unshard(x1 if x2 is None else x2)
        n, m = x1.shape[0], other.shape[0]
        a, b = x1.reshape(n, 1, *x1.shape[1:]), other.reshape(1, m, *other.shape[1:])
        nngp = a[..., 0] * b[..., 0]  # a broadcast product over few channels fuses into one pass
        for z in range(1, c):
            nngp = nngp + a[..., z] * b[..., z]
        nngp = nngp / c
        var2 = None if x2 is None else jnp.mean(jnp.square(x2), axis=-1)
        return DiagonalKernel(nngp, jnp.zeros_like(nngp), jnp.mean(jnp.square(x1), axis=-1), var2)
    letters = "abcdefgh"[:s]
    upper = letters.upper()
    var_spec = f"n{letters}z,n{upper}z->n{letters}{upper}"
    var1 = jnp.einsum(var_spec, x1, x1) / c
    # Every row needs all of the columns: with row-sharded (Explicit) inputs an outer product of two
    # operands sharded on the same axis has no legal sharding, so the column operand goes whole to each
    # device and the result is row-sharded like x1. A no-op for unsharded and Auto-sharded inputs.
    other = unshard(x1 if x2 is None else x2)
    if s and c <= _UNROLL_CHANNELS:
        # Few channels (images): a broadcast product summed over channels is one fused pass that writes the
        # (n, m, *S, *S) layout directly; a dot with a contraction of 3 plus a 6-D transpose is ~20x slower.
        n, m = x1.shape[0], other.shape[0]
        a = x1.reshape(n, 1, *x1.shape[1:-1], *(1,) * s, c)
        b = other.reshape(1, m, *(1,) * s, *other.shape[1:-1], c)
        nngp = a[..., 0] * b[..., 0]
        for z in range(1, c):
            nngp = nngp + a[..., z] * b[..., z]
        nngp = nngp / c
    else:
        nngp = jnp.einsum(f"n{letters}z,m{upper}z->nm{letters}{upper}", x1, other) / c
    var2 = None if x2 is None else jnp.einsum(var_spec, x2, x2) / c
    return Kernel(nngp, jnp.zeros_like(nngp), var1, var2)


def validate_inputs(x1: ArrayLike, x2: ArrayLike | None) -> tuple[Array, Array | None]:
    check_floating("x1", x1)
    x1 = jnp.asarray(x1)
    if x1.ndim < 2:
        raise ValueError(f"x1 must have shape (batch, ..., features) with ndim >= 2, got shape {x1.shape}")
    check_finite("x1", x1)
    if x2 is None:
        return x1, None
    check_floating("x2", x2)
    x2 = jnp.asarray(x2)
    if x2.shape[1:] != x1.shape[1:]:
        raise ValueError(f"x2 must have the same per-point shape as x1 ({x1.shape[1:]}), got {x2.shape[1:]}"
                         " (mismatched feature dimensions)")
    check_finite("x2", x2)
    dtype = jnp.result_type(x1, x2)
    return x1.astype(dtype), x2.astype(dtype)


def make_layer(init_fn: Callable, apply_fn: Callable, kernel_map: Callable, spatial: str = "all_pairs") -> Layer:
    if spatial not in SPATIAL_ACCESS:
        raise ValueError(f"spatial must be one of {SPATIAL_ACCESS}, got {spatial!r}")

    def kernel_fn(x1: ArrayLike, x2: ArrayLike | None = None) -> Kernel:
        """Infinite-width NNGP and NTK kernels between ``x1`` and ``x2`` (``x1`` itself if omitted)."""
        a, b = validate_inputs(x1, x2)
        out = kernel_map(unchecked_input_kernel(a, b, diagonal=spatial == "readout"))
        if not isinstance(out, Kernel):
            raise TypeError("the network ends with several branches; finish it with FanInSum()")
        return out

    return Layer(init_fn, apply_fn, kernel_map, kernel_fn, spatial)


def input_kernel(x1: ArrayLike, x2: ArrayLike | None = None) -> Kernel:
    """The kernels of raw inputs (``x1 . x2 / channels``; NTK zero) after validating them.

    Useful to push a precomputed Gram matrix through :attr:`Layer.kernel_map` (as deep kernel machines do).
    """
    a, b = validate_inputs(x1, x2)
    return unchecked_input_kernel(a, b)


def gram_kernel(gram: ArrayLike, var1: ArrayLike, var2: ArrayLike | None = None) -> Kernel:
    """Wrap a Gram block ``(n, m)`` and the points' own variances into a :class:`Kernel` (NTK zero)."""
    gram = jnp.asarray(gram)
    return Kernel(gram, jnp.zeros_like(gram), jnp.asarray(var1), None if var2 is None else jnp.asarray(var2))



__all__ = [
    "SPATIAL_ACCESS", "DiagonalKernel", "Kernel", "Layer", "diagonal_pairs", "gram_kernel", "input_kernel",
    "make_layer", "num_spatial", "spatial_diagonal", "unchecked_input_kernel", "validate_inputs",
]
