"""Gradient-safe special functions for the closed-form kernel maps: ``safe_sqrt``, ``atan2``, ``safe_arccos``.

``atan2`` is written as vectorised arithmetic (Cephes) because XLA:CPU evaluates ``jnp.arctan2`` through a
scalar libm call; every function has a finite derivative where the textbook one is infinite or NaN.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxbayes.typing import Array, ArrayLike


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
def atan2(y: Array, x: Array) -> Array:
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


@atan2.defjvp
def _atan2_jvp(primals, tangents):
    y, x = primals
    dy, dx = tangents
    r2 = x * x + y * y
    safe = jnp.where(r2 > 0, r2, 1)
    return atan2(y, x), jnp.where(r2 > 0, (x * dy - y * dx) / safe, 0)


def safe_arccos(rho: ArrayLike) -> Array:
    """``arccos`` of ``rho`` clipped to ``[-1, 1]``, written as ``atan2(sqrt(1 - rho^2), rho)``.

    The gradient is finite everywhere (0 at ``|rho| = 1`` instead of infinity), so kernels whose
    diagonal has ``rho = 1`` exactly can be differentiated.
    """
    rho = jnp.clip(jnp.asarray(rho), -1.0, 1.0)
    return atan2(safe_sqrt(1.0 - rho * rho), rho)



__all__ = ["atan2", "safe_arccos", "safe_sqrt"]
