"""Gradient-safe special functions (_math.py) vs numpy."""

import jax
import numpy as np


def test_atan2_matches_numpy(x64):
    from jaxbayes.kernels._math import atan2 as _atan2

    rng = np.random.default_rng(2)
    y = rng.normal(size=20000) * 10.0 ** rng.uniform(-6, 6, 20000)
    x = rng.normal(size=20000) * 10.0 ** rng.uniform(-6, 6, 20000)
    y[:6], x[:6] = [0, 0, 1, -1, 1, -1], [0, -1, 0, 0, 1, -1]
    ref = np.arctan2(y, x)
    got = np.asarray(jax.jit(_atan2)(y, x))
    assert np.all(np.abs(got - ref) <= 2 * np.spacing(np.abs(ref)) + 1e-300)
    y32, x32 = y.astype(np.float32), x.astype(np.float32)
    np.testing.assert_allclose(jax.jit(_atan2)(y32, x32), np.arctan2(y32, x32), rtol=1e-6, atol=1e-7)
    # derivative (x dy - y dx) / (x^2 + y^2), and 0 (not NaN) at the origin
    gy, gx = jax.vmap(jax.grad(_atan2, argnums=(0, 1)))(y[6:100], x[6:100])
    r2 = x[6:100] ** 2 + y[6:100] ** 2
    np.testing.assert_allclose(gy, x[6:100] / r2, rtol=1e-14)
    np.testing.assert_allclose(gx, -y[6:100] / r2, rtol=1e-14)
    assert jax.grad(_atan2)(0.0, 0.0) == 0.0
