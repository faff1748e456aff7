"""MAP finding: L-BFGS to a gradient tolerance, any optax optimiser, the reported fields, jit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxbayes import vi


def rosenbrock(p):
    return jnp.sum(100.0 * (p["b"] - p["a"] ** 2) ** 2 + (1.0 - p["a"]) ** 2)


def test_lbfgs_reaches_tol_and_reports(x64):
    start = {"a": jnp.full(3, -1.2), "b": jnp.ones(3)}
    r = vi.find_map(rosenbrock, start, tol=1e-10)
    assert bool(r.converged) and float(r.error) <= 1e-10 and 0 < int(r.n_iters) < 1000
    np.testing.assert_allclose(r.params["a"], 1.0, atol=1e-8)
    np.testing.assert_allclose(r.error, optax.tree.norm(jax.grad(rosenbrock)(r.params)), rtol=1e-12)
    np.testing.assert_allclose(r.value, rosenbrock(r.params), rtol=1e-12)
    capped = vi.find_map(rosenbrock, start, max_iterations=3)
    assert int(capped.n_iters) == 3 and not bool(capped.converged)
    jitted = jax.jit(lambda p: vi.find_map(rosenbrock, p, tol=1e-10))(start)
    np.testing.assert_allclose(jitted.params["a"], r.params["a"], rtol=1e-12)


def test_any_optax_optimizer(x64):
    quad = lambda p: 0.5 * jnp.sum((p - jnp.arange(4.0)) ** 2 * jnp.arange(1.0, 5.0))
    r = vi.find_map(quad, jnp.zeros(4), optimizer=optax.adam(0.1), tol=1e-6, max_iterations=5000)
    assert bool(r.converged)
    np.testing.assert_allclose(r.params, jnp.arange(4.0), atol=1e-5)
    with pytest.raises(ValueError, match="lbfgs"):
        vi.find_map(quad, jnp.zeros(4), optimizer="bfgs")
    with pytest.raises(ValueError, match="tol"):
        vi.find_map(quad, jnp.zeros(4), tol=0.0)
