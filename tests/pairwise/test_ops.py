"""Every op of :mod:`jaxbayes.pairwise` on one device against the dense float64 oracle (``dense.py``): both
axes, potentials / weights / vectors / hyper-parameters, tiles that divide the sizes, that do not, and one tile;
``jit``, ``vmap`` and ``grad``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp as sp_logsumexp

from jaxbayes import pairwise as pw
from tests.pairwise import dense

TOL = dict(rtol=1e-12, atol=1e-12)
GTOL = dict(rtol=1e-10, atol=1e-10)


def sq(a, b):
    return jnp.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)


def rbf(a, b, p):
    return p["amp"] * jnp.exp(-sq(a, b) / (2.0 * p["ls"] ** 2))


def problem(n, m, d, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return dict(x=rng.normal(size=(n, d)).astype(dtype), y=rng.normal(size=(m, d)).astype(dtype),
                hx=rng.normal(size=n).astype(dtype), hy=rng.normal(size=m).astype(dtype),
                wx=rng.uniform(0.1, 1.0, n).astype(dtype), wy=rng.uniform(0.1, 1.0, m).astype(dtype),
                vx=rng.normal(size=(n, 4)).astype(dtype), vy=rng.normal(size=(m, 4)).astype(dtype),
                p={"amp": np.asarray(1.3, dtype), "ls": np.asarray(0.8 * np.sqrt(d), dtype)})


CORE = ("lse1", "lse0", "mm1_2d", "mm0")


def all_ops(pr, chunk, eps=0.7, names=None):
    """Every op and axis on one problem (or only ``names``), as a dict (one ``jit`` per problem)."""
    x, y, p = pr["x"], pr["y"], pr["p"]
    ops = {
        "lse1": lambda: pw.logsumexp(sq, x, y, pr["hy"], eps=eps, axis=1, chunk_size=chunk),
        "lse0": lambda: pw.logsumexp(sq, x, y, pr["hx"], eps=eps, axis=0, chunk_size=chunk),
        "lse1_noh": lambda: pw.logsumexp(sq, x, y, eps=eps, chunk_size=chunk),
        "lse0_params": lambda: pw.logsumexp(rbf, x, y, pr["hx"], eps=eps, axis=0, params=p, chunk_size=chunk),
        "mm1": lambda: pw.matmul(rbf, x, y, pr["wy"], axis=1, params=p, chunk_size=chunk),
        "mm1_2d": lambda: pw.matmul(rbf, x, y, pr["vy"], axis=1, params=p, chunk_size=chunk),
        "mm0": lambda: pw.matmul(rbf, x, y, pr["wx"], axis=0, params=p, chunk_size=chunk),
        "mm0_2d": lambda: pw.matmul(rbf, x, y, pr["vx"], axis=0, params=p, chunk_size=chunk),
        "rows": lambda: pw.row_sums(rbf, x, y, params=p, chunk_size=chunk),
        "rows_w": lambda: pw.row_sums(rbf, x, y, pr["wy"], params=p, chunk_size=chunk),
        "cols": lambda: pw.col_sums(rbf, x, y, params=p, chunk_size=chunk),
        "cols_w": lambda: pw.col_sums(rbf, x, y, pr["wx"], params=p, chunk_size=chunk),
    }
    return {k: f() for k, f in ops.items() if names is None or k in names}


def oracle(pr, eps=0.7):
    x, y, p = pr["x"], pr["y"], pr["p"]
    c, k = dense.sq_np(x, y), dense.rbf_np(x, y, p)
    n, m = c.shape
    return {
        "lse1": dense.lse_np(c, pr["hy"], eps, 1), "lse0": dense.lse_np(c, pr["hx"], eps, 0),
        "lse1_noh": dense.lse_np(c, np.zeros(m), eps, 1), "lse0_params": dense.lse_np(k, pr["hx"], eps, 0),
        "mm1": k @ pr["wy"], "mm1_2d": k @ pr["vy"], "mm0": k.T @ pr["wx"], "mm0_2d": k.T @ pr["vx"],
        "rows": k.sum(1), "rows_w": k @ pr["wy"], "cols": k.sum(0), "cols_w": k.T @ pr["wx"],
    }


def assert_close(actual, expected, **tol):
    assert set(actual) == set(expected)
    for name in expected:
        np.testing.assert_allclose(np.asarray(actual[name]), expected[name], err_msg=name, **(tol or TOL))


@pytest.mark.parametrize(("n", "m", "d", "chunk", "names"), [
    (48, 32, 3, 16, None),     # the tile divides n and m: every op
    (37, 53, 3, 16, None),     # it divides neither (padded rows and masked columns): every op
    (37, 53, 1, 16, CORE),     # d = 1
    (37, 53, 64, 16, CORE),    # d = 64
    (37, 53, 3, None, CORE),   # one tile (as for any chunk_size >= n, m)
    (5, 7, 3, 1, CORE),        # 1 x 1 tiles
])
def test_ops_jit_match_dense(x64, n, m, d, chunk, names):
    pr = problem(n, m, d)
    out = jax.jit(all_ops, static_argnums=(1, 2, 3))(pr, chunk, 0.7, names)
    assert out["lse1"].shape == (n,) and out["lse0"].shape == (m,) and out["mm1_2d"].shape == (n, 4)
    ref = oracle(pr)
    assert_close(out, {k: ref[k] for k in out})


def test_ops_eager_match_dense(x64):
    pr = problem(37, 53, 3, seed=1)
    out = {"lse0": pw.logsumexp(sq, pr["x"], pr["y"], pr["hx"], eps=0.3, axis=0, chunk_size=16)}
    ref = oracle(pr, eps=0.3)
    assert_close(out, {k: ref[k] for k in out})


def test_float32_ops_match_dense():
    """float32 inputs give float32 outputs at float32 rounding of the float64 oracle."""
    pr = problem(37, 53, 3, dtype=np.float32)
    out = jax.jit(all_ops, static_argnums=1)(pr, 16)
    assert all(v.dtype == jnp.float32 for v in out.values())
    assert_close(out, oracle(pr), rtol=2e-5, atol=2e-5)


def test_logsumexp_is_overflow_free_and_handles_minus_inf(x64):
    """Tiny ``eps`` (exponents ~ -1e4) and large potentials; ``-inf`` potentials filling whole tiles (zero
    weights, padding) contribute nothing, and a row of only ``-inf`` gives ``-inf``."""
    pr = problem(37, 53, 3, seed=2)
    c = dense.sq_np(pr["x"], pr["y"])
    big = 1e3 * pr["hy"]
    some_inf = pr["hy"].copy()
    some_inf[:32] = -np.inf   # the first two column tiles are all -inf
    f = jax.jit(jax.vmap(lambda h, eps: pw.logsumexp(sq, pr["x"], pr["y"], h, eps=eps, chunk_size=16)))
    out = np.asarray(f(np.stack([big, some_inf, np.full(53, -np.inf)]), np.array([1e-3, 0.7, 0.7])))
    np.testing.assert_allclose(out[0], sp_logsumexp(big[None] - c / 1e-3, axis=1), rtol=1e-12)
    np.testing.assert_allclose(out[1], dense.lse_np(c, some_inf, 0.7, 1), **TOL)
    assert np.all(np.isneginf(out[2]))


# ---------------------------------------------------------------------------------------------- vmap


def test_vmap_over_batch_of_problems(x64):
    rng = np.random.default_rng(3)
    b, n, m, d = 3, 37, 53, 3
    xs, ys, hs = rng.normal(size=(b, n, d)), rng.normal(size=(b, m, d)), rng.normal(size=(b, m))
    p = {"amp": jnp.asarray(1.3), "ls": jnp.asarray(0.9)}

    def f(x, y, h):
        return (pw.logsumexp(sq, x, y, h, eps=0.5, chunk_size=16),
                pw.row_sums(rbf, x, y, jnp.exp(h), params=p, chunk_size=16))

    lse, rs = jax.jit(jax.vmap(f))(xs, ys, hs)
    # A batch of potentials against one pair of point sets (several Sinkhorn potentials at once).
    lse_h = jax.vmap(lambda h: pw.logsumexp(sq, xs[0], ys[0], h, eps=0.5, chunk_size=16))(hs)
    for i in range(b):
        c, k = dense.sq_np(xs[i], ys[i]), dense.rbf_np(xs[i], ys[i], p)
        np.testing.assert_allclose(np.asarray(lse[i]), dense.lse_np(c, hs[i], 0.5, 1), **TOL)
        np.testing.assert_allclose(np.asarray(rs[i]), k @ np.exp(hs[i]), **TOL)
        np.testing.assert_allclose(np.asarray(lse_h[i]), dense.lse_np(dense.sq_np(xs[0], ys[0]), hs[i], 0.5, 1),
                                   **TOL)


# ---------------------------------------------------------------------------------------------- grad


def _grad_case(op, axis):
    """(engine loss, dense loss) of ``(x, y, a, eps, p)`` where ``a`` is the op's potential / weight / vector."""
    def cot(n):  # a fixed non-trivial cotangent
        return jnp.cos(jnp.arange(n, dtype=jnp.float64))

    if op == "logsumexp":
        def eng(x, y, a, eps, p):
            out = pw.logsumexp(rbf, x, y, a, eps=eps, axis=axis, params=p, chunk_size=16)
            return jnp.sum(cot(out.shape[0]) * jnp.sin(out))

        def ref(x, y, a, eps, p):
            out = dense.lse_jnp(dense.rbf_jnp(x, y, p), a, eps, axis)
            return jnp.sum(cot(out.shape[0]) * jnp.sin(out))
    elif op == "matmul":
        def eng(x, y, a, eps, p):
            return jnp.sum(jnp.sin(pw.matmul(rbf, x, y, a, axis=axis, params=p, chunk_size=16)))

        def ref(x, y, a, eps, p):
            k = dense.rbf_jnp(x, y, p)
            return jnp.sum(jnp.sin(k @ a if axis == 1 else k.T @ a))
    else:
        fn = pw.row_sums if axis == 1 else pw.col_sums

        def eng(x, y, a, eps, p):
            out = fn(rbf, x, y, a, params=p, chunk_size=16)
            return jnp.sum(cot(out.shape[0]) * out ** 2)

        def ref(x, y, a, eps, p):
            k = dense.rbf_jnp(x, y, p)
            out = k @ a if axis == 1 else k.T @ a
            return jnp.sum(cot(out.shape[0]) * out ** 2)
    return eng, ref


