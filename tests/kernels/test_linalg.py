"""jittered_cholesky (retry policy, shift, lower triangle) and cg_solve vs numpy (_linalg.py)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jaxbayes.kernels import cg_solve, jittered_cholesky


def test_jitter_policy(x64):
    # rank-one PSD matrix: the first (zero) jitter fails, a retry succeeds
    a = jnp.ones((4, 4))
    r = jittered_cholesky(a, jitter=0.0, max_tries=5)
    assert bool(r.ok) and int(r.n_tries) >= 2 and float(r.jitter) > 0
    np.testing.assert_allclose(r.chol @ r.chol.T, a + r.jitter * jnp.eye(4), atol=1e-12)
    # the diagonal shift (noise) is part of the factored matrix and of the jitter scale; only the lower
    # triangle is read
    b = np.array([[2.0, 0.5, 0.1], [0.5, 1.5, 0.3], [0.1, 0.3, 1.0]])
    r = jax.jit(lambda m: jittered_cholesky(m, jitter=1e-3, shift=0.25))(np.tril(b) + 7.0 * np.triu(b, 1))
    j = 1e-3 * (np.trace(b) / 3 + 0.25)
    np.testing.assert_allclose(r.jitter, j, rtol=1e-12)
    np.testing.assert_allclose(r.chol, np.linalg.cholesky(b + (0.25 + j) * np.eye(3)), rtol=1e-12)
    assert int(r.n_tries) == 1
    out = jax.jit(lambda m: jittered_cholesky(m, max_tries=3))(-jnp.eye(3))
    assert not bool(out.ok) and int(out.n_tries) == 3


def test_cg_solve_vs_numpy_and_renamed_fields(x64):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(30, 30))
    a = q @ q.T + 30 * np.eye(30)
    b = rng.normal(size=30)
    r = cg_solve(a, b, tol=1e-12, max_iterations=200)
    assert bool(r.converged) and float(r.error) <= 1e-12
    np.testing.assert_allclose(r.x, np.linalg.solve(a, b), rtol=1e-9)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        old = cg_solve(a, b, tol=1e-12, maxiter=200)
        assert float(old.residual_norm) == float(r.error)
    assert [x.category for x in w] == [DeprecationWarning, DeprecationWarning]


def test_no_jitter_unless_the_factorisation_fails(x64):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(8, 8))
    a = q @ q.T / 8 + 0.5 * np.eye(8)
    r = jittered_cholesky(a, shift=0.1)
    assert float(r.jitter) == 0.0 and int(r.n_tries) == 1 and bool(r.ok)
    np.testing.assert_allclose(r.chol, np.linalg.cholesky(a + 0.1 * np.eye(8)), rtol=1e-12, atol=1e-14)
    # a failing matrix: the first retry is 1e-8 (float64) of the mean diagonal, then times growth
    one = np.ones((4, 4))
    r = jittered_cholesky(one)
    np.testing.assert_allclose(r.jitter, 1e-8, rtol=1e-12)
    r = jittered_cholesky(one, retry_jitter=1e-3, growth=4.0)
    np.testing.assert_allclose(r.jitter, 1e-3, rtol=1e-12)
    # under vmap each matrix gets its own jitter
    out = jax.vmap(jittered_cholesky)(jnp.stack([jnp.asarray(one), jnp.eye(4)]))
    np.testing.assert_allclose(out.jitter, [1e-8, 0.0], rtol=1e-12)
    np.testing.assert_array_equal(out.n_tries, [2, 1])
    with jax.enable_x64(False):
        r32 = jittered_cholesky(jnp.ones((4, 4), jnp.float32))
        np.testing.assert_allclose(r32.jitter, 1e-6, rtol=1e-6)


def test_derivatives_are_the_cholesky_ones(x64):
    rng = np.random.default_rng(1)
    q = rng.normal(size=(6, 6))
    a = jnp.asarray(q @ q.T + np.eye(6))
    w = jnp.asarray(rng.normal(size=(6, 6)))
    ours = lambda m, s: jnp.sum(w * jittered_cholesky(m, shift=s).chol)
    plain = lambda m, s: jnp.sum(w * jnp.linalg.cholesky(m + s * jnp.eye(6), symmetrize_input=False))
    for fn in (jax.grad, jax.hessian):
        got, ref = jax.jit(fn(ours, (0, 1)))(a, 0.3), fn(plain, (0, 1))(a, 0.3)
        for u, v in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):
            np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-12)
    # after a retry the derivative is that of the factor of a + (s + j) I with j held fixed
    one = jnp.ones((4, 4))
    j = float(jittered_cholesky(one).jitter)
    got = jax.grad(lambda s: jnp.sum(jnp.log(jnp.diagonal(jittered_cholesky(one, shift=s).chol))))(0.0)
    ref = 0.5 * np.trace(np.linalg.inv(np.ones((4, 4)) + j * np.eye(4)))
    np.testing.assert_allclose(got, ref, rtol=1e-6)
