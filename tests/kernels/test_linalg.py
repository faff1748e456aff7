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
