"""Linear layers (_linear.py): the convolution kernel map vs explicit loops and closed forms."""

import jax
import numpy as np
import pytest

from jaxbayes.kernels import (
    Conv,
)


def _conv_pairs_loops(x, filter_shape, padding):
    """Oracle for the conv kernel map: explicit loops over output pairs and filter offsets, zero outside."""
    s = len(filter_shape)
    spatial = x.shape[2:2 + s]
    lo = [(f - 1) // 2 if padding == "SAME" else 0 for f in filter_shape]
    out = spatial if padding == "SAME" else tuple(h - f + 1 for h, f in zip(spatial, filter_shape, strict=True))
    res = np.zeros(x.shape[:2] + out + out)
    for i in np.ndindex(*out):
        for j in np.ndindex(*out):
            for d in np.ndindex(*filter_shape):
                a = tuple(i[k] + d[k] - lo[k] for k in range(s))
                b = tuple(j[k] + d[k] - lo[k] for k in range(s))
                if all(0 <= a[k] < spatial[k] and 0 <= b[k] < spatial[k] for k in range(s)):
                    res[(slice(None), slice(None), *i, *j)] += x[(slice(None), slice(None), *a, *b)]
    return res / np.prod(filter_shape)


@pytest.mark.parametrize(("filter_shape", "padding"), [((3, 3), "SAME"), ((2, 3), "SAME"), ((4,), "SAME"),
                                                       ((2, 2), "VALID"), ((3,), "VALID")])
def test_conv_kernel_map_matches_loops(filter_shape, padding, x64):
    # the conv map is linear in the kernel: any arrays will do, no need for a covariance
    rng = np.random.default_rng(0)
    spatial = (4, 3)[:len(filter_shape)]
    shape = (3, 2, *spatial, *spatial)
    nngp, ntk = rng.normal(size=shape), rng.normal(size=shape)
    var1, var2 = rng.normal(size=(3, *spatial, *spatial)), rng.normal(size=(2, *spatial, *spatial))
    from jaxbayes.kernels import Kernel

    w, b = 1.3, 0.4
    k = jax.jit(Conv(1, filter_shape, w, b, padding).kernel_map)(Kernel(nngp, ntk, var1, var2))
    expect = w**2 * _conv_pairs_loops(nngp, filter_shape, padding) + b**2
    np.testing.assert_allclose(k.nngp, expect, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(k.ntk, w**2 * _conv_pairs_loops(ntk, filter_shape, padding) + expect,
                               rtol=1e-12, atol=1e-12)
    v1 = _conv_pairs_loops(var1[:, None], filter_shape, padding)[:, 0]
    np.testing.assert_allclose(k.var1, w**2 * v1 + b**2, rtol=1e-12, atol=1e-12)


def test_conv_input_kernel_closed_form(x64):
    # one conv on raw inputs: K[i, j] = W^2 / F sum_d x1[i + d] . x2[j + d] / C + b^2 (zero padding)
    rng = np.random.default_rng(1)
    x1, x2 = rng.normal(size=(2, 3, 4, 3)), rng.normal(size=(3, 3, 4, 3))
    k = jax.jit(Conv(1, (3, 3), 1.2, 0.3).kernel_fn)(x1, x2)
    dots = np.einsum("nabz,mABz->nmabAB", x1, x2) / 3
    np.testing.assert_allclose(k.nngp, 1.44 * _conv_pairs_loops(dots, (3, 3), "SAME") + 0.09, rtol=1e-12, atol=1e-14)
