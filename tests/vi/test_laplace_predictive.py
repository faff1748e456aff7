"""Predictives: probit vs MC vs Gauss-Hermite quadrature of the same integral; Gaussian closed form."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes import vi
from tests.vi.test_laplace_oracles import linear_data

S = 20000  # MC draws; the tolerance 5 sqrt(q (1 - q) / S) bounds 5 standard errors of a mean of values in [0, 1]


def linear(w, xi):
    return xi @ w


def sigmoid_gauss(mean, var):
    """E[sigmoid(f)], f ~ N(mean, var), by 200-point Gauss-Hermite quadrature."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)
    f = mean[:, None] + np.sqrt(var)[:, None] * nodes
    return (1 / (1 + np.exp(-f))) @ weights / np.sqrt(2 * np.pi)


def test_binary_probit_and_mc_agree(x64, key):
    rng = np.random.default_rng(0)
    x = np.c_[rng.normal(size=(12, 2)), np.ones(12)]
    y = (x[:, 0] + 0.5 * rng.normal(size=12) > 0).astype(float)
    post = vi.laplace_posterior(linear, jnp.zeros(3), x, y, likelihood="bernoulli", tol=1e-10)
    xt = np.c_[np.linspace(-3, 3, 7)[:, None] * np.array([1.0, -0.5]), np.ones(7)]
    mean, cov = vi.glm_predictive_moments(post, xt)
    np.testing.assert_allclose(cov[:, 0, 0], np.einsum("nd,de,ne->n", xt, post.covariance(), xt), rtol=1e-12)
    np.testing.assert_allclose(mean[:, 0], xt @ post.mean, rtol=1e-12)
    quad = sigmoid_gauss(np.asarray(mean[:, 0]), np.asarray(cov[:, 0, 0]))
    tol = 5 * np.sqrt(quad * (1 - quad) / S)
    k1, k2 = jax.random.split(key)
    mc_nn = vi.laplace_predictive(post, xt, pred_type="nn", link="mc", num_samples=S, key=k1)
    mc_glm = jax.jit(functools.partial(vi.laplace_predictive, pred_type="glm", link="mc", num_samples=S))(
        post, xt, key=k2)
    probit = jax.jit(vi.laplace_predictive)(post, xt)
    assert probit.shape == mc_nn.shape == (7,)
    assert np.all(np.abs(mc_nn - quad) <= tol) and np.all(np.abs(mc_glm - quad) <= tol)
    # MacKay's approximation itself: measured max gap 0.0105 to the integral here (variances 0.35 to 8.3); bound 0.02
    assert np.all(np.abs(probit - quad) <= 0.02)
    assert np.all(np.abs(probit - mc_nn) <= tol + 0.02)
    # the predictive is less confident than the plug-in MAP
    plug_in = 1 / (1 + np.exp(-xt @ post.mean))
    assert np.all(np.abs(probit - 0.5) <= np.abs(plug_in - 0.5) + 1e-12)


def test_multiclass_probit_and_mc(x64, key):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 2))
    y = np.argmax(x @ rng.normal(size=(2, 3)) + rng.normal(size=(20, 3)), -1)
    apply = lambda p, xi: xi @ p["w"] + p["b"]
    params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
    post = vi.laplace_posterior(apply, params, x, y, likelihood="categorical", tol=1e-9)
    xt = rng.normal(size=(6, 2)) * 2
    k1, k2 = jax.random.split(key)
    mc_nn = vi.laplace_predictive(post, xt, pred_type="nn", link="mc", num_samples=S, key=k1)
    mc_glm = vi.laplace_predictive(post, xt, link="mc", num_samples=S, key=k2)
    probit = vi.laplace_predictive(post, xt)
    assert probit.shape == (6, 3)
    np.testing.assert_allclose(probit.sum(-1), 1.0, rtol=1e-12)
    # a linear model: nn and glm predictives are the same integral (two independent MC estimates)
    assert np.all(np.abs(mc_nn - mc_glm) <= 5 * np.sqrt(2 * mc_glm * (1 - mc_glm) / S))
    # the generalised probit (mean-field softmax) approximation: measured max gap 0.012 here; bound 0.05
    assert np.max(np.abs(probit - mc_glm)) <= 0.05


def test_gaussian_predictive_closed_form(x64, key):
    x, y = linear_data()
    post = vi.laplace_posterior(linear, jnp.zeros(4), x, y, likelihood="gaussian", noise_scale=0.5,
                                prior_precision=2.0, tol=1e-12)
    xt = x[:5] + 1.0
    mean, var = vi.laplace_predictive(post, xt)
    cov = np.linalg.inv(x.T @ x / 0.25 + 2 * np.eye(4))
    w = cov @ x.T @ y / 0.25
    np.testing.assert_allclose(mean[:, 0], xt @ w, atol=1e-10)
    np.testing.assert_allclose(var[:, 0], np.einsum("nd,de,ne->n", xt, cov, xt) + 0.25, atol=1e-10)
    m_nn, v_nn = vi.laplace_predictive(post, xt, pred_type="nn", link="mc", num_samples=S, key=key)
    np.testing.assert_allclose(m_nn, mean, atol=5 * np.sqrt(np.max(var) / S))
    np.testing.assert_allclose(v_nn, var, rtol=5 * np.sqrt(2 / S))
    with pytest.raises(ValueError, match="glm"):
        vi.laplace_predictive(post, xt, pred_type="nn")
    with pytest.raises(ValueError, match="key"):
        vi.laplace_predictive(post, xt, pred_type="nn", link="mc")
