"""Compositional infinite-width kernel layers (stax style) with closed-form NNGP and NTK maps.

Every layer is a :class:`Layer` of four pure functions: ``init_fn(key, input_shape) -> (output_shape,
params)`` and ``apply_fn(params, x)`` define a *finite* random network (NTK parameterisation, weights
``N(0, 1)`` scaled by ``W_std / sqrt(fan_in)``), ``kernel_map(Kernel) -> Kernel`` pushes the infinite-width
kernels through the layer, and ``kernel_fn(x1, x2=None)`` evaluates the whole network's kernels on inputs.

Kernel layout: for inputs with spatial dimensions ``S`` (``()`` for vectors, ``(H, W)`` for NHWC images)
and ``n``/``m`` points, ``nngp`` and ``ntk`` have shape ``(n, m, *S, *S)`` (covariance between position
``i`` of ``x1`` and position ``j`` of ``x2``) and ``var1``/``var2`` hold each point's own spatial covariance
``(n, *S, *S)``. After ``Flatten``/``GlobalAvgPool`` (or for vector inputs) these are ``(n, m)`` and ``(n,)``.

References: Neal (1996); Lee et al., "Deep neural networks as Gaussian processes" (ICLR 2018); Jacot et al.,
"Neural tangent kernel" (NeurIPS 2018); Novak et al., "Neural Tangents" (ICLR 2020); Cho & Saul (2009)
for the arc-cosine kernel; Williams (1997) for the erf kernel.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_choice, check_finite, check_floating, check_int_range, check_positive
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


class Layer(NamedTuple):
    """A network layer: finite-width ``init_fn``/``apply_fn`` and infinite-width ``kernel_map``/``kernel_fn``.

    Attributes:
      init_fn: ``(key, input_shape) -> (output_shape, params)``; shapes exclude the batch axis.
      apply_fn: ``(params, x) -> y`` on a batch ``x`` of shape ``(batch, *input_shape)``.
      kernel_map: ``Kernel -> Kernel``, the layer's closed-form action on NNGP and NTK.
      kernel_fn: ``(x1, x2=None) -> Kernel`` for the network that starts with this layer.
    """

    init_fn: Callable
    apply_fn: Callable
    kernel_map: Callable[[Any], Any]
    kernel_fn: Callable[..., Any]


# ----------------------------------------------------------------------------------------------------
# gradient-safe helpers


def safe_sqrt(x: ArrayLike) -> Array:
    """``sqrt(max(x, 0))`` with a zero (not infinite/NaN) gradient at and below 0."""
    x = jnp.asarray(x)
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


# Cephes atan (S. L. Moshier): rational approximation on [0, 0.66] plus the (r - 1) / (r + 1) reduction,
# accurate to about one ulp in float64. Written out because XLA:CPU evaluates atan2 through a scalar libm
# call (~50 ns per float64 element, most of a CNN kernel's time); this is a handful of vectorised FMAs.
_ATAN_P = (-8.750608600031904122785e-1, -1.615753718733365076637e1, -7.500855792314704667340e1,
           -1.228866684490136173410e2, -6.485021904942025371773e1)
_ATAN_Q = (2.485846490142306297962e1, 1.650270098316988542046e2, 4.328810604912902668951e2,
           4.853903996359136964868e2, 1.945506571482613964425e2)
_MOREBITS = 6.123233995736765886130e-17  # pi/2 - float64(pi/2)


@jax.custom_jvp
def _atan2(y: Array, x: Array) -> Array:
    """``atan2(y, x)`` (``0`` at the origin) as vectorised arithmetic; derivative ``(x dy - y dx) / r^2``.

    The derivative is 0 at the origin instead of NaN.
    """
    ay, ax = jnp.abs(y), jnp.abs(x)
    steep = ay > ax
    num, den = jnp.where(steep, ax, ay), jnp.where(steep, ay, ax)
    r = num / jnp.where(den > 0, den, 1)  # in [0, 1]
    high = r > 0.66
    t = jnp.where(high, (r - 1) / (r + 1), r)
    z = t * t
    p = (((_ATAN_P[0] * z + _ATAN_P[1]) * z + _ATAN_P[2]) * z + _ATAN_P[3]) * z + _ATAN_P[4]
    q = ((((z + _ATAN_Q[0]) * z + _ATAN_Q[1]) * z + _ATAN_Q[2]) * z + _ATAN_Q[3]) * z + _ATAN_Q[4]
    a = t * (z * p / q) + t
    # (small correction first, then the float64 constant, as Cephes does)
    a = jnp.where(high, (a + 0.5 * _MOREBITS) + math.pi / 4, a)  # atan(r), in [0, pi/4]
    a = jnp.where(steep, (_MOREBITS - a) + math.pi / 2, a)  # angle in the first quadrant
    a = jnp.where(x < 0, (2 * _MOREBITS - a) + math.pi, a)
    return jnp.where(y < 0, -a, a)


@_atan2.defjvp
def _atan2_jvp(primals, tangents):
    y, x = primals
    dy, dx = tangents
    r2 = x * x + y * y
    safe = jnp.where(r2 > 0, r2, 1)
    return _atan2(y, x), jnp.where(r2 > 0, (x * dy - y * dx) / safe, 0)


def safe_arccos(rho: ArrayLike) -> Array:
    """``arccos`` of ``rho`` clipped to ``[-1, 1]``, written as ``atan2(sqrt(1 - rho^2), rho)``.

    The gradient is finite everywhere (0 at ``|rho| = 1`` instead of infinity), so kernels whose
    diagonal has ``rho = 1`` exactly can be differentiated.
    """
    rho = jnp.clip(jnp.asarray(rho), -1.0, 1.0)
    return _atan2(safe_sqrt(1.0 - rho * rho), rho)


# ----------------------------------------------------------------------------------------------------
# layout helpers


def _num_spatial(k: Kernel) -> int:
    return (k.nngp.ndim - 2) // 2


def _diag(var: Array, s: int) -> Array:
    """Per-position variances ``(n, *S)`` from a point's spatial covariance ``(n, *S, *S)``."""
    if s == 0:
        return var
    n, spatial = var.shape[0], var.shape[1:1 + s]
    p = math.prod(spatial)
    return jnp.diagonal(var.reshape(n, p, p), axis1=1, axis2=2).reshape(n, *spatial)


