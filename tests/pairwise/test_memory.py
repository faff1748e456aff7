"""Compiled temporary memory (``memory_analysis().temp_size_in_bytes``, per device) of the log-sum-exp
reduction: ``O(n)`` beyond one ``c x c`` tile on one device, never ``O(n m)``; a smaller per-device share of
the ``n``-dependent part on 8 devices; and a gradient in ``O(n + m + c^2)`` (tiles and each row block's
column scan rematerialised), not ``O(n m)``. Only compiled, never run (``n m`` float32
would be 4-8 GiB). Oracle: the byte count of the dense matrix the engine must not form."""

import functools

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxbayes import pairwise as pw

C = 512
F32 = 4


def sq(a, b):
    return jnp.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)


@functools.cache
def temp_bytes(n, m, chunk=C, x_sharding=None, y_sharding=None, grad=False):
    x = jax.ShapeDtypeStruct((n, 3), jnp.float32, sharding=x_sharding)
    y = jax.ShapeDtypeStruct((m, 3), jnp.float32, sharding=y_sharding)
    f = lambda a, b: pw.logsumexp(sq, a, b, eps=0.5, chunk_size=chunk)
    if grad:
        f = jax.grad(lambda a, b: jnp.sum(pw.logsumexp(sq, a, b, eps=0.5, chunk_size=chunk)), argnums=(0, 1))
    return jax.jit(f).lower(x, y).compile().memory_analysis().temp_size_in_bytes


def test_single_device_temp_memory_is_linear_in_n():
    m, n1, n2 = 2**15, 2**15, 2**16
    t1, t2 = temp_bytes(n1, m), temp_bytes(n2, m)
    print(f"single device, m={m}, c={C}: temp {t1} B at n={n1}, {t2} B at n={n2}; "
          f"{(t2 - t1) / (n2 - n1):.1f} B per added row; dense n*m*4 = {n2 * m * F32} B")
    assert t2 < n2 * m * F32 / 1000                 # nothing like the n x m matrix
    assert 0 <= t2 - t1 <= 8 * F32 * (n2 - n1)      # O(n): a few floats of running state per row
    assert t1 <= 4 * C * C * F32 + 8 * F32 * n1     # a few c x c tiles plus that state


@pytest.mark.parametrize("case", ["x", "both"])
def test_sharded_temp_memory_per_device_is_smaller(case):
    """8 devices: x split (y whole on each device) or both split (the ring)."""
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Explicit,))
    rows, whole = NamedSharding(mesh, P("data", None)), NamedSharding(mesh, P())
    m, n1, n2 = 2**15, 2**15, 2**16
    ys = rows if case == "both" else whole
    single = [temp_bytes(n, m) for n in (n1, n2)]
    sharded = [temp_bytes(n, m, x_sharding=rows, y_sharding=ys) for n in (n1, n2)]
    ratio = (sharded[1] - sharded[0]) / (single[1] - single[0])
    print(f"8 devices, {case} split, m={m}, c={C}: per-device temp {sharded} B vs single {single} B at "
          f"n={n1}, {n2}; n-dependent part {sharded[1] - sharded[0]} vs {single[1] - single[0]} B "
          f"(ratio {ratio:.3f}, 1/8 = 0.125)")
    assert sharded[0] < single[0] and sharded[1] < single[1]
    assert ratio <= 0.25


def test_grad_temp_memory_is_linear_not_n_m_over_c():
    """Reverse mode rematerialises each row block's column scan, so it keeps one block's running states
    (``O(m)``) at a time: the ``n``-dependent part is a few floats per row (the saved row-block inputs and the
    cotangents), independent of ``m / c``, and the whole gradient stays below ``(n + m) c`` floats."""
    m, n1, n2 = 2**14, 2**14, 2**15
    for c in (256, 512):
        t1, t2 = temp_bytes(n1, m, chunk=c, grad=True), temp_bytes(n2, m, chunk=c, grad=True)
        slope = (t2 - t1) / (n2 - n1)
        print(f"grad, m={m}, c={c}: temp {t1} B at n={n1}, {t2} B at n={n2}; {slope:.1f} B per added row; "
              f"dense n*m*4 = {n2 * m * F32} B")
        assert slope <= 16 * F32                    # O(1) floats per row, not O(m / c)
        assert t2 <= (n2 + m) * c * F32             # the O((n + m) c) bound
        assert t2 <= 4 * (n2 + m) * 4 * F32 + 8 * c * c * F32  # and in fact O(n + m + c^2)
