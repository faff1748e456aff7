"""jaxbayes._implicit against closed forms: the fixed point of x = A x + b has dx/db = (I - A)^{-1}."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxbayes._implicit import LinearSolve, implicit_vjp, root_solve


def _contraction(n=6, seed=0):
    m = np.random.default_rng(seed).normal(size=(n, n))
    s = (m + m.T) / 2
    return jnp.asarray(0.8 * s / np.abs(np.linalg.eigvalsh(s)).max(), jnp.float32)  # symmetric, |A| < 1


def test_implicit_vjp_is_the_inverse_of_i_minus_a():
    a_mat = _contraction()
    b = jnp.arange(6.0)
    x = jnp.linalg.solve(jnp.eye(6) - a_mat, b)
    v = jnp.ones(6)
    got = implicit_vjp(lambda bb, xx: xx - a_mat @ xx - bb, b, x, v, LinearSolve(ridge=0.0, tol=1e-7))
    want = np.linalg.solve(np.eye(6) - np.asarray(a_mat, np.float64), np.ones(6))
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_root_solve_differentiates_a_fixed_point_iteration():
    a_mat = _contraction(seed=1)

    def iterate(config, theta, x0):
        a_, b_ = theta
        return jax.lax.fori_loop(0, 300, lambda i, x: a_ @ x + b_, x0), jnp.asarray(300)

    solve = root_solve(iterate, lambda c: (lambda th, x: x - th[0] @ x - th[1]),
                       lambda c: LinearSolve(ridge=0.0, tol=1e-7))
    b = jnp.linspace(-1.0, 1.0, 6)
    w = jnp.arange(1.0, 7.0)
    grad_b, grad_a = jax.grad(lambda b_, a_: jnp.dot(w, solve(None, (a_, b_), jnp.zeros(6))[0]),
                              argnums=(0, 1))(b, a_mat)
    inv_t_w = np.linalg.solve((np.eye(6) - np.asarray(a_mat, np.float64)).T, np.asarray(w, np.float64))
    x = np.linalg.solve(np.eye(6) - np.asarray(a_mat, np.float64), np.asarray(b, np.float64))
    np.testing.assert_allclose(grad_b, inv_t_w, rtol=1e-4)
    np.testing.assert_allclose(grad_a, np.outer(inv_t_w, x), rtol=1e-4, atol=1e-5)


def test_projection_removes_a_null_direction():
    # R(theta, x) = P (x - theta) with P the projector orthogonal to 1: singular along 1.
    n = 4
    proj = lambda v: v - jnp.mean(v)
    res = lambda th, x: proj(x - th)
    theta = jnp.array([1.0, 2.0, 3.0, 4.0])
    got = implicit_vjp(res, theta, proj(theta), jnp.array([1.0, 0.0, 0.0, 0.0]), LinearSolve(ridge=0.0),
                       project=proj)
    np.testing.assert_allclose(got, np.array([1.0, 0.0, 0.0, 0.0]) - 1.0 / n, atol=1e-6)
