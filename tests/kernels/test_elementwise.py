"""Nonlinearity kernels (_elementwise.py) vs closed forms, 2-D Gauss-Hermite quadrature and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes.kernels import (
    GELU,
    ABReLU,
    Abs,
    Conv,
    Cos,
    Dense,
    Erf,
    Exp,
    GlobalAvgPool,
    LeakyReLU,
    Rbf,
    ReLU,
    Sin,
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
    "abs": (Abs(), np.abs, np.sign),
    "cos": (Cos(0.9, 1.2, -0.4), lambda x: 0.9 * np.cos(1.2 * x - 0.4), lambda x: -0.9 * 1.2 * np.sin(1.2 * x - 0.4)),
    "rbf": (Rbf(0.7), lambda x: np.sqrt(2) * np.sin(np.sqrt(1.4) * x + np.pi / 4),
            lambda x: np.sqrt(2) * np.sqrt(1.4) * np.cos(np.sqrt(1.4) * x + np.pi / 4)),
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
    rtol = 2e-3 if name in ("relu", "leaky", "abrelu", "abs") else 2e-5
    np.testing.assert_allclose(k.nngp[0, 1], _quadrature(fn, q1, q2, c), rtol=rtol, atol=1e-7)
    np.testing.assert_allclose(k.nngp[0, 0], _quadrature(fn, q1, q1, q1), rtol=rtol, atol=1e-7)
    np.testing.assert_allclose(k.var1[1], _quadrature(fn, q2, q2, q2), rtol=rtol, atol=1e-7)
    # NTK = dot-kernel * input NTK (= k_in for one Dense) for the pair
    dot = _quadrature(dfn, q1, q2, c)
    # derivatives of kinked functions are step functions: quadrature is only accurate to a few percent
    dot_rtol = 5e-2 if name in ("relu", "leaky", "abrelu", "abs") else 2e-4
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


def test_rbf_layer_is_the_squared_exponential_kernel(x64):
    """After ``Dense(W_std=1)`` on raw d-dimensional inputs, ``Rbf(gamma)``'s NNGP is
    ``exp(-gamma |x - x'|^2 / d)`` exactly (its docstring's claim)."""
    x = jax.random.normal(jax.random.key(0), (6, 3))
    k = serial(Dense(1, 1.0, 0.0), Rbf(0.7)).kernel_fn(x).nngp
    d2 = np.sum((np.asarray(x)[:, None] - np.asarray(x)[None]) ** 2, -1)
    np.testing.assert_allclose(k, np.exp(-0.7 * d2 / 3), rtol=1e-12)
