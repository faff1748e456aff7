"""Pointwise nonlinearities with closed-form NNGP/NTK maps: the ``ABReLU`` family (``ReLU``, ``LeakyReLU``,
``Abs``), ``Erf``, ``Sin`` (``Cos``, ``Rbf``), ``Exp`` and ``GELU``.

A nonlinearity is ``kernels_fn(c, qa, qb) -> (E[phi(u) phi(v)], E[phi'(u) phi'(v)])`` for a centred Gaussian
``(u, v)`` with covariance ``c`` and variances ``qa``, ``qb``; :func:`elementwise` turns it into a layer whose
kernel map runs in row blocks (``lax.map``), which keeps it fast (see :func:`_rowwise`).

References: Cho & Saul (2009) for the arc-cosine kernel; Williams (1997) for the erf kernel; Tsuchida et al.
(arXiv:2002.08517) for GELU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_positive
from jaxbayes.kernels._kernel import Kernel, Layer, diagonal_pairs, make_layer
from jaxbayes.kernels._math import atan2, safe_sqrt
from jaxbayes.parallel import explicit_spec
from jaxbayes.typing import Array, ArrayLike

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
    if any(explicit_spec(a) is not None for a in arrays):
        # lax.map refuses to loop over an explicitly sharded axis; each device already holds only its rows.
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
        cross, self1, self2 = diagonal_pairs(k)
        c = k.nngp
        if k.var2 is None:
            # Self kernel: its diagonal is each point's own covariance. Use var1 there exactly, so that
            # sqrt(q1 q2 - c^2) is exactly 0 instead of sqrt(rounding error) ~ 1e-8 relative.
            # (A mask, not a scatter: a scatter into explicitly sharded rows would be refused.)
            idx = jnp.arange(c.shape[0])
            eye = (idx[:, None] == idx[None, :]).reshape(*c.shape[:2], *(1,) * (c.ndim - 2))
            c = jnp.where(eye, k.var1[:, None], c)
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
        return type(k)(nngp, ntk, var1, var2)

    return kernel_map




def elementwise(fn: Callable, kernels_fn: Callable) -> Layer:
    """The layer ``x -> fn(x)`` (shape-preserving, no parameters) whose kernel map is built from
    ``kernels_fn(c, qa, qb) -> (E[phi phi], E[phi' phi'] or None)``: one new nonlinearity is one call."""
    return make_layer(lambda key, shape: (tuple(shape), {}), lambda params, x: fn(x), _elementwise_map(kernels_fn),
                      "pointwise")


def ABReLU(a: ArrayLike, b: ArrayLike) -> Layer:  # noqa: N802
    """``phi(x) = a min(x, 0) + b max(x, 0)`` with the arc-cosine kernel (Cho & Saul, 2009).

    With ``theta = arccos(c / sqrt(q1 q2))``:
    ``E[phi phi] = ab c + (a - b)^2 / (2 pi) (sqrt(q1 q2 - c^2) + (pi - theta) c)``,
    ``E[phi' phi'] = ab + (a - b)^2 (pi - theta) / (2 pi)``. ``theta`` uses :func:`safe_arccos`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbayes.kernels import Dense, serial
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
        theta = atan2(s, c)  # = arccos(c / sqrt(qa qb)), gradient-safe via safe_sqrt
        factor = jnp.square(a - b) / (2 * jnp.pi)
        nngp = a * b * c + factor * (s + (jnp.pi - theta) * c)
        dot = a * b + factor * (jnp.pi - theta)
        return nngp, dot

    return elementwise(lambda x: a * jnp.minimum(x, 0) + b * jnp.maximum(x, 0), kernels_fn)


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
      >>> from jaxbayes.kernels import Dense, serial
      >>> k = serial(Dense(1), Erf()).kernel_fn(jnp.array([[1.0]]))
      >>> round(float(k.nngp[0, 0]), 6)  # (2/pi) arcsin(2/3)
      0.464559
    """
    b2 = jnp.square(b)

    def kernels_fn(k, qa, qb):
        prod = (1 + 2 * b2 * qa) * (1 + 2 * b2 * qb)
        gap = prod - 4 * jnp.square(b2 * k)
        nngp = jnp.square(a) * (2 / jnp.pi) * atan2(2 * b2 * k, safe_sqrt(gap)) + jnp.square(c)
        dot = jnp.square(a) * b2 * (4 / jnp.pi) / jnp.sqrt(gap)
        return nngp, dot

    return elementwise(lambda x: a * jax.scipy.special.erf(b * x) + c, kernels_fn)


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

    return elementwise(lambda x: a * jnp.sin(b * x + c), kernels_fn)


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

    return elementwise(lambda x: a * jnp.exp(b * x), kernels_fn)


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
        angle = atan2(k, delta)
        return prod, prod1, delta2, delta, angle

    def kernels_fn(k, qa, qb):
        prod, prod1, delta2, delta, angle = parts(k, qa, qb)
        nngp = ((k * k + prod * delta2) / (prod1 * delta) + k * angle) / (2 * jnp.pi) + k / 4
        first = (1 / delta2 + (1 - prod) / prod1 + 1) * k / delta / (2 * jnp.pi)
        return nngp, first + 0.25 + angle / (2 * jnp.pi)

    return elementwise(lambda x: jax.nn.gelu(x, approximate=False), kernels_fn)


__all__ = ["GELU", "ABReLU", "Abs", "Cos", "Erf", "Exp", "LeakyReLU", "Rbf", "ReLU", "Sin", "elementwise"]
