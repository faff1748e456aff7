"""Kernel layers vs closed forms, 2-D Gauss-Hermite quadrature and Monte-Carlo estimates of wide networks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes.kernels import (
    GELU,
    ABReLU,
    Conv,
    Dense,
    Erf,
    Exp,
    FanInSum,
    FanOut,
    Flatten,
    GlobalAvgPool,
    Identity,
    LeakyReLU,
    ReLU,
    Sin,
    monte_carlo_kernel,
    parallel,
    serial,
)


def _quadrature(fn, q1, q2, c, order=80):
    """E[fn(u) fn(v)] for (u, v) ~ N(0, [[q1, c], [c, q2]]) by Gauss-Hermite (independent of the layers)."""
    t, w = np.polynomial.hermite_e.hermegauss(order)
    w = w / w.sum()
    l11 = np.sqrt(q1)
    l21 = c / l11
    l22 = np.sqrt(max(q2 - l21**2, 0.0))
    a, b = np.meshgrid(t, t, indexing="ij")
    u = l11 * a
    v = l21 * a + l22 * b
    return float(np.sum(np.outer(w, w) * fn(u) * fn(v)))


ACTIVATIONS = {
    "relu": (ReLU(), lambda x: np.maximum(x, 0), lambda x: (x > 0).astype(float)),
    "leaky": (LeakyReLU(0.2), lambda x: np.where(x > 0, x, 0.2 * x), lambda x: np.where(x > 0, 1.0, 0.2)),
    "abrelu": (ABReLU(-0.5, 1.5), lambda x: np.where(x > 0, 1.5 * x, -0.5 * x),
               lambda x: np.where(x > 0, 1.5, -0.5)),
    "erf": (Erf(1.3, 0.7, 0.2), None, None),
    "gelu": (GELU(), None, None),
    "sin": (Sin(1.1, 0.8, 0.3), lambda x: 1.1 * np.sin(0.8 * x + 0.3), lambda x: 1.1 * 0.8 * np.cos(0.8 * x + 0.3)),
    "exp": (Exp(0.5, 0.4), lambda x: 0.5 * np.exp(0.4 * x), lambda x: 0.2 * np.exp(0.4 * x)),
}


def _scipy_fns(name):
    from scipy.special import erf
    from scipy.stats import norm

    if name == "erf":
        return (lambda x: 1.3 * erf(0.7 * x) + 0.2,
                lambda x: 1.3 * 0.7 * 2 / np.sqrt(np.pi) * np.exp(-((0.7 * x) ** 2)))
    return (lambda x: x * norm.cdf(x), lambda x: norm.cdf(x) + x * norm.pdf(x))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_kernels_match_quadrature(name, x64):
    layer, fn, dfn = ACTIVATIONS[name]
    if fn is None:
        fn, dfn = _scipy_fns(name)
    # input kernel: two points with q1 = 1.3, q2 = 0.6, c = 0.5 (Dense with W_std = 1 on 2-D inputs)
    x = jnp.array([[1.3, 1.3], [0.7, 0.5]])
    x = x * jnp.sqrt(jnp.array([1.3, 0.6]) * 2 / jnp.sum(x * x, 1))[:, None]
    k = serial(Dense(1, 1.0, 0.0), layer).kernel_fn(x)
    k_in = Dense(1, 1.0, 0.0).kernel_fn(x).nngp
    q1, q2, c = float(k_in[0, 0]), float(k_in[1, 1]), float(k_in[0, 1])
    # Gauss-Hermite converges slowly for kinked functions (piecewise-linear); smooth ones are near exact
    rtol = 2e-3 if name in ("relu", "leaky", "abrelu") else 2e-5
    np.testing.assert_allclose(k.nngp[0, 1], _quadrature(fn, q1, q2, c), rtol=rtol, atol=1e-7)
    np.testing.assert_allclose(k.nngp[0, 0], _quadrature(fn, q1, q1, q1), rtol=rtol, atol=1e-7)
    np.testing.assert_allclose(k.var1[1], _quadrature(fn, q2, q2, q2), rtol=rtol, atol=1e-7)
    # NTK = dot-kernel * input NTK (= k_in for one Dense) for the pair
    dot = _quadrature(dfn, q1, q2, c)
    # derivatives of kinked functions are step functions: quadrature is only accurate to a few percent
    dot_rtol = 5e-2 if name in ("relu", "leaky", "abrelu") else 2e-4
    np.testing.assert_allclose(k.ntk[0, 1], dot * float(k_in[0, 1]), rtol=dot_rtol, atol=1e-6)


def test_arccos_closed_form(x64):
    # Cho & Saul: for unit-variance inputs at angle theta, E[relu relu] = (sin t + (pi - t) cos t) / (2 pi)
    theta = 1.1
    x = jnp.array([[1.0, 0.0], [np.cos(theta), np.sin(theta)]]) * jnp.sqrt(2.0)
    net = serial(Dense(1, 1.0, 0.0), ReLU(), Dense(1, 2.0, 0.3))
    k = net.kernel_fn(x)
    j1 = (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi)
    np.testing.assert_allclose(k.nngp[0, 1], 4.0 * j1 + 0.09, rtol=1e-12)
    # NTK: 4 * (J0 * theta_in + J1) + b^2 with J0 = (pi - t) / (2 pi), theta_in = K_in = cos t
    j0 = (np.pi - theta) / (2 * np.pi)
    np.testing.assert_allclose(k.ntk[0, 1], 4.0 * (j0 * np.cos(theta) + j1) + 0.09, rtol=1e-12)
    np.testing.assert_allclose(k.nngp[0, 0], 4.0 * 0.5 + 0.09, rtol=1e-12)


def test_erf_closed_form(x64):
    x = jnp.array([[0.8, -0.3], [0.2, 1.1]])
    k = serial(Dense(1, 1.0, 0.0), Erf()).kernel_fn(x)
    q = np.asarray(x @ x.T / 2)
    expect = 2 / np.pi * np.arcsin(2 * q[0, 1] / np.sqrt((1 + 2 * q[0, 0]) * (1 + 2 * q[1, 1])))
    np.testing.assert_allclose(k.nngp[0, 1], expect, rtol=1e-12)


def _mc_check(net, x1, x2, key, num_samples, width):
    k = net.kernel_fn(x1, x2)
    mc = monte_carlo_kernel(key, net, x1, x2, num_samples=num_samples, compute_ntk=True)
    # sampling error (5 standard errors) plus the O(1/width) finite-width bias
    scale = float(jnp.max(jnp.abs(k.nngp)))
    tol = 5 * mc.nngp_stderr + 4.0 * scale / width
    assert jnp.all(jnp.abs(k.nngp - mc.nngp) <= tol), (k.nngp, mc.nngp, tol)
    tol_ntk = 5 * mc.ntk_stderr + 4.0 * float(jnp.max(jnp.abs(k.ntk))) / width
    assert jnp.all(jnp.abs(k.ntk - mc.ntk) <= tol_ntk), (k.ntk, mc.ntk, tol_ntk)


def test_deep_mlp_matches_wide_networks(key, x64):
    x = jax.random.normal(key, (4, 3))
    width = 128
    net = serial(Dense(width, 1.5, 0.2), ReLU(), Dense(width, 1.3, 0.1), Erf(), Dense(width, 1.2, 0.1),
                 GELU(), Dense(32, 1.0, 0.1))
    _mc_check(net, x, x[:3] * 0.5, jax.random.key(1), 16, width)


def test_residual_block_matches_wide_networks(key, x64):
    x = jax.random.normal(key, (3, 2))
    width = 128
    block = serial(FanOut(2), parallel(serial(ReLU(), Dense(width, 1.2, 0.1)), Identity()), FanInSum())
    net = serial(Dense(width, 1.0, 0.1), block, ReLU(), Dense(32, 1.0, 0.0))
    _mc_check(net, x, None, jax.random.key(2), 16, width)


@pytest.mark.parametrize("head", ["flatten", "gap"])
def test_cnn_matches_wide_networks(head, key, x64):
    x = jax.random.normal(key, (3, 4, 4, 2))
    width = 32
    pool = Flatten() if head == "flatten" else GlobalAvgPool()
    net = serial(Conv(width, (3, 3), 1.4, 0.1), ReLU(), Conv(width, (2, 2), 1.2, 0.0, "VALID"), ReLU(), pool,
                 Dense(16, 1.0, 0.1))
    k = net.kernel_fn(x, x[:2])
    assert k.nngp.shape == (3, 2)
    _mc_check(net, x, x[:2], jax.random.key(3), 16, width)


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


def test_atan2_matches_numpy(x64):
    from jaxbayes.kernels._layers import _atan2

    rng = np.random.default_rng(2)
    y = rng.normal(size=20000) * 10.0 ** rng.uniform(-6, 6, 20000)
    x = rng.normal(size=20000) * 10.0 ** rng.uniform(-6, 6, 20000)
    y[:6], x[:6] = [0, 0, 1, -1, 1, -1], [0, -1, 0, 0, 1, -1]
    ref = np.arctan2(y, x)
    got = np.asarray(jax.jit(_atan2)(y, x))
    assert np.all(np.abs(got - ref) <= 2 * np.spacing(np.abs(ref)) + 1e-300)
    y32, x32 = y.astype(np.float32), x.astype(np.float32)
    np.testing.assert_allclose(jax.jit(_atan2)(y32, x32), np.arctan2(y32, x32), rtol=1e-6, atol=1e-7)
    # derivative (x dy - y dx) / (x^2 + y^2), and 0 (not NaN) at the origin
    gy, gx = jax.vmap(jax.grad(_atan2, argnums=(0, 1)))(y[6:100], x[6:100])
    r2 = x[6:100] ** 2 + y[6:100] ** 2
    np.testing.assert_allclose(gy, x[6:100] / r2, rtol=1e-14)
    np.testing.assert_allclose(gx, -y[6:100] / r2, rtol=1e-14)
    assert jax.grad(_atan2)(0.0, 0.0) == 0.0


def test_cnn_row_blocks_grad(key, x64):
    # nonlinearities of spatial kernels run in row blocks (lax.map): gradients through them (and through the
    # self-kernel path) match finite differences; vmap of kernel_fn is checked in test_jit_vmap_grad
    def net(w):
        return serial(Conv(1, (2, 2), w, 0.1), ReLU(), Conv(1, (2, 2), 1.2, 0.1), ReLU(), GlobalAvgPool())

    x = jax.random.normal(key, (5, 3, 3, 2))

    @jax.jit
    def loss(w):
        return jnp.sum(net(w).kernel_fn(x).ntk)

    eps = 1e-6
    np.testing.assert_allclose(jax.jit(jax.grad(loss))(1.3), (loss(1.3 + eps) - loss(1.3 - eps)) / (2 * eps),
                               rtol=1e-6)
