"""Laplace curvature (GGN, empirical Fisher) and Fisher merging against closed forms."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes import vi


def test_laplace_ggn_matches_closed_forms(x64, key):
    # softmax regression: diag GGN of W_jc = sum_n x_nj^2 p_nc (1 - p_nc); bias: sum_n p_nc (1 - p_nc)
    module = nn.Dense(3)
    x = jax.random.normal(key, (40, 4))
    params = module.init(jax.random.key(1), x[:1])["params"]
    params = jax.tree.map(lambda p: p + 0.3, params)
    apply = lambda p, xi: module.apply({"params": p}, xi[None])[0]
    fisher = vi.diagonal_fisher(apply, params, x, batch_size=8)
    p = jax.nn.softmax(x @ params["kernel"] + params["bias"])
    np.testing.assert_allclose(fisher["kernel"], (x**2).T @ (p * (1 - p)), rtol=1e-5)  # flax params are f32
    np.testing.assert_allclose(fisher["bias"], jnp.sum(p * (1 - p), 0), rtol=1e-5)
    # empirical Fisher: sum_n x_nj^2 (onehot - p)^2
    y = jax.random.randint(key, (40,), 0, 3)
    emp = vi.diagonal_fisher(apply, params, x, y, kind="empirical")
    r = jax.nn.one_hot(y, 3) - p
    np.testing.assert_allclose(emp["kernel"], (x**2).T @ r**2, rtol=1e-5)
    # Gaussian linear model: Laplace == exact diagonal of the posterior precision (X^T X / s^2 + a I)
    lin = nn.Dense(1)
    lp = lin.init(key, x[:1])["params"]
    q = vi.laplace(lambda pp, xi: lin.apply({"params": pp}, xi[None])[0, 0], lp, x, likelihood="gaussian",
                   noise_scale=0.5, prior_precision=2.0)
    np.testing.assert_allclose(jnp.exp(-2 * q.log_scale["kernel"][:, 0]), jnp.sum(x**2, 0) / 0.25 + 2.0, rtol=1e-5)
    assert isinstance(q, vi.MeanFieldNormal)
    with pytest.raises(ValueError, match="empirical"):
        vi.diagonal_fisher(apply, params, x, kind="empirical")


def test_fisher_merge_is_precision_weighted_average(x64, key):
    # Merging two diagonal Gaussians with Fisher = precision gives the product-of-Gaussians mean.
    m1, m2 = {"w": jnp.array([0.0, 1.0, 2.0])}, {"w": jnp.array([2.0, 1.0, -2.0])}
    f1, f2 = {"w": jnp.array([1.0, 2.0, 3.0])}, {"w": jnp.array([3.0, 2.0, 1.0])}
    merged = vi.fisher_merge([m1, m2], [f1, f2], epsilon=0.0)
    np.testing.assert_allclose(merged["w"], (f1["w"] * m1["w"] + f2["w"] * m2["w"]) / (f1["w"] + f2["w"]))
    np.testing.assert_allclose(vi.fisher_merge([m1, m2], [f1, f1], epsilon=0.0)["w"], [1.0, 1.0, 0.0])
    w = vi.fisher_merge([m1, m2], [f1, f2], weights=[3.0, 1.0], epsilon=0.0)["w"]
    np.testing.assert_allclose(w, (3 * f1["w"] * m1["w"] + f2["w"] * m2["w"]) / (3 * f1["w"] + f2["w"]))
    zero = {"w": jnp.zeros(3)}
    np.testing.assert_allclose(vi.fisher_merge([m1, m2], [zero, zero])["w"], [1.0, 1.0, 0.0])  # eps fallback
    with pytest.raises(ValueError, match="equal length"):
        vi.fisher_merge([m1, m2], [f1])
    with pytest.raises(ValueError, match="structure"):
        vi.fisher_merge([m1, {"v": jnp.ones(3)}], [f1, f2])


def test_laplace_categorical_default_equals_numpy_diagonal_ggn(x64, key):
    """Oracle: the diagonal of sum_n J_n^T (diag(p_n) - p_n p_n^T) J_n + prior precision, computed in numpy
    from the logits' Jacobian J_n (d logits / d theta, not the library's log-softmax route) of a two-layer
    tanh MLP, at the default prior precision 1 and default kind/batching."""

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(nn.tanh(nn.Dense(5)(x)))

    module = Net()
    x = jax.random.normal(key, (30, 4), jnp.float64)
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64),
                          module.init(jax.random.key(7), x[:1])["params"])
    apply = lambda p, xi: module.apply({"params": p}, xi[None])[0]
    q = vi.laplace(apply, params, x, likelihood="categorical")
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    jac = np.asarray(jax.vmap(jax.jacfwd(lambda t, xi: apply(unravel(t), xi)), (None, 0))(flat, x))  # (n, C, P)
    logits = np.asarray(jax.vmap(lambda xi: apply(params, xi))(x))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    ggn = np.zeros((flat.size, flat.size))
    for jn, pn in zip(jac, p, strict=True):
        ggn += jn.T @ (np.diag(pn) - np.outer(pn, pn)) @ jn
    precision = np.diag(ggn) + 1.0
    got = np.exp(-2.0 * np.asarray(jax.flatten_util.ravel_pytree(q.log_scale)[0]))
    np.testing.assert_allclose(got, precision, rtol=1e-10)
    np.testing.assert_array_equal(jax.flatten_util.ravel_pytree(q.mean)[0], flat)
    # the oracle is sensitive: dropping the -p p^T term (the Hessian's off-diagonal part) is detected
    wrong = np.diag(sum(jn.T @ np.diag(pn) @ jn for jn, pn in zip(jac, p, strict=True))) + 1.0
    assert np.max(np.abs(got / wrong - 1.0)) > 1e-2
