"""Sliced W2 against its closed forms: an exact shift, and the direction average |m|^2 / d."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes.ot import sliced_wasserstein


def test_shifted_sample_gives_the_projected_shift_exactly(x64):
    # y = x + m shifts every projected quantile by theta . m, so SW^2 = mean_j (theta_j . m)^2 exactly.
    x = jax.random.normal(jax.random.key(0), (300, 4), jnp.float64)
    m = jnp.array([1.0, -2.0, 0.5, 0.0], jnp.float64)
    key = jax.random.key(3)
    dirs = jax.random.normal(key, (16, 4), jnp.float64)
    dirs = dirs / jnp.linalg.norm(dirs, axis=1, keepdims=True)
    expected = float(jnp.sqrt(jnp.mean((dirs @ m) ** 2)))
    got = float(sliced_wasserstein(key, x, x + m, num_projections=16))
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_many_directions_approach_norm_over_sqrt_d(x64):
    # E_theta (theta . m)^2 = |m|^2 / d for theta uniform on the sphere; the Monte-Carlo mean over
    # P = 20000 directions of (theta . m)^2 has relative standard error sqrt(Var / P) / mean = sqrt(2 (d-1)/(d+2) / P)
    # (about 0.8 % for d = 4); allow 5 standard errors on SW^2, i.e. 2.5 on SW.
    d, p = 4, 20000
    x = jax.random.normal(jax.random.key(1), (64, d), jnp.float64)
    m = jnp.array([3.0, 0.0, 0.0, 4.0], jnp.float64)
    got = float(sliced_wasserstein(jax.random.key(2), x, x + m, num_projections=p))
    rel_se = np.sqrt(2 * (d - 1) / (d + 2) / p)
    np.testing.assert_allclose(got**2, 25.0 / d, rtol=5 * rel_se)


def test_under_jit_and_grad():
    x = jax.random.normal(jax.random.key(0), (50, 2))
    f = jax.jit(lambda s: sliced_wasserstein(jax.random.key(0), x, x + s))
    g = jax.grad(lambda s: f(s) ** 2)(jnp.array([1.0, 0.0]))
    # d/dm mean_j (theta_j . m)^2 = 2 mean_j theta_j theta_j^T m
    dirs = jax.random.normal(jax.random.key(0), (64, 2))
    dirs = dirs / jnp.linalg.norm(dirs, axis=1, keepdims=True)
    np.testing.assert_allclose(g, 2 * (dirs.T @ dirs / 64) @ jnp.array([1.0, 0.0]), rtol=1e-4, atol=1e-5)


def test_bad_input():
    x = jnp.zeros((5, 2))
    with pytest.raises(ValueError, match="same dimension"):
        sliced_wasserstein(jax.random.key(0), x, jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match="non-empty"):
        sliced_wasserstein(jax.random.key(0), x, jnp.zeros((0, 2)))
    with pytest.raises(ValueError, match="num_projections"):
        sliced_wasserstein(jax.random.key(0), x, x, num_projections=0)
