"""On 8 simulated devices: sharded inputs give the dense float64 oracle's values and gradients (``dense.py``),
on Explicit (``jax.make_mesh``'s default) and Auto 1-D meshes with ``x`` only, ``y`` only or both split
(the ring), on a 2-D mesh with ``x`` and ``y`` on different axes (the all-reduce), and inside a caller's
``jax.shard_map``; results stay split like the operand whose points index them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxbayes import pairwise as pw
from jaxbayes.pairwise._placement import Placement
from jaxbayes.pairwise._reduce import _sharded
from tests.pairwise import dense

TOL = dict(rtol=1e-12, atol=1e-12)
GTOL = dict(rtol=1e-10, atol=1e-10)
N, M = 64, 48


def sq(a, b):
    return jnp.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)


def rbf(a, b, p):
    return p["amp"] * jnp.exp(-sq(a, b) / (2.0 * p["ls"] ** 2))


def mesh_1d(kind):
    assert jax.device_count() == 8, "tests expect 8 simulated CPU devices"
    if kind == "explicit":
        mesh = jax.make_mesh((8,), ("data",))
        assert mesh.axis_types == (AxisType.Explicit,)   # the default in this jax
        return mesh
    return jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))


def split(v, mesh, axis):
    v = jnp.asarray(v)
    return jax.device_put(v, NamedSharding(mesh, P(axis, *([None] * (v.ndim - 1)))))


def problem(seed=0, n=N, m=M):
    rng = np.random.default_rng(seed)
    return dict(x=rng.normal(size=(n, 3)), y=rng.normal(size=(m, 3)), hx=rng.normal(size=n),
                hy=rng.normal(size=m), vy=rng.normal(size=(m, 2)), wx=rng.uniform(0.1, 1.0, n),
                p={"amp": np.asarray(1.3), "ls": np.asarray(0.9)})


def ops(x, y, hx, hy, vy, wx, p):
    return {"lse1": pw.logsumexp(sq, x, y, hy, eps=0.7, chunk_size=16),            # rows: x
            "lse0": pw.logsumexp(rbf, x, y, hx, eps=0.7, axis=0, params=p, chunk_size=5),   # rows: y
            "mm1": pw.matmul(rbf, x, y, vy, params=p, chunk_size=16),                # rows: x
            "cols": pw.col_sums(rbf, x, y, wx, params=p)}                            # rows: y, one tile


def oracle(pr):
    c, k = dense.sq_np(pr["x"], pr["y"]), dense.rbf_np(pr["x"], pr["y"], pr["p"])
    return {"lse1": dense.lse_np(c, pr["hy"], 0.7, 1), "lse0": dense.lse_np(k, pr["hx"], 0.7, 0),
            "mm1": k @ pr["vy"], "cols": k.T @ pr["wx"]}


def lead_axis(a):
    """The mesh axis splitting ``a``'s leading dimension (``None``: replicated)."""
    spec = tuple(a.sharding.spec) + (None,)
    return spec[0]


def placed(pr, mesh, x_axis, y_axis):
    """The problem's arrays on ``mesh``: x-indexed ones along ``x_axis``, y-indexed along ``y_axis``."""
    return (split(pr["x"], mesh, x_axis), split(pr["y"], mesh, y_axis), split(pr["hx"], mesh, x_axis),
            split(pr["hy"], mesh, y_axis), split(pr["vy"], mesh, y_axis), split(pr["wx"], mesh, x_axis),
            jax.tree.map(jnp.asarray, pr["p"]))


def check(out, ref):
    for name in ref:
        np.testing.assert_allclose(np.asarray(out[name]), ref[name], err_msg=name, **TOL)


@pytest.mark.parametrize("case", ["x", "y", "both"])
@pytest.mark.parametrize("kind", ["explicit", "auto"])
def test_sharded_jit_matches_dense(x64, kind, case):
    mesh = mesh_1d(kind)
    pr = problem()
    xa, ya = ("data" if case in ("x", "both") else None), ("data" if case in ("y", "both") else None)
    args = placed(pr, mesh, xa, ya)
    f = jax.jit(ops)
    out = f(*args)
    check(out, oracle(pr))
    if kind == "explicit":   # the result follows its rows' operand (under Auto + jit, both sets are split)
        for name in ("lse1", "mm1"):
            assert lead_axis(out[name]) == xa, name
        for name in ("lse0", "cols"):
            assert lead_axis(out[name]) == ya, name
    # the combine: a ring of ppermutes only when both sets are split along one axis
    jaxpr = str(jax.make_jaxpr(ops)(*args))
    ring = case == "both" or kind == "auto"   # Auto + jit splits both sets over the mesh's one axis
    assert ("ppermute" in jaxpr) == ring
    assert pw.placement_of(args[0], args[1]) == Placement(mesh, xa, ya)


