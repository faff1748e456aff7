"""Composed networks (serial, parallel, FanOut, FanInSum) vs Monte-Carlo estimates of wide networks."""

import jax
import jax.numpy as jnp
import pytest

from jaxbayes.kernels import (
    GELU,
    Conv,
    Dense,
    Erf,
    FanInSum,
    FanOut,
    Flatten,
    GlobalAvgPool,
    Identity,
    ReLU,
    monte_carlo_kernel,
    parallel,
    serial,
)


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
