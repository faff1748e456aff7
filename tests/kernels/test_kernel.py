"""kernel_fn of composed layers (_kernel.py): jit, vmap, grad, pmap and input validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes.kernels import (
    Conv,
    Dense,
    Erf,
    ReLU,
    serial,
)


def test_jit_vmap_grad(key, x64):
    net = serial(Dense(1, 1.5, 0.1), ReLU(), Dense(1, 1.5, 0.1), Erf(), Dense(1))
    x = jax.random.normal(key, (5, 3))
    ref = net.kernel_fn(x)
    out = jax.jit(net.kernel_fn)(x)
    np.testing.assert_allclose(out.ntk, ref.ntk, rtol=1e-12)
    xs = jax.random.normal(key, (4, 5, 3))
    batched = jax.vmap(lambda a: net.kernel_fn(a).nngp)(xs)
    for i in range(4):
        np.testing.assert_allclose(batched[i], net.kernel_fn(xs[i]).nngp, rtol=1e-12)

    # gradients w.r.t. inputs (including the diagonal, where arccos sits at its boundary) and hyper-parameters
    def loss(x, w):
        k = serial(Dense(1, w, 0.1), ReLU(), Dense(1, w, 0.1), ReLU(), Dense(1)).kernel_fn(x)
        return jnp.sum(k.nngp) + jnp.sum(k.ntk)

    gx, gw = jax.grad(loss, argnums=(0, 1))(x, 1.3)
    assert jnp.all(jnp.isfinite(gx)) and jnp.isfinite(gw)
    eps = 1e-6
    fd = (loss(x, 1.3 + eps) - loss(x, 1.3 - eps)) / (2 * eps)
    np.testing.assert_allclose(gw, fd, rtol=1e-6)
    d = jax.random.normal(jax.random.key(5), x.shape)
    fdx = (loss(x + eps * d, 1.3) - loss(x - eps * d, 1.3)) / (2 * eps)
    np.testing.assert_allclose(jnp.sum(gx * d), fdx, rtol=1e-5)


def test_pmap(key, x64):
    net = serial(Dense(1, 1.5, 0.1), ReLU(), Dense(1))
    xs = jax.random.normal(key, (8, 3, 2))
    out = jax.pmap(lambda a: net.kernel_fn(a).ntk)(xs)
    for i in range(8):  # compiled vs eager evaluation: XLA may fuse/reassociate, so ~1e-9 differences
        np.testing.assert_allclose(out[i], net.kernel_fn(xs[i]).ntk, rtol=1e-8)


def test_bad_inputs():
    net = serial(Dense(1), ReLU(), Dense(1))
    x = jnp.ones((3, 2))
    with pytest.raises(ValueError, match="x1 must be finite"):
        net.kernel_fn(x.at[0, 0].set(jnp.nan))
    with pytest.raises(ValueError, match="x2 must be finite"):
        net.kernel_fn(x, x.at[1, 1].set(jnp.inf))
    with pytest.raises(ValueError, match="mismatched feature dimensions"):
        net.kernel_fn(x, jnp.ones((3, 4)))
    with pytest.raises(ValueError, match="W_std must be finite and > 0"):
        Dense(1, W_std=-1.0)
    with pytest.raises(ValueError, match="b_std must be finite and >= 0"):
        Dense(1, b_std=-0.1)
    with pytest.raises(ValueError, match="ndim >= 2"):
        net.kernel_fn(jnp.ones(3))
    with pytest.raises(TypeError, match="floating"):
        net.kernel_fn(jnp.ones((3, 2), dtype=jnp.int32))
    with pytest.raises(ValueError, match="padding"):
        Conv(2, (3,), padding="FULL")