def test_sharded_eager_matches_dense(x64):
    mesh = mesh_1d("explicit")
    pr = problem(1)
    x, y = split(pr["x"], mesh, "data"), split(pr["y"], mesh, "data")
    out = pw.row_sums(rbf, x, y, split(np.exp(pr["hy"]), mesh, "data"), params=pr["p"], chunk_size=16)
    np.testing.assert_allclose(np.asarray(out), dense.rbf_np(pr["x"], pr["y"], pr["p"]) @ np.exp(pr["hy"]), **TOL)
    assert lead_axis(out) == "data"


def test_auto_mesh_set_not_divisible_is_left_whole(x64):
    """Auto + jit: a set whose size the axis does not divide is not split (no error), the other one is."""
    mesh = mesh_1d("auto")
    pr = problem(2, n=N, m=44)
    x, y = split(pr["x"], mesh, "data"), jax.device_put(pr["y"], NamedSharding(mesh, P()))

    def f(x, y, h):
        pl = pw.placement_of(x, y)   # under jit the mesh is the abstract one
        assert (pl.mesh.axis_names, pl.x_axis, pl.y_axis) == (("data",), "data", None)
        return pw.logsumexp(sq, x, y, h, eps=0.7, chunk_size=16)

    out = jax.jit(f)(x, y, pr["hy"])
    np.testing.assert_allclose(np.asarray(out), dense.lse_np(dense.sq_np(pr["x"], pr["y"]), pr["hy"], 0.7, 1), **TOL)


@pytest.mark.parametrize("kind", ["explicit", "auto"])
def test_2d_mesh_all_reduce_matches_dense(x64, kind):
    """x on one mesh axis, y on the other: a local reduction then an all-reduce over y's axis (Explicit); on
    an Auto 2-D mesh under jit the engine leaves the partitioning to XLA (still the oracle's values)."""
    types = (AxisType.Explicit,) * 2 if kind == "explicit" else (AxisType.Auto,) * 2
    mesh = jax.make_mesh((4, 2), ("a", "b"), axis_types=types)
    pr = problem(3)
    args = list(placed(pr, mesh, "a", None))
    args[1], args[3], args[4] = (split(pr[k], mesh, "b") for k in ("y", "hy", "vy"))
    out = jax.jit(ops)(*args)
    check(out, oracle(pr))
    jaxpr = str(jax.make_jaxpr(ops)(*args))
    assert ("psum" in jaxpr and "ppermute" not in jaxpr) == (kind == "explicit")
    if kind == "explicit":
        assert lead_axis(out["lse1"]) == "a" and lead_axis(out["mm1"]) == "a"
        assert lead_axis(out["lse0"]) == "b" and lead_axis(out["cols"]) == "b"
    # x split over both axes at once (8 blocks), y whole
    xab = split(pr["x"], mesh, ("a", "b"))
    out = jax.jit(lambda x, y: pw.logsumexp(sq, x, y, pr["hy"], eps=0.7, chunk_size=16))(xab, pr["y"])
    np.testing.assert_allclose(np.asarray(out), oracle(pr)["lse1"], **TOL)


def test_inside_callers_shard_map(x64):
    """In the caller's ``shard_map`` the mesh axis is Manual: the engine does not split again, each device
    reduces its own block of x against the y it was given."""
    mesh = mesh_1d("explicit")
    pr = problem(4)

    def body(xb, y, h):
        assert pw.placement_of(xb, y).is_local
        return pw.logsumexp(sq, xb, y, h, eps=0.7, chunk_size=5), pw.row_sums(rbf, xb, y, params=pr["p"])

    f = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P("data"), P(), P()), out_specs=(P("data"), P("data"))))
    lse, rs = f(split(pr["x"], mesh, "data"), pr["y"], pr["hy"])
    c, k = dense.sq_np(pr["x"], pr["y"]), dense.rbf_np(pr["x"], pr["y"], pr["p"])
    np.testing.assert_allclose(np.asarray(lse), dense.lse_np(c, pr["hy"], 0.7, 1), **TOL)
    np.testing.assert_allclose(np.asarray(rs), k.sum(1), **TOL)

    # and its gradient w.r.t. the split x and the whole y (JAX sums y's cotangent over the devices)
    loss = lambda x, y, h: jnp.sum(jnp.sin(f(x, y, h)[0])) + jnp.sum(f(x, y, h)[1] ** 2)
    ref = lambda x, y, h: (jnp.sum(jnp.sin(dense.lse_jnp(dense.sq_jnp(x, y), h, 0.7, 1)))
                           + jnp.sum(jnp.sum(dense.rbf_jnp(x, y, pr["p"]), 1) ** 2))
    got = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(split(pr["x"], mesh, "data"), pr["y"], pr["hy"])
    want = jax.grad(ref, argnums=(0, 1, 2))(pr["x"], pr["y"], pr["hy"])
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), **GTOL)