def _pairs(k: Kernel) -> tuple[tuple[Array, Array], tuple[Array, Array], tuple[Array, Array] | None]:
    """Broadcastable (q_a, q_b) diagonal pairs for the cross kernel, var1 and var2 layouts."""
    s = _num_spatial(k)
    d1 = _diag(k.var1, s)
    d2 = d1 if k.var2 is None else _diag(k.var2, s)
    n, m = d1.shape[0], d2.shape[0]
    spatial = d1.shape[1:]
    ones = (1,) * s
    cross = (d1.reshape(n, 1, *spatial, *ones), d2.reshape(1, m, *ones, *spatial))
    self1 = (d1.reshape(n, *spatial, *ones), d1.reshape(n, *ones, *spatial))
    self2 = None if k.var2 is None else (d2.reshape(m, *spatial, *ones), d2.reshape(m, *ones, *spatial))
    return cross, self1, self2


_ROW_BLOCK_ELEMENTS = 2**18


def _rowwise(fn: Callable, *arrays: Array) -> Any:
    """``fn`` applied row by row (``fn`` sees one row of each array, without the row axis; it is elementwise).

    Kernels ``(n, m, ...)`` go in blocks of rows (``lax.map`` with ``batch_size``); per-point variances
    ``(n,)`` in one call. Computing a nonlinearity's outputs in a loop keeps each block's intermediates (which
    XLA:CPU writes out wherever a square root or division feeds several terms) in cache, and materialises the
    outputs: XLA would otherwise fuse the whole map into each of the shifted slices of the next convolution
    (:func:`_conv_pairs`), recomputing it once per filter offset.
    """
    rows = arrays[0].shape[0]
    if arrays[0].ndim <= 1 or rows < 2:  # per-point variances: small; one row: a loop would be removed
        return fn(*arrays)
    # blocks of about _ROW_BLOCK_ELEMENTS entries, and at least two of them
    block = min(max(1, _ROW_BLOCK_ELEMENTS // math.prod(arrays[0].shape[1:])), -(-rows // 2))
    return jax.lax.map(lambda a: fn(*a), arrays, batch_size=block)


def _elementwise_map(kernels_fn: Callable) -> Callable[[Kernel], Kernel]:
    """Kernel map of a pointwise nonlinearity from ``kernels_fn(c, qa, qb) -> (E[phi phi], E[phi' phi'])``.

    ``c`` is the covariance of ``(u, v)`` and ``qa``, ``qb`` their variances. One function returns both
    expectations so that their shared terms (square roots, angles) are computed once per element;
    the second may be ``None`` for a nonlinearity without an NTK.
    """

    def kernel_map(k: Kernel) -> Kernel:
        if isinstance(k, tuple) and not isinstance(k, Kernel):
            raise TypeError("a nonlinearity got a tuple of kernels; combine branches with FanInSum first")
        cross, self1, self2 = _pairs(k)
        c = k.nngp
        if k.var2 is None:
            # Self kernel: its diagonal is each point's own covariance. Use var1 there exactly, so that
            # sqrt(q1 q2 - c^2) is exactly 0 instead of sqrt(rounding error) ~ 1e-8 relative.
            idx = jnp.arange(c.shape[0])
            c = c.at[idx, idx].set(k.var1)
        qb = cross[1][0]  # (m, *1, *S): the same for every row

        def cross_rows(c_rows, ntk_rows, qa_rows):
            nngp, dot = kernels_fn(c_rows, qa_rows, qb)
            if dot is None:
                raise ValueError("this nonlinearity has no NTK (its derivative is not square integrable)")
            return nngp, dot * ntk_rows

        def nngp_only(v, qa, qb):
            return kernels_fn(v, qa, qb)[0]

        nngp, ntk = _rowwise(cross_rows, c, k.ntk, cross[0])
        var1 = _rowwise(nngp_only, k.var1, *self1)
        var2 = None if k.var2 is None else _rowwise(nngp_only, k.var2, *self2)
        return Kernel(nngp, ntk, var1, var2)

    return kernel_map


# ----------------------------------------------------------------------------------------------------
# kernel_fn construction and input validation


_UNROLL_CHANNELS = 16


def _input_kernel(x1: Array, x2: Array | None) -> Kernel:
    """Kernels of the inputs themselves: ``x1 . x2 / channels`` per spatial pair; NTK zero."""
    s = x1.ndim - 2
    c = x1.shape[-1]
    letters = "abcdefgh"[:s]
    upper = letters.upper()
    var_spec = f"n{letters}z,n{upper}z->n{letters}{upper}"
    var1 = jnp.einsum(var_spec, x1, x1) / c
    other = x1 if x2 is None else x2
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


def _validate_inputs(x1: ArrayLike, x2: ArrayLike | None) -> tuple[Array, Array | None]:
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


def _make(init_fn: Callable, apply_fn: Callable, kernel_map: Callable) -> Layer:
    def kernel_fn(x1: ArrayLike, x2: ArrayLike | None = None) -> Kernel:
        """Infinite-width NNGP and NTK kernels between ``x1`` and ``x2`` (``x1`` itself if omitted)."""
        a, b = _validate_inputs(x1, x2)
        out = kernel_map(_input_kernel(a, b))
        if not isinstance(out, Kernel):
            raise TypeError("the network ends with several branches; finish it with FanInSum()")
        return out

    return Layer(init_fn, apply_fn, kernel_map, kernel_fn)


def _check_std(name: str, value: ArrayLike, *, strict: bool) -> None:
    check_positive(name, value, strict=strict)


# ----------------------------------------------------------------------------------------------------
# linear layers


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
        return Kernel(nngp, w2 * k.ntk + nngp, w2 * k.var1 + b2,
                      None if k.var2 is None else w2 * k.var2 + b2)

    return _make(init_fn, apply_fn, kernel_map)


def _conv_pairs(x: Array, batch: int, filter_shape: tuple[int, ...], padding: str) -> Array:
    """Average over filter offsets ``d`` of ``x[..., i + d, j + d]`` (both spatial blocks shifted together).

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
        term = x[(slice(None),) * batch + tuple(src) * 2]
        if any(p != (0, 0) for p in pads):
            term = jnp.pad(term, [(0, 0)] * batch + pads * 2)
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
        if _num_spatial(k) != s:
            raise ValueError(f"Conv with {s} spatial axes got a kernel with {_num_spatial(k)} spatial axes")
        w2, b2 = jnp.square(W_std), jnp.square(b_std)
        nngp = w2 * _conv_pairs(k.nngp, 2, filter_shape, padding) + b2
        # = W_std^2 mean_d Theta + K' by linearity; one stencil pass per output (no shared shifted slices)
        ntk = w2 * _conv_pairs(k.ntk + k.nngp, 2, filter_shape, padding) + b2
        var1 = w2 * _conv_pairs(k.var1, 1, filter_shape, padding) + b2
        var2 = None if k.var2 is None else w2 * _conv_pairs(k.var2, 1, filter_shape, padding) + b2
        return Kernel(nngp, ntk, var1, var2)

    return _make(init_fn, apply_fn, kernel_map)


def Flatten() -> Layer:  # noqa: N802
    """Flatten ``(batch, *S, C)`` to ``(batch, prod(S) * C)``; the kernel averages the spatial diagonal."""

    def init_fn(key, input_shape):
        return (math.prod(input_shape),), {}

    def apply_fn(params, x):
        return x.reshape(x.shape[0], -1)

    def kernel_map(k: Kernel) -> Kernel:
        s = _num_spatial(k)
        if s == 0:
            return k

        def cross(x):
            n, m = x.shape[:2]
            p = math.prod(x.shape[2:2 + s])
            return jnp.mean(jnp.diagonal(x.reshape(n, m, p, p), axis1=2, axis2=3), axis=-1)

        def own(v):
            return None if v is None else jnp.mean(_diag(v, s).reshape(v.shape[0], -1), axis=-1)

        return Kernel(cross(k.nngp), cross(k.ntk), own(k.var1), own(k.var2))

    return _make(init_fn, apply_fn, kernel_map)


def GlobalAvgPool() -> Layer:  # noqa: N802
    """Average over all spatial positions: ``(batch, *S, C) -> (batch, C)``; the kernel averages all pairs."""

    def init_fn(key, input_shape):
        return (input_shape[-1],), {}

    def apply_fn(params, x):
        return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))

    def kernel_map(k: Kernel) -> Kernel:
        s = _num_spatial(k)
        if s == 0:
            return k
        red2 = tuple(range(2, 2 + 2 * s))
        red1 = tuple(range(1, 1 + 2 * s))
        return Kernel(jnp.mean(k.nngp, red2), jnp.mean(k.ntk, red2), jnp.mean(k.var1, red1),
                      None if k.var2 is None else jnp.mean(k.var2, red1))

    return _make(init_fn, apply_fn, kernel_map)


def Identity() -> Layer:  # noqa: N802
    """The identity ``phi(x) = x`` (kernels unchanged)."""
    return _make(lambda key, shape: (tuple(shape), {}), lambda params, x: x, lambda k: k)


# ----------------------------------------------------------------------------------------------------
# nonlinearities


def _elementwise(fn: Callable, kernels_fn: Callable) -> Layer:
    return _make(lambda key, shape: (tuple(shape), {}), lambda params, x: fn(x), _elementwise_map(kernels_fn))


def ABReLU(a: ArrayLike, b: ArrayLike) -> Layer:  # noqa: N802
    """``phi(x) = a min(x, 0) + b max(x, 0)`` with the arc-cosine kernel (Cho & Saul, 2009).

    With ``theta = arccos(c / sqrt(q1 q2))``:
    ``E[phi phi] = ab c + (a - b)^2 / (2 pi) (sqrt(q1 q2 - c^2) + (pi - theta) c)``,
    ``E[phi' phi'] = ab + (a - b)^2 (pi - theta) / (2 pi)``. ``theta`` uses :func:`safe_arccos`.

    Example:
      >>> import jax.numpy as jnp
      >>> k = serial(Dense(1), ReLU()).kernel_fn(jnp.array([[1.0, 0.0], [0.0, 1.0]]))
      >>> round(float(k.nngp[0, 1]), 6)  # orthogonal unit inputs: q = 1/2, c = 0 -> 1/(4 pi)
      0.079577
    """

    def kernels_fn(c, qa, qb):
        # sqrt(qa qb - c^2) as sqrt((r - c)(r + c)), r = sqrt(qa qb): exactly 0 where c is a point's own
        # variance (r = |c| exactly), even when XLA contracts qa qb - c c into a fused multiply-add, whose
        # rounding residue would otherwise give s ~ 1e-8 c and move the angle (and the NTK) by ~1e-9.
        r = jnp.sqrt(qa * qb)
        s = safe_sqrt((r - c) * (r + c))
        theta = _atan2(s, c)  # = arccos(c / sqrt(qa qb)), gradient-safe via safe_sqrt
        factor = jnp.square(a - b) / (2 * jnp.pi)
        nngp = a * b * c + factor * (s + (jnp.pi - theta) * c)
        dot = a * b + factor * (jnp.pi - theta)
        return nngp, dot

    return _elementwise(lambda x: a * jnp.minimum(x, 0) + b * jnp.maximum(x, 0), kernels_fn)


def ReLU() -> Layer:  # noqa: N802
    """``max(x, 0)``: the first-order arc-cosine kernel (see :func:`ABReLU`)."""
    return ABReLU(0.0, 1.0)


def LeakyReLU(alpha: ArrayLike = 0.01) -> Layer:  # noqa: N802
    """``max(x, 0) + alpha min(x, 0)`` (see :func:`ABReLU`)."""
    return ABReLU(alpha, 1.0)


def Abs() -> Layer:  # noqa: N802
    """``|x|`` (see :func:`ABReLU`)."""
    return ABReLU(-1.0, 1.0)


def Erf(a: ArrayLike = 1.0, b: ArrayLike = 1.0, c: ArrayLike = 0.0) -> Layer:  # noqa: N802
    """``phi(x) = a erf(b x) + c`` with Williams' (1997) closed form.

    ``E[phi phi] = a^2 (2/pi) arcsin(2 b^2 k / sqrt((1 + 2 b^2 q1)(1 + 2 b^2 q2))) + c^2`` and
    ``E[phi' phi'] = (4 a^2 b^2 / pi) / sqrt((1 + 2 b^2 q1)(1 + 2 b^2 q2) - 4 b^4 k^2)``.

    Example:
      >>> import jax.numpy as jnp
      >>> k = serial(Dense(1), Erf()).kernel_fn(jnp.array([[1.0]]))
      >>> round(float(k.nngp[0, 0]), 6)  # (2/pi) arcsin(2/3)
      0.464559
    """
    b2 = jnp.square(b)

    def kernels_fn(k, qa, qb):
        prod = (1 + 2 * b2 * qa) * (1 + 2 * b2 * qb)
        gap = prod - 4 * jnp.square(b2 * k)
        nngp = jnp.square(a) * (2 / jnp.pi) * _atan2(2 * b2 * k, safe_sqrt(gap)) + jnp.square(c)
        dot = jnp.square(a) * b2 * (4 / jnp.pi) / jnp.sqrt(gap)
        return nngp, dot

    return _elementwise(lambda x: a * jax.scipy.special.erf(b * x) + c, kernels_fn)


def Sin(a: ArrayLike = 1.0, b: ArrayLike = 1.0, c: ArrayLike = 0.0) -> Layer:  # noqa: N802
    """``phi(x) = a sin(b x + c)``.

    ``E[phi phi] = a^2/2 (e^{-b^2 (q1 + q2 - 2k)/2} - e^{-b^2 (q1 + q2 + 2k)/2} cos 2c)`` and
    ``E[phi' phi'] = a^2 b^2 / 2 (e^{-b^2 (q1 + q2 - 2k)/2} + e^{-b^2 (q1 + q2 + 2k)/2} cos 2c)``.
    """
    b2 = jnp.square(b)

    def parts(k, qa, qb):
        return jnp.exp(-b2 * ((qa + qb) / 2 - k)), jnp.exp(-b2 * ((qa + qb) / 2 + k)) * jnp.cos(2 * c)

    def kernels_fn(k, qa, qb):
        s1, s2 = parts(k, qa, qb)
        return jnp.square(a) / 2 * (s1 - s2), jnp.square(a) * b2 / 2 * (s1 + s2)

    return _elementwise(lambda x: a * jnp.sin(b * x + c), kernels_fn)


def Cos(a: ArrayLike = 1.0, b: ArrayLike = 1.0, c: ArrayLike = 0.0) -> Layer:  # noqa: N802
    """``phi(x) = a cos(b x + c) = a sin(b x + c + pi/2)`` (see :func:`Sin`)."""
    return Sin(a, b, jnp.asarray(c) + jnp.pi / 2)


def Rbf(gamma: ArrayLike = 1.0) -> Layer:  # noqa: N802
    """``phi(x) = sqrt(2) sin(sqrt(2 gamma) x + pi/4)``, whose NNGP is ``exp(-gamma (q1 + q2 - 2k))``.

    After ``Dense(W_std=1)`` on raw inputs this is the squared-exponential kernel
    ``exp(-gamma |x - x'|^2 / d)``.
    """
    check_positive("gamma", gamma)
    return Sin(jnp.sqrt(2.0), jnp.sqrt(2 * jnp.asarray(gamma)), jnp.pi / 4)


def Exp(a: ArrayLike = 1.0, b: ArrayLike = 1.0) -> Layer:  # noqa: N802
    """``phi(x) = a exp(b x)``: ``E[phi phi] = a^2 exp(b^2 (q1 + q2 + 2k) / 2)``."""
    b2 = jnp.square(b)

    def kernels_fn(k, qa, qb):
        nngp = jnp.square(a) * jnp.exp(b2 * ((qa + qb) / 2 + k))
        return nngp, b2 * nngp

    return _elementwise(lambda x: a * jnp.exp(b * x), kernels_fn)


def GELU() -> Layer:  # noqa: N802
    """``phi(x) = x Phi(x)`` (exact GELU) with the closed form of Tsuchida et al. (arXiv:2002.08517).

    With ``P = q1 q2``, ``Q = (q1 + 1)(q2 + 1)``, ``D = Q - k^2`` and ``A = atan2(k, sqrt(D))``:
    ``E[phi phi] = k/4 + ((k^2 + P D) / (Q sqrt(D)) + k A) / (2 pi)`` and
    ``E[phi' phi'] = 1/4 + A / (2 pi) + k (1/D + (1 - P)/Q + 1) / (2 pi sqrt(D))``.
    Both are checked against 2-D Gauss-Hermite quadrature in the tests.
    """

    def parts(k, qa, qb):
        prod = qa * qb
        prod1 = (qa + 1) * (qb + 1)
        delta2 = prod1 - k * k
        delta = safe_sqrt(delta2)
        angle = _atan2(k, delta)
        return prod, prod1, delta2, delta, angle

    def kernels_fn(k, qa, qb):
        prod, prod1, delta2, delta, angle = parts(k, qa, qb)
        nngp = ((k * k + prod * delta2) / (prod1 * delta) + k * angle) / (2 * jnp.pi) + k / 4
        first = (1 / delta2 + (1 - prod) / prod1 + 1) * k / delta / (2 * jnp.pi)
        return nngp, first + 0.25 + angle / (2 * jnp.pi)

    return _elementwise(lambda x: jax.nn.gelu(x, approximate=False), kernels_fn)


# ----------------------------------------------------------------------------------------------------
# combinators


def serial(*layers: Layer) -> Layer:
    """Compose layers left to right (``serial(Dense(), ReLU(), Dense())``).

    Example:
      >>> import jax.numpy as jnp
      >>> net = serial(Dense(512, W_std=1.5, b_std=0.1), ReLU(), Dense(1, W_std=1.5))
      >>> net.kernel_fn(jnp.ones((3, 2)), jnp.zeros((4, 2))).ntk.shape
      (3, 4)
    """
    if not layers:
        raise ValueError("serial needs at least one layer")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"layers[{i}] must be a Layer, got {type(layer).__name__}")

    def init_fn(key, input_shape):
        params = []
        for i, layer in enumerate(layers):
            input_shape, p = layer.init_fn(jax.random.fold_in(key, i), input_shape)
            params.append(p)
        return input_shape, params

    def apply_fn(params, x):
        for layer, p in zip(layers, params, strict=True):
            x = layer.apply_fn(p, x)
        return x

    def kernel_map(k):
        for layer in layers:
            k = layer.kernel_map(k)
        return k

    return _make(init_fn, apply_fn, kernel_map)


def parallel(*layers: Layer) -> Layer:
    """Apply ``layers[i]`` to the ``i``-th branch of a tuple input (use with :func:`FanOut`/:func:`FanInSum`).

    Example (a residual block):
      >>> import jax.numpy as jnp
      >>> block = serial(FanOut(2), parallel(serial(ReLU(), Dense(8)), Identity()), FanInSum())
      >>> serial(Dense(8), block).kernel_fn(jnp.ones((2, 3))).nngp.shape
      (2, 2)
    """
    if not layers:
        raise ValueError("parallel needs at least one layer")

    def check(t):
        if not isinstance(t, tuple) or isinstance(t, Kernel) or len(t) != len(layers):
            raise ValueError(f"parallel of {len(layers)} layers needs a tuple of {len(layers)} branches")

    def init_fn(key, input_shapes):
        check(tuple(input_shapes) if isinstance(input_shapes, list) else input_shapes)
        outs = [layer.init_fn(jax.random.fold_in(key, i), s)
                for i, (layer, s) in enumerate(zip(layers, input_shapes, strict=True))]
        return tuple(o[0] for o in outs), [o[1] for o in outs]

    def apply_fn(params, xs):
        check(tuple(xs))
        return tuple(layer.apply_fn(p, x) for layer, p, x in zip(layers, params, xs, strict=True))

    def kernel_map(ks):
        check(ks)
        return tuple(layer.kernel_map(k) for layer, k in zip(layers, ks, strict=True))

    return _make(init_fn, apply_fn, kernel_map)


def FanOut(num: int) -> Layer:  # noqa: N802
    """Copy the input into a tuple of ``num`` branches."""
    num = check_int_range("num", num, 1)
    return _make(lambda key, shape: ((tuple(shape),) * num, {}), lambda params, x: (x,) * num,
                 lambda k: (k,) * num)


def FanInSum() -> Layer:  # noqa: N802
    """Sum a tuple of branches. Branches with independent weights have additive kernels (Novak et al.)."""

    def init_fn(key, input_shapes):
        shapes = {tuple(s) for s in input_shapes}
        if len(shapes) != 1:
            raise ValueError(f"FanInSum needs branches of one shape, got {sorted(shapes)}")
        return shapes.pop(), {}

    def apply_fn(params, xs):
        return sum(xs[1:], xs[0])

    def kernel_map(ks):
        if isinstance(ks, Kernel) or not isinstance(ks, tuple):
            raise ValueError("FanInSum needs a tuple of branches (use FanOut and parallel before it)")
        total = ks[0]
        for k in ks[1:]:
            total = Kernel(total.nngp + k.nngp, total.ntk + k.ntk, total.var1 + k.var1,
                           None if total.var2 is None else total.var2 + k.var2)
        return total

    return _make(init_fn, apply_fn, kernel_map)


def input_kernel(x1: ArrayLike, x2: ArrayLike | None = None) -> Kernel:
    """The kernels of raw inputs (``x1 . x2 / channels``; NTK zero) after validating them.

    Useful to push a precomputed Gram matrix through :attr:`Layer.kernel_map` (as deep kernel machines do).
    """
    a, b = _validate_inputs(x1, x2)
    return _input_kernel(a, b)


def gram_kernel(gram: ArrayLike, var1: ArrayLike, var2: ArrayLike | None = None) -> Kernel:
    """Wrap a Gram block ``(n, m)`` and the points' own variances into a :class:`Kernel` (NTK zero)."""
    gram = jnp.asarray(gram)
    return Kernel(gram, jnp.zeros_like(gram), jnp.asarray(var1), None if var2 is None else jnp.asarray(var2))


__all__ = [
    "ABReLU", "Abs", "Conv", "Cos", "Dense", "Erf", "Exp", "FanInSum", "FanOut", "Flatten", "GELU",
    "GlobalAvgPool", "Identity", "Kernel", "Layer", "LeakyReLU", "ReLU", "Rbf", "Sin", "gram_kernel",
    "input_kernel", "parallel", "safe_arccos", "safe_sqrt", "serial",
]
