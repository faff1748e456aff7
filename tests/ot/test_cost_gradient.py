"""The envelope-theorem gradient of ``sinkhorn(...).cost``, against finite differences and the closed form.

Regression: with a balanced side, ``_phi``'s discarded KL-relaxed branch computed ``exp(-f / eps)``, which
overflows once ``|f| / eps`` exceeds ~88 (float32) or ~709 (float64): the README's 500 x 400 problem at
``epsilon = 0.01`` relative. Its ``inf`` times ``where``'s zero cotangent made every gradient entry NaN.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxbayes import ot


def clouds(n, m):
    return (jax.random.normal(jax.random.key(0), (n, 2)), jax.random.normal(jax.random.key(1), (m, 2)) + 1.0)


def test_cost_gradient_matches_finite_differences_in_float64(x64):
    x, y = clouds(60, 45)

    def cost(x):  # epsilon = 0.005 x mean cost: |f| / eps reaches ~300 (the float32 test below overflows)
        return ot.sinkhorn(ot.pointcloud(x, y), epsilon=0.005, tol=1e-12, max_iterations=20_000).cost

    grad = np.asarray(jax.grad(cost)(x))
    assert np.all(np.isfinite(grad))
    h = 1e-6
    for i, j in [(7, 1), (59, 0)]:
        e = jnp.zeros_like(x).at[i, j].set(h)
        fd = (cost(x + e) - cost(x - e)) / (2 * h)
        # central differences: truncation ~h^2 / eps^2 ~ 1e-8 relative, rounding ~1e-16 / h ~ 1e-10
        np.testing.assert_allclose(grad[i, j], fd, rtol=1e-6, atol=1e-9)


def test_cost_gradient_at_the_readme_size_is_the_envelope_formula():
    """Float32, 500 x 400, the README's call: for a fixed (absolute) epsilon the gradient of the entropic cost
    in ``x_i`` is ``2 (sum_j P_ij x_i - sum_j P_ij y_j)`` (envelope theorem, squared Euclidean cost)."""
    x, y = clouds(500, 400)
    out = ot.sinkhorn(ot.pointcloud(x, y, chunk_size=128), epsilon=0.01)
    grad = jax.grad(lambda x: ot.sinkhorn(ot.pointcloud(x, y, chunk_size=128), epsilon=out.epsilon,
                                          relative_epsilon=False).cost)(x)
    p = np.asarray(out.plan(), np.float64)
    expected = 2 * (p.sum(1)[:, None] * np.asarray(x, np.float64) - p @ np.asarray(y, np.float64))
    assert np.all(np.isfinite(np.asarray(grad)))
    # The formula holds at the optimum; the default tol = 1e-3 (L1 marginal error) leaves the plan's rows off
    # by ~1e-3 / n each, so entries agree to ~1e-4 of the largest, not to float32 rounding.
    np.testing.assert_allclose(np.asarray(grad), expected, atol=1e-4 * np.abs(expected).max())
