"""How partial reductions of tiles combine: compensated sums and compensated log-sum-exps.

A float32 running sum over ``T`` tiles loses about ``T`` ulps; Kahan's compensation keeps the combined error
at a few ulps independent of ``T`` (Higham, *Accuracy and Stability of Numerical Algorithms*, 4.3), which is
what makes a reduction over ``10^6`` points agree with float64 to float32 rounding. The log-sum-exp state is
``(M, S, c)``: the running maximum, the compensated sum of ``exp(v - M)`` and its compensation, rescaled when
the maximum moves, so no tile can overflow and none is lost to cancellation.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbayes.typing import Array


class Acc(NamedTuple):
    """A monoid's running state for one output leaf (its own type, so pytrees of states stay unambiguous)."""

    parts: tuple


def is_acc(v) -> bool:
    return isinstance(v, Acc)


def _kahan_add(s: Array, c: Array, v: Array) -> tuple[Array, Array]:
    y = v - c
    t = s + y
    return t, (t - s) - y


class Sum:
    """Compensated sum: state ``(s, c)``; ``finish`` gives ``s``; across devices a ``psum`` of ``s - c``."""

    name = "sum"

    @staticmethod
    def init(shape, dtype):
        return Acc((jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)))

    @staticmethod
    def add(state, v):
        return Acc(_kahan_add(*state.parts, v))

    @staticmethod
    def finish(state):
        s, c = state.parts
        return s - c

    @staticmethod
    def all_reduce(v, axis):
        return jax.lax.psum(v, axis)


class LogSumExp:
    """Compensated log-sum-exp: state ``(M, S, c)`` with ``value = M + log(S - c)``."""

    name = "logsumexp"

    @staticmethod
    def init(shape, dtype):
        return Acc((jnp.full(shape, -jnp.inf, dtype), jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)))

    @staticmethod
    def add(state, v):
        m, s, c = state.parts
        m_new = jnp.maximum(m, v)
        finite = jnp.isfinite(m_new)
        safe = jnp.where(finite, m_new, 0.0)
        scale = jnp.where(finite, jnp.exp(m - safe), 0.0)
        term = jnp.where(finite, jnp.exp(v - safe), 0.0)
        s, c = _kahan_add(s * scale, c * scale, term)
        return Acc((m_new, s, c))

    @staticmethod
    def finish(state):
        m, s, c = state.parts
        total = s - c
        return jnp.where(total > 0, jnp.where(jnp.isfinite(m), m, 0.0) + jnp.log(jnp.where(total > 0, total, 1.0)),
                         -jnp.inf)

    @staticmethod
    def all_reduce(v, axis):
        m = jax.lax.pmax(jax.lax.stop_gradient(v), axis)
        safe = jnp.where(jnp.isfinite(m), m, 0.0)
        total = jax.lax.psum(jnp.exp(v - safe), axis)
        return jnp.where(total > 0, safe + jnp.log(jnp.where(total > 0, total, 1.0)), -jnp.inf)


MONOIDS = {"sum": Sum, "logsumexp": LogSumExp}


def as_monoid(combine: str):
    if combine not in MONOIDS:
        raise ValueError(f"combine must be one of {sorted(MONOIDS)}, got {combine!r}")
    return MONOIDS[combine]
