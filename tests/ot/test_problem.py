"""ot.Problem / ot.as_problem: defaults, checks, and solvers accept a problem as well as a geometry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes import ot


def test_defaults_are_uniform_and_tau_is_broadcast():
    p = ot.as_problem(jnp.ones((2, 4)))
    np.testing.assert_allclose(p.a, [0.5, 0.5])
    np.testing.assert_allclose(p.b, [0.25] * 4)
    assert p.tau_a.shape == (2,) and p.tau_b.shape == (4,) and p.balanced


def test_problem_is_a_pytree_and_is_not_balanced_when_traced():
    p = ot.as_problem(jnp.ones((3, 3)), tau_a=0.5)
    assert not p.balanced
    leaves = jax.tree.leaves(p)
    assert any(leaf.shape == (3, 3) for leaf in leaves)
    assert jax.jit(lambda q: q.a.sum())(p) == pytest.approx(1.0)


def test_sinkhorn_accepts_a_problem():
    x = jax.random.normal(jax.random.key(0), (8, 2))
    geom = ot.pointcloud(x, x + 1.0)
    a = jnp.linspace(1.0, 2.0, 8)
    a = a / a.sum()
    direct = ot.sinkhorn(geom, a, tau_b=0.9)
    via = ot.sinkhorn(ot.as_problem(geom, a, tau_b=0.9))
    np.testing.assert_array_equal(direct.f, via.f)
    with pytest.raises(ValueError, match="a and b must be None"):
        ot.as_problem(ot.as_problem(geom), a)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(a=jnp.array([1.0, -0.5])), "a must be finite and >= 0"),
        (dict(b=jnp.ones(3)), "same total mass"),
        (dict(tau_b=2.0), "tau_b must be in"),
        (dict(a=jnp.ones(3) / 3), r"a must have shape \(2,\)"),
    ],
)
def test_checks(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ot.as_problem(jnp.ones((2, 3)), **kwargs)


def test_unequal_mass_allowed_when_asked():
    p = ot.as_problem(jnp.ones((2, 3)), b=jnp.ones(3), equal_mass=False)
    assert float(p.b.sum()) == 3.0
