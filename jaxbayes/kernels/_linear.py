"""Linear layers: :func:`Dense`, :func:`Conv`, :func:`Flatten`, :func:`GlobalAvgPool`, :func:`Identity`.

Their kernel maps are affine in the kernels: ``K' = W_std^2 A(K) + b_std^2`` and
``Theta' = W_std^2 A(Theta) + K'`` with ``A`` the identity (Dense), the diagonal-filter stencil (Conv) or a
spatial average (Flatten, GlobalAvgPool); see Novak et al., "Bayesian deep convolutional networks with many
channels are Gaussian processes" (ICLR 2019) and "Neural Tangents" (ICLR 2020).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_choice, check_int_range, check_positive
from jaxbayes.kernels._kernel import DiagonalKernel, Kernel, Layer, make_layer, num_spatial, spatial_diagonal
from jaxbayes.typing import Array, ArrayLike


def _check_std(name: str, value: ArrayLike, *, strict: bool) -> None:
    check_positive(name, value, strict=strict)



def Dense(out_dim: int = 512, W_std: ArrayLike = 1.0, b_std: ArrayLike = 0.0) -> Layer:  # noqa: N802, N803
    """Fully connected layer ``y = W_std / sqrt(fan_in) * W x + b_std * b`` with ``W, b ~ N(0, 1)``.

    Acts on the last (channel) axis. Kernel map (NTK parameterisation):
    ``K' = W_std^2 K + b_std^2`` and ``Theta' = W_std^2 Theta + K'``.

    Args:
      out_dim: width of the finite network (the kernel does not depend on it).
      W_std: weight standard deviation (> 0).
      b_std: bias standard deviation (>= 0).

    Example:
      >>> import jax.numpy as jnp
      >>> k = Dense(1, W_std=2.0, b_std=0.5).kernel_fn(jnp.array([[1.0, 1.0]]))
      >>> float(k.nngp[0, 0]), float(k.ntk[0, 0])
      (4.25, 4.25)
    """
    out_dim = check_int_range("out_dim", out_dim, 1)
    _check_std("W_std", W_std, strict=True)
    _check_std("b_std", b_std, strict=False)

    def init_fn(key, input_shape):
        kw, kb = jax.random.split(key)
        shape = (*input_shape[:-1], out_dim)
        return shape, {"W": jax.random.normal(kw, (input_shape[-1], out_dim)),
                       "b": jax.random.normal(kb, (out_dim,))}

    def apply_fn(params, x):
        w = params["W"]
        return W_std / jnp.sqrt(w.shape[0]) * (x @ w) + b_std * params["b"]

    def kernel_map(k: Kernel) -> Kernel:
        w2, b2 = jnp.square(W_std), jnp.square(b_std)
        nngp = w2 * k.nngp + b2
        return type(k)(nngp, w2 * k.ntk + nngp, w2 * k.var1 + b2,
                       None if k.var2 is None else w2 * k.var2 + b2)

    return make_layer(init_fn, apply_fn, kernel_map, "pointwise")


def _conv_pairs(x: Array, batch: int, filter_shape: tuple[int, ...], padding: str, blocks: int = 2) -> Array:
    """Average over filter offsets ``d`` of ``x[..., i + d, j + d]`` (both spatial blocks shifted together);
    with ``blocks=1`` of ``x[..., i + d]`` (the :class:`DiagonalKernel` layout, one block of positions).

    The same sum as neural-tangents' convolution of the covariance with a diagonal filter (Novak et al.,
    2019), written as ``prod(filter_shape)`` shifted slices, each zero-padded to the output shape, which XLA
    fuses into one pass over ``x``. That pass is cheap only when ``x`` is already in memory: the
    nonlinearities therefore compute their outputs in row blocks (:func:`_rowwise`), which XLA cannot fuse
    into (and recompute in) every shifted slice.
    """
    s = len(filter_shape)
    spatial = x.shape[batch:batch + s]
    if padding == "SAME":
        lo = [(f - 1) // 2 for f in filter_shape]
        out = spatial
    else:
        lo = [0] * s
        out = tuple(h - f + 1 for h, f in zip(spatial, filter_shape, strict=True))
    total = None
    for offset in itertools.product(*(range(f) for f in filter_shape)):
        src, pads = [], []
        for d, h, o, low in zip(offset, spatial, out, lo, strict=True):
            start = d - low  # output position i reads input i + start
            first, last = max(start, 0), min(start + o, h)  # input rows that land inside the output
            src.append(slice(first, last))
            pads.append((first - start, start + o - last))
        term = x[(slice(None),) * batch + tuple(src) * blocks]
        if any(p != (0, 0) for p in pads):
            term = jnp.pad(term, [(0, 0)] * batch + pads * blocks)
        total = term if total is None else total + term
    return total / math.prod(filter_shape)


def Conv(out_chan: int = 64, filter_shape: Sequence[int] = (3, 3), W_std: ArrayLike = 1.0,  # noqa: N802, N803
         b_std: ArrayLike = 0.0, padding: str = "SAME") -> Layer:
    """Stride-1 convolution over channels-last inputs ``(batch, *S, C)`` with ``len(filter_shape)`` axes.

    Finite network: ``y = W_std / sqrt(prod(filter_shape) * C) * (W * x) + b_std * b``. Kernel map:
    ``K'[i, j] = W_std^2 mean_d K[i + d, j + d] + b_std^2`` over filter offsets ``d`` (zero padding for
    ``"SAME"``), ``Theta' = W_std^2 mean_d Theta[i + d, j + d] + K'`` (Novak et al., ICLR 2019).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbayes.kernels import serial
      >>> net = serial(Conv(4, (3,)), Flatten(), Dense(1))
      >>> net.kernel_fn(jnp.ones((2, 5, 1))).nngp.shape
      (2, 2)
    """
    out_chan = check_int_range("out_chan", out_chan, 1)
    filter_shape = tuple(int(f) for f in filter_shape)
    if not filter_shape or any(f < 1 for f in filter_shape):
        raise ValueError(f"filter_shape must be a non-empty tuple of positive ints, got {filter_shape}")
    check_choice("padding", padding, ("SAME", "VALID"))
    _check_std("W_std", W_std, strict=True)
    _check_std("b_std", b_std, strict=False)
    s = len(filter_shape)
    letters = "DHW"[-s:] if s <= 3 else None
    if letters is None:
        raise ValueError(f"Conv supports 1 to 3 spatial dimensions, got filter_shape {filter_shape}")
    dims = (f"N{letters}C", f"{letters}IO", f"N{letters}C")

    def init_fn(key, input_shape):
        if len(input_shape) != s + 1:
            raise ValueError(f"Conv with filter_shape {filter_shape} needs inputs (batch, *{s} spatial, C), "
                             f"got per-point shape {tuple(input_shape)}")
        kw, kb = jax.random.split(key)
        spatial = input_shape[:-1]
        if padding == "VALID":
            spatial = tuple(h - f + 1 for h, f in zip(spatial, filter_shape, strict=True))
        w = jax.random.normal(kw, (*filter_shape, input_shape[-1], out_chan))
        return (*spatial, out_chan), {"W": w, "b": jax.random.normal(kb, (out_chan,))}

    def apply_fn(params, x):
        w = params["W"]
        fan_in = math.prod(w.shape[:-1])
        y = jax.lax.conv_general_dilated(x, w.astype(x.dtype), (1,) * s, padding, dimension_numbers=dims)
        return W_std / jnp.sqrt(fan_in) * y + b_std * params["b"]

    def kernel_map(k: Kernel) -> Kernel:
        if num_spatial(k) != s:
            raise ValueError(f"Conv with {s} spatial axes got a kernel with {num_spatial(k)} spatial axes")
        w2, b2 = jnp.square(W_std), jnp.square(b_std)
        blocks = 1 if isinstance(k, DiagonalKernel) else 2

        def stencil(x, batch):
            return w2 * _conv_pairs(x, batch, filter_shape, padding, blocks) + b2

        # ntk = W_std^2 mean_d Theta + K' by linearity; one stencil pass per output (no shared shifted slices)
        var2 = None if k.var2 is None else stencil(k.var2, 1)
        return type(k)(stencil(k.nngp, 2), stencil(k.ntk + k.nngp, 2), stencil(k.var1, 1), var2)

    return make_layer(init_fn, apply_fn, kernel_map, "pointwise")


def Flatten() -> Layer:  # noqa: N802
    """Flatten ``(batch, *S, C)`` to ``(batch, prod(S) * C)``; the kernel averages the spatial diagonal.

    It reads only the diagonal, so a network whose spatial layers before it are all pointwise (convolutions,
    nonlinearities) computes in the :class:`DiagonalKernel` layout: ``prod(S)`` numbers per pair of points,
    not ``prod(S)^2``.
    """

    def init_fn(key, input_shape):
        return (math.prod(input_shape),), {}

    def apply_fn(params, x):
        return x.reshape(x.shape[0], -1)

    def kernel_map(k: Kernel) -> Kernel:
        s = num_spatial(k)
        if s == 0:
            return k
        if isinstance(k, DiagonalKernel):
            def mean(x, batch):
                return None if x is None else jnp.mean(x.reshape(*x.shape[:batch], -1), axis=-1)

            return Kernel(mean(k.nngp, 2), mean(k.ntk, 2), mean(k.var1, 1), mean(k.var2, 1))

        def cross(x):
            n, m = x.shape[:2]
            p = math.prod(x.shape[2:2 + s])
            return jnp.mean(jnp.diagonal(x.reshape(n, m, p, p), axis1=2, axis2=3), axis=-1)

        def own(v):
            return None if v is None else jnp.mean(spatial_diagonal(v, s).reshape(v.shape[0], -1), axis=-1)

        return Kernel(cross(k.nngp), cross(k.ntk), own(k.var1), own(k.var2))

    return make_layer(init_fn, apply_fn, kernel_map, "readout")


def GlobalAvgPool() -> Layer:  # noqa: N802
    """Average over all spatial positions: ``(batch, *S, C) -> (batch, C)``; the kernel averages all pairs."""

    def init_fn(key, input_shape):
        return (input_shape[-1],), {}

    def apply_fn(params, x):
        return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))

    def kernel_map(k: Kernel) -> Kernel:
        s = num_spatial(k)
        if s == 0:
            return k
        if isinstance(k, DiagonalKernel):
            raise ValueError("GlobalAvgPool needs every spatial pair of its input kernel, got a DiagonalKernel")
        red2 = tuple(range(2, 2 + 2 * s))
        red1 = tuple(range(1, 1 + 2 * s))
        return Kernel(jnp.mean(k.nngp, red2), jnp.mean(k.ntk, red2), jnp.mean(k.var1, red1),
                      None if k.var2 is None else jnp.mean(k.var2, red1))

    return make_layer(init_fn, apply_fn, kernel_map)


def Identity() -> Layer:  # noqa: N802
    """The identity ``phi(x) = x`` (kernels unchanged)."""
    return make_layer(lambda key, shape: (tuple(shape), {}), lambda params, x: x, lambda k: k, "pointwise")


__all__ = ["Conv", "Dense", "Flatten", "GlobalAvgPool", "Identity"]
