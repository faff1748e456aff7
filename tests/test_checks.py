"""jaxbayes._checks: messages name the argument; value checks are skipped under jit."""

import jax
import jax.numpy as jnp
import pytest

from jaxbayes import _checks as c


def test_messages_name_the_argument():
    with pytest.raises(ValueError, match="epsilon must be finite and > 0, got -1.0"):
        c.check_positive("epsilon", -1.0)
    with pytest.raises(ValueError, match=r"weights must be finite and >= 0"):
        c.check_positive("weights", jnp.array([1.0, -0.1]), strict=False)
    with pytest.raises(ValueError, match=r"k must be in \[1, 5\], got 0"):
        c.check_int_range("k", 0, 1, 5)
    with pytest.raises(TypeError, match="k must be an int"):
        c.check_int_range("k", 2.0, 1, 5)
    with pytest.raises(ValueError, match="method must be one of"):
        c.check_choice("method", "x", ("a", "b"))
    with pytest.raises(ValueError, match=r"x must have ndim 2, got shape \(3,\)"):
        c.check_ndim("x", jnp.ones(3), 2)
    with pytest.raises(ValueError, match=r"y must have shape \(\?, 2\)"):
        c.check_shape("y", jnp.ones((3, 3)), (None, 2))
    with pytest.raises(ValueError, match="a and b must have the same shape"):
        c.check_same_shape("a", jnp.ones(2), "b", jnp.ones(3))
    with pytest.raises(ValueError, match="x must be finite; found 1 non-finite"):
        c.check_finite("x", jnp.array([1.0, jnp.nan]))
    with pytest.raises(TypeError, match="floating"):
        c.check_floating("x", jnp.arange(3))


def test_value_checks_skip_tracers():
    @jax.jit
    def f(eps):
        c.check_positive("eps", eps)
        c.check_finite("eps", eps)
        return eps * 2

    assert float(f(-1.0)) == -2.0
    c.check_positive("eps", 1e-3)
    c.check_int_range("k", 3, 1, None)