@pytest.mark.parametrize(("op", "axis"), [("logsumexp", 1), ("logsumexp", 0), ("matmul", 1), ("matmul", 0),
                                          ("sums", 1), ("sums", 0)])
def test_grad_matches_dense(x64, op, axis):
    """Gradients w.r.t. x, y, the potential / weights / vector, eps and the kernel's params, under jit."""
    pr = problem(37, 53, 3, seed=4)
    x, y, p = jnp.asarray(pr["x"]), jnp.asarray(pr["y"]), jax.tree.map(jnp.asarray, pr["p"])
    a = {("logsumexp", 1): pr["hy"], ("logsumexp", 0): pr["hx"], ("matmul", 1): pr["vy"],
         ("matmul", 0): pr["vx"], ("sums", 1): pr["wy"], ("sums", 0): pr["wx"]}[op, axis]
    eng, ref = _grad_case(op, axis)
    args = (x, y, jnp.asarray(a), jnp.asarray(0.6), p)
    val, got = jax.jit(jax.value_and_grad(eng, argnums=(0, 1, 2, 3, 4)))(*args)
    ref_val, want = jax.jit(jax.value_and_grad(ref, argnums=(0, 1, 2, 3, 4)))(*args)
    np.testing.assert_allclose(float(val), float(ref_val), **GTOL)
    for i, (g, w) in enumerate(zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), err_msg=f"leaf {i}", **GTOL)


