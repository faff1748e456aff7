"""GP solver objects and their string shorthand (_solvers.py)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes.kernels import CG, Cholesky, as_solver, gp_condition


def test_as_solver():
    assert as_solver("cholesky") == Cholesky()
    assert as_solver("cg") == CG()
    assert as_solver(CG(tol=1e-3)) == CG(tol=1e-3)
    with pytest.raises(ValueError, match="solver must be one of"):
        as_solver("lu")
    with pytest.raises(TypeError, match="condition method"):
        as_solver(3)
    with pytest.raises(ValueError, match="tol"):
        CG(tol=0.0)


def test_cg_object_matches_deprecated_arguments(x64):
    rng = np.random.default_rng(1)
    q = rng.normal(size=(20, 20))
    k, y = q @ q.T / 20, rng.normal(size=20)
    new = gp_condition(k, y, noise=0.1, solver=CG(tol=1e-9, max_iterations=50))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        old = gp_condition(k, y, noise=0.1, solver="cg", cg_tol=1e-9, cg_maxiter=50)
    assert w and w[0].category is DeprecationWarning
    np.testing.assert_array_equal(new.alpha, old.alpha)
    exact = gp_condition(k, y, noise=0.1, solver=Cholesky())
    np.testing.assert_allclose(new.alpha, exact.alpha, rtol=1e-6)
    assert bool(jax.jit(lambda a: gp_condition(a, y, noise=0.1, solver=CG(tol=1e-9)).ok)(jnp.asarray(k)))


def test_solvers_report_the_jitter_and_add_none_by_default(x64):
    x = np.linspace(-2, 2, 15)[:, None]
    k = np.exp(-0.5 * (x - x.T) ** 2 / 0.7**2)
    y = np.sin(2 * x[:, 0])
    a = k + 0.1 * np.eye(15)
    exact = np.linalg.solve(a, y)
    for solver in (Cholesky(), CG(tol=1e-13, max_iterations=500)):
        c = gp_condition(k, y, noise=0.1, solver=solver)
        assert float(c.jitter) == 0.0 and bool(c.ok)
        np.testing.assert_allclose(c.alpha, exact, rtol=1e-9, atol=1e-12)
    # a singular Gram (a repeated point, no noise) only factors with a jitter, which is reported
    kd = np.exp(-0.5 * (np.r_[x[:1], x][:, None, 0] - np.r_[x[:1], x][None, :, 0]) ** 2 / 0.7**2)
    c = gp_condition(kd, np.r_[y[:1], y], solver=Cholesky())
    assert bool(c.ok) and float(c.jitter) > 0