# ---------------------------------------------------------------------------------------------- grad


def _loss(x, y, hy, vy, p):
    return (jnp.sum(jnp.sin(pw.logsumexp(sq, x, y, hy, eps=0.7, chunk_size=16)))
            + jnp.sum(jnp.sin(pw.matmul(rbf, x, y, vy, params=p, chunk_size=16))))


def _dense_loss(x, y, hy, vy, p):
    return (jnp.sum(jnp.sin(dense.lse_jnp(dense.sq_jnp(x, y), hy, 0.7, 1)))
            + jnp.sum(jnp.sin(dense.rbf_jnp(x, y, p) @ vy)))


@pytest.mark.parametrize("case", ["x", "y", "both", "2d"])
def test_sharded_grad_matches_dense(x64, case):
    """Gradients w.r.t. the points, potentials, vectors and params through each combine (none, all-reduce,
    ring, all-reduce on a 2-D mesh); y's potentials are ``-inf`` on the last device's whole block (padding
    with zero weights). Axis 0 is the same code with the roles of x and y swapped."""
    pr = problem(5)
    pr["hy"][-M // 8:] = -np.inf
    if case == "2d":
        mesh = jax.make_mesh((4, 2), ("a", "b"))
        xa, ya = "a", "b"
    else:
        mesh = mesh_1d("explicit")
        xa, ya = ("data" if case in ("x", "both") else None), ("data" if case in ("y", "both") else None)
    x, y, _, hy, vy, _, p = placed(pr, mesh, xa, ya)
    got = jax.jit(jax.grad(_loss, argnums=tuple(range(5))))(x, y, hy, vy, p)
    want = jax.jit(jax.grad(_dense_loss, argnums=tuple(range(5))))(
        *(jax.tree.map(jnp.asarray, pr[k]) for k in ("x", "y", "hy", "vy", "p")))
    for i, (g, w) in enumerate(zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), err_msg=f"leaf {i}", **GTOL)
    assert lead_axis(got[0]) == xa and lead_axis(got[1]) == ya   # gradients split like their inputs


# ---------------------------------------------------------------------------------------------- errors


def test_placement_errors():
    mesh = mesh_1d("explicit")
    mesh2 = jax.make_mesh((4, 2), ("a", "b"))
    x = split(jnp.zeros((8, 2)), mesh, "data")
    with pytest.raises(ValueError, match="x and y are on different meshes"):
        pw.row_sums(sq, x, split(jnp.zeros((8, 2)), mesh2, "a"))
    with pytest.raises(ValueError, match=r"x and y are split along overlapping mesh axes \('a', 'b'\) and 'a'"):
        pw.row_sums(sq, split(jnp.zeros((8, 2)), mesh2, ("a", "b")), split(jnp.zeros((4, 2)), mesh2, "a"))
    # JAX refuses to split 60 points over 8 devices, so the engine's own check is reached only through a
    # placement it is handed (the Auto path checks divisibility before it splits anything).
    with pytest.raises(ValueError, match=r"x has 60 points, not a multiple of the 8 devices of mesh axis 'data'; "
                                         r"pad it \(with zero weights\) to a multiple"):
        _sharded(None, None, Placement(mesh, "data", None), None, jnp.zeros((60, 2)), jnp.zeros((8, 2)),
                 None, None, None, 16)
    with pytest.raises(ValueError, match=r"y has 12 points, not a multiple of the 8 devices"):
        _sharded(None, None, Placement(mesh, None, "data"), None, jnp.zeros((8, 2)), jnp.zeros((12, 2)),
                 None, None, None, 16)