def test_grad_with_minus_inf_tiles_is_finite(x64):
    """Zero-weight (``-inf`` potential) points filling whole tiles, as padding does: the gradient is the dense
    one (0 for those points), not NaN. Regression: ``jax.nn.logsumexp`` on a tile of only ``-inf`` has a NaN
    gradient, which the monoid's ``0 *`` did not cancel."""
    pr = problem(37, 53, 3, seed=5)
    x, y = jnp.asarray(pr["x"]), jnp.asarray(pr["y"])
    hy = jnp.asarray(pr["hy"]).at[:32].set(-jnp.inf)
    hx = jnp.asarray(pr["hx"]).at[16:32].set(-jnp.inf)

    def loss(lse, sqfn, x, y, hy, hx):
        return sum(jnp.sum(jnp.sin(lse(sqfn(x, y) if sqfn else None, x, y, h, axis)))
                   for axis, h in ((1, hy), (0, hx)))

    eng = lambda _, x, y, h, axis: pw.logsumexp(sq, x, y, h, eps=0.7, axis=axis, chunk_size=16)
    ref = lambda c, x, y, h, axis: dense.lse_jnp(c, h, 0.7, axis)
    got = jax.jit(jax.grad(lambda *a: loss(eng, None, *a), argnums=(0, 1, 2, 3)))(x, y, hy, hx)
    want = jax.jit(jax.grad(lambda *a: loss(ref, dense.sq_jnp, *a), argnums=(0, 1, 2, 3)))(x, y, hy, hx)
    for g, w in zip(got, want, strict=True):
        assert np.all(np.isfinite(np.asarray(g)))
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), **GTOL)

