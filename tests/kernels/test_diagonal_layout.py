"""The DiagonalKernel layout: networks whose spatial part ends in Flatten compute only the spatial diagonal.

Oracle: the same network pushed through the full ``(n, m, *S, *S)`` layout (``kernel_map(input_kernel(...))``),
which the neural-tangents comparisons of test_kernel.py and the benchmarks check independently. Both layouts
do the same arithmetic on the diagonal entries, so they agree to float64 rounding.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType

from jaxbayes.kernels import (
    Conv,
    Dense,
    DiagonalKernel,
    Erf,
    Flatten,
    GlobalAvgPool,
    Identity,
    ReLU,
    gram,
    input_kernel,
    serial,
)


def _full_layout(net, x1, x2):
    return net.kernel_map(input_kernel(x1, x2))


NETS = {
    "conv-relu-flatten 2d": lambda: serial(Conv(1, (3, 3), 1.4, 0.1), ReLU(), Conv(1, (3, 3), 1.3, 0.2), ReLU(),
                                           Flatten(), Dense(1, 1.1, 0.3)),
    "valid, erf, nested serial": lambda: serial(serial(Conv(1, (2, 3), 1.2, 0.0, padding="VALID"), Erf()),
                                                Identity(), Conv(1, (3, 3), 1.5, 0.1), Flatten(), ReLU(), Dense(1)),
    "1d": lambda: serial(Conv(1, (4,), 1.3, 0.2), ReLU(), Flatten(), Dense(1)),
}


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("symmetric", [False, True])
def test_flatten_readout_equals_the_full_layout(name, symmetric, x64):
    net = NETS[name]()
    rng = np.random.default_rng(0)
    spatial = (6,) if name == "1d" else (6, 7)
    x1 = rng.normal(size=(5, *spatial, 2))
    x2 = None if symmetric else rng.normal(size=(4, *spatial, 2))
    assert net.spatial == "readout"
    fast, full = net.kernel_fn(x1, x2), _full_layout(net, x1, x2)
    assert type(fast) is type(full)
    for got, want in zip(fast, full, strict=True):
        if want is None:
            assert got is None
            continue
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


def test_spatial_access_of_compositions():
    assert serial(Conv(1), ReLU(), Dense(1)).spatial == "pointwise"  # output keeps all spatial pairs
    assert serial(Conv(1), ReLU(), GlobalAvgPool(), Dense(1)).spatial == "all_pairs"
    assert serial(Conv(1), GlobalAvgPool(), Flatten()).spatial == "all_pairs"
    assert serial(Dense(1), Flatten()).spatial == "readout"
    k = serial(Conv(1), ReLU()).kernel_fn(jnp.ones((2, 3, 3, 1)))
    assert not isinstance(k, DiagonalKernel) and k.nngp.shape == (2, 2, 3, 3, 3, 3)


def test_diagonal_layout_is_refused_where_all_pairs_are_needed():
    x = jnp.ones((2, 3, 3, 1))
    diag = serial(Conv(1), ReLU()).kernel_map(input_kernel(x))
    diag = DiagonalKernel(diag.nngp[:, :, :, :, 0, 0], diag.ntk[:, :, :, :, 0, 0], diag.var1[:, :, :, 0, 0], None)
    with pytest.raises(ValueError, match="GlobalAvgPool needs every spatial pair"):
        GlobalAvgPool().kernel_map(diag)


def test_jit_grad_and_tiled_gram_on_a_mesh(x64):
    net = serial(Conv(1, (3, 3), 1.4, 0.1), ReLU(), Conv(1, (3, 3), 1.4, 0.1), ReLU(), Flatten(), Dense(1, 1.2))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 5, 5, 1))
    full = _full_layout(net, x, None)
    got = jax.jit(net.kernel_fn)(x)
    np.testing.assert_allclose(got.ntk, full.ntk, rtol=1e-13)
    # grad through the diagonal layout = grad through the full layout (a differentiable input scale)
    def loss(scale, layout):
        k = layout(scale * x)
        return jnp.sum(k.nngp) + jnp.sum(k.ntk)

    g_fast = jax.grad(loss)(1.3, net.kernel_fn)
    g_full = jax.grad(loss)(1.3, lambda a: _full_layout(net, a, None))
    np.testing.assert_allclose(g_fast, g_full, rtol=1e-12)
    for axis_type in (AxisType.Explicit, AxisType.Auto):
        mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
        tiled = gram(net.kernel_fn, x, chunk_size=4, mesh=mesh)
        np.testing.assert_allclose(np.asarray(tiled.nngp), full.nngp, rtol=1e-13)
        np.testing.assert_allclose(np.asarray(tiled.ntk), full.ntk, rtol=1e-13)
