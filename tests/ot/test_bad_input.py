"""Bad input raises clear errors that name the argument."""

import jax
import jax.numpy as jnp
import pytest

from jaxbayes import ot

X = jnp.zeros((4, 2))
Y = jnp.ones((3, 2))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(epsilon=0.0), "epsilon"),
        (dict(epsilon=-1.0), "epsilon"),
        (dict(a=jnp.array([0.5, 0.5, 0.5, -0.5])), "a must be finite and >= 0"),
        (dict(b=jnp.array([jnp.nan, 0.5, 0.5])), "b must be finite"),
        (dict(a=jnp.ones(4) / 4, b=jnp.ones(3)), "same total mass in balanced mode"),
        (dict(a=jnp.ones(5) / 5), r"a must have shape \(4,\)"),
        (dict(b=jnp.ones(2) / 2), r"b must have shape \(3,\)"),
        (dict(tau_a=0.0), "tau_a must be in"),
        (dict(tau_b=jnp.ones(2)), "tau_b must be a scalar or have shape"),
        (dict(max_iterations=0), "max_iterations"),
        (dict(epsilon_scaling=1.5), "epsilon_scaling"),
        (dict(init=(jnp.zeros(3), jnp.zeros(3))), "init must be potentials"),
        (dict(a=jnp.zeros(4), b=jnp.zeros(3)), "a must have positive total mass"),
    ],
)
def test_sinkhorn_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ot.sinkhorn(ot.pointcloud(X, Y), **kwargs)


def test_unequal_mass_is_fine_when_unbalanced():
    out = ot.sinkhorn(ot.pointcloud(X, Y), jnp.ones(4) / 4, jnp.ones(3), tau_a=0.9, tau_b=0.9)
    assert bool(jnp.isfinite(out.cost))


def test_geometry_errors():
    with pytest.raises(ValueError, match="same number of features"):
        ot.pointcloud(X, jnp.ones((3, 5)))
    with pytest.raises(ValueError, match="x must have ndim 2"):
        ot.pointcloud(jnp.ones(4), Y)
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        ot.pointcloud(jnp.ones((4, 2), jnp.int32), Y)
    with pytest.raises(ValueError, match="chunk_size"):
        ot.pointcloud(X, Y, chunk_size=0)
    with pytest.raises(ValueError, match="cost_matrix must have ndim 2"):
        ot.costmatrix(jnp.ones(3))
    with pytest.raises(ValueError, match="cost must be one of"):
        ot.pointcloud(X, Y, cost="manhattan")
    with pytest.raises(TypeError, match="geom must be"):
        ot.sinkhorn("not a geometry")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(k=0), r"k must be in \[1, 4\]"),
        (dict(k=5), r"k must be in \[1, 4\]"),
        (dict(k=4, sparsity="row"), r"k must be in \[1, 3\]"),
        (dict(k=2, gamma=0.0), "gamma"),
        (dict(k=2, a=jnp.ones(3) / 3), r"a must have shape \(4,\)"),
        (dict(k=2, b=jnp.array([1.0, -0.5, 0.5])), "b must be finite and >= 0"),
        (dict(k=2, b=jnp.ones(3)), "same total mass"),
        (dict(k=2, formulation="primal"), "formulation must be one of"),
        (dict(k=2, method="sgd"), "method must be one of"),
        (dict(k=2, sparsity="diag"), "sparsity must be one of"),
    ],
)
def test_sparse_ot_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ot.sparse_ot(ot.SqEuclidean().pairwise(X, Y), **kwargs)


def test_sparse_ot_k_must_be_int():
    with pytest.raises(TypeError, match="k must be an int"):
        ot.sparse_ot(jnp.ones((3, 3)), k=1.5)


def test_partial_and_analytic_errors():
    c = jnp.ones((4, 3))
    with pytest.raises(ValueError, match="mass must be in"):
        ot.partial_ot(c, mass=1.5)
    with pytest.raises(ValueError, match="mass must be in"):
        ot.pseudo_labels(jnp.zeros((4, 3)), mass=0.0)
    with pytest.raises(ValueError, match="reg_kl must be > 0"):
        ot.pseudo_labels(jnp.zeros((4, 3)), mass=0.5, reg_kl=0.0)
    with pytest.raises(ValueError, match="kind must be one of"):
        ot.mass_schedule(1, 10, kind="cosine")
    with pytest.raises(ValueError, match="epsilon"):
        ot.analytic.entropic_ot_gaussians([0.0], [1.0], [0.0], [1.0], epsilon=0.0)
    with pytest.raises(ValueError, match="cov2 must be"):
        ot.analytic.w2_gaussians([0.0, 0.0], jnp.eye(2), [0.0, 0.0], jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="k must be in"):
        ot.sparse_simplex_projection(jnp.ones(3), 4)


@pytest.mark.parametrize("name", ["x", "y"])
@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf])
def test_non_finite_points_name_the_argument(name, bad):
    pts = {"x": X, "y": Y}
    pts[name] = pts[name].at[1, 0].set(bad)
    with pytest.raises(ValueError, match=f"{name} must be finite"):
        ot.sinkhorn(ot.pointcloud(pts["x"], pts["y"]))


def test_non_finite_cost_matrix_names_the_argument():
    c = jnp.ones((4, 3)).at[2, 1].set(jnp.nan)
    for solver in (ot.sinkhorn, lambda c: ot.sparse_ot(c, k=2), ot.quadratic_ot):
        with pytest.raises(ValueError, match="cost_matrix must be finite"):
            solver(c)


@pytest.mark.parametrize(("x", "y", "match"), [(jnp.zeros((0, 2)), Y, "x must contain at least one point"),
                                               (X, jnp.zeros((0, 2)), "y must contain at least one point")])
def test_empty_point_cloud_names_the_argument(x, y, match):
    with pytest.raises(ValueError, match=match):
        ot.sinkhorn(ot.pointcloud(x, y))


def test_empty_cost_matrix():
    with pytest.raises(ValueError, match="cost_matrix must have at least one row and one column"):
        ot.sinkhorn(jnp.zeros((0, 3)))


@pytest.mark.parametrize("eps", [0.0, -1.0])
def test_epsilon_static_under_jit_raises(eps):
    with pytest.raises(ValueError, match="epsilon must be finite and > 0"):
        jax.jit(lambda x: ot.sinkhorn(ot.pointcloud(x, Y), epsilon=eps).cost)(X)


@pytest.mark.parametrize("eps", [0.0, -1.0])
def test_epsilon_traced_nonpositive_gives_nan(eps):
    out = jax.jit(lambda e: ot.sinkhorn(ot.pointcloud(X, Y), epsilon=e))(eps)
    assert bool(jnp.isnan(out.cost)) and bool(jnp.all(jnp.isnan(out.f))) and not bool(out.converged)