# ---------------------------------------------------------------------------------------------- reduce


def test_reduce_pytree_outputs_row_and_col_args(x64):
    """``reduce`` directly: a tile function returning a dict (a weighted sum and a count of close pairs)
    with row and column arguments; and the log-sum-exp combine of a custom tile."""
    pr = problem(37, 53, 3, seed=6)
    x, y, wx, wy = pr["x"], pr["y"], pr["wx"], pr["wy"]

    def tile(p, xt, yt, rt, ct, mask):
        k = jnp.where(mask[None], jnp.exp(-sq(xt, yt) / p), 0.0)
        close = jnp.where(mask[None], sq(xt, yt) < 1.0, False)
        return {"s": rt[:, None] * (k @ ct["w"][:, None]), "n": jnp.sum(close, 1).astype(xt.dtype)}

    out = pw.reduce(tile, x, y, wx, {"w": wy}, params=2.0, chunk_size=16)
    c = dense.sq_np(x, y)
    np.testing.assert_allclose(np.asarray(out["s"]), (wx * (np.exp(-c / 2.0) @ wy))[:, None], **TOL)
    np.testing.assert_array_equal(np.asarray(out["n"]), (c < 1.0).sum(1))

    def lse_tile(p, xt, yt, rt, ct, mask):
        z = jnp.where(mask[None], ct[None] - sq(xt, yt), -jnp.inf)
        return jax.nn.logsumexp(z, axis=1)

    out = pw.reduce(lse_tile, x, y, None, wy, combine="logsumexp", chunk_size=16)
    np.testing.assert_allclose(np.asarray(out), dense.lse_np(c, wy, 1.0, 1), **TOL)


def test_bad_arguments_raise():
    x, y = jnp.zeros((5, 2)), jnp.zeros((7, 2))
    with pytest.raises(ValueError, match=r"axis must be 0 or 1, got 2"):
        pw.logsumexp(sq, x, y, axis=2)
    with pytest.raises(ValueError, match=r"axis must be 0 or 1, got -1"):
        pw.matmul(sq, x, y, jnp.ones(7), axis=-1)
    with pytest.raises(ValueError, match=r"h must have shape \(5,\) for axis=0, got \(7,\)"):
        pw.logsumexp(sq, x, y, jnp.ones(7), axis=0)
    with pytest.raises(ValueError, match=r"v must have shape \(7,\) or \(7, k\) for axis=1, got \(5,\)"):
        pw.matmul(sq, x, y, jnp.ones(5))
    with pytest.raises(ValueError, match=r"v must have shape \(5,\) or \(5, k\) for axis=0"):
        pw.col_sums(sq, x, y, jnp.ones(7))
    with pytest.raises(ValueError, match=r"chunk_size must be in \[1, inf\], got 0"):
        pw.row_sums(sq, x, y, chunk_size=0)
    with pytest.raises(TypeError, match=r"chunk_size must be an int"):
        pw.row_sums(sq, x, y, chunk_size=2.0)
    with pytest.raises(ValueError, match=r"combine must be one of \['logsumexp', 'sum'\], got 'max'"):
        pw.reduce(lambda p, a, b, r, c, m: a[:, 0], x, y, combine="max")
