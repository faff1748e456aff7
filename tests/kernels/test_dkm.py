"""Deep kernel machines: NNGP at initialisation and as nu -> infinity; sparse with Z = X equals full; sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes.base import fit
from jaxbayes.kernels import dkm, dkm_layers, gp_posterior, log_marginal_likelihood, serial

LAYERS = dkm_layers(2, W_std=1.4, b_std=0.2)
NET = serial(*LAYERS)


def _data():
    x = jax.random.normal(jax.random.key(0), (14, 2))
    y = jnp.sin(2 * x[:, :1]) + 0.2 * x[:, 1:]
    xt = jax.random.normal(jax.random.key(1), (6, 2))
    return x, y, xt


@jax.jit
def _nngp_gp(x, y, xt, noise):
    # jitted: op-by-op the kernel recursions take ~10 s to dispatch on 2 cores
    return gp_posterior(NET.kernel_fn(x).nngp, y, NET.kernel_fn(xt, x).nngp, NET.kernel_fn(xt).nngp,
                        noise=noise, jitter=0.0)


def test_initialisation_is_the_nngp_gp(x64):
    x, y, xt = _data()
    ref = _nngp_gp(x, y, xt, 0.05)
    lml = jax.jit(lambda a, b: log_marginal_likelihood(NET.kernel_fn(a).nngp, b, noise=0.05, jitter=0.0))(x, y)
    for sparse in (False, True):
        m = dkm(LAYERS, sparse=sparse, noise=0.05, jitter=1e-9)
        p = jax.jit(m.init_params)(x, y)
        info = jax.jit(m.objective)(p, x, y)
        np.testing.assert_allclose(info.kls, 0.0, atol=1e-6)
        np.testing.assert_allclose(info.objective, lml, rtol=1e-6)
        pred = jax.jit(m.predict)(p, x, y, xt)
        np.testing.assert_allclose(pred.mean, ref.mean, atol=1e-5)
        np.testing.assert_allclose(pred.var, jnp.diagonal(ref.cov), atol=1e-5)


def test_sparse_with_training_inducing_points_equals_full(x64):
    x, y, xt = _data()
    full = dkm(LAYERS, sparse=False, noise=0.05, jitter=1e-9, nu=0.5)
    sparse = dkm(LAYERS, sparse=True, noise=0.05, jitter=1e-9, nu=0.5)
    state, infos = fit(jax.random.key(0), full, jax.jit(full.init)(jax.random.key(0), x, y), 30, data=(x, y))
    params, objs = state.params, infos.objective
    assert objs[-1] > objs[0] and bool(infos.finite.all())
    a, b = jax.jit(full.objective)(params, x, y), jax.jit(sparse.objective)(params, x, y)
    np.testing.assert_allclose(b.objective, a.objective, rtol=1e-5)
    np.testing.assert_allclose(b.kls, a.kls, rtol=1e-5, atol=1e-8)
    pa, pb = jax.jit(full.predict)(params, x, y, xt), jax.jit(sparse.predict)(params, x, y, xt)
    np.testing.assert_allclose(pb.mean, pa.mean, atol=1e-4)
    np.testing.assert_allclose(pb.var, pa.var, atol=1e-4)


def test_large_nu_pins_the_nngp(x64):
    """nu -> infinity: the NNGP Grams (the initialisation) maximise the objective along the likelihood's
    ascent direction; for small nu the objective increases away from them (representation learning)."""
    x, y, _ = _data()
    best = {}
    for nu in (1e6, 0.05):
        m = dkm(LAYERS, sparse=True, nu=nu, noise=0.05, learn_noise=False, jitter=1e-9)
        p = jax.jit(m.init_params)(x[::2], y)
        obj = jax.jit(lambda pp, m=m: m.objective(pp, x, y).objective)
        g = jax.grad(obj)(p)
        norm = jnp.sqrt(sum(jnp.sum(a * a) for a in g.chols))
        vals = []
        for eps in (0.0, 1e-4, 1e-3, 1e-2, 1e-1):
            pp = p._replace(chols=tuple(c + eps * d / norm for c, d in zip(p.chols, g.chols, strict=True)))
            vals.append(float(obj(pp)))
        best[nu] = int(np.argmax(vals))
    assert best[1e6] == 0
    assert best[0.05] == 4


def test_classification_and_sharded_prediction(mesh8):
    x = jax.random.normal(jax.random.key(2), (40, 2))
    labels = (x[:, 0] * x[:, 1] > 0).astype(jnp.int32)
    m = dkm(dkm_layers(1), likelihood="categorical", num_classes=2, nu=1.0)
    state, infos = jax.jit(lambda s0: fit(jax.random.key(3), m, s0, 120, data=(x, labels)))(
        jax.jit(m.init)(jax.random.key(0), x[::4], labels))
    p, objs = state.params, infos.objective
    assert objs[-1] > objs[0]
    pred = jax.jit(lambda pp, a: m.predict(pp, None, None, a, key=jax.random.key(4)))(p, x)
    assert float(jnp.mean(pred.probs.argmax(1) == labels)) > 0.7
    from jaxbayes.parallel import shard_batch

    xs = shard_batch(x, mesh8)
    sharded = jax.jit(lambda pp, a: m.predict(pp, None, None, a, key=jax.random.key(4)))(p, xs)
    np.testing.assert_allclose(sharded.probs, pred.probs, atol=1e-5)
    np.testing.assert_allclose(sharded.var, pred.var, rtol=1e-4, atol=1e-6)


def test_bad_inputs():
    with pytest.raises(ValueError, match="nu must be finite and > 0"):
        dkm(LAYERS, nu=-1.0)
    with pytest.raises(ValueError, match="needs sparse=True"):
        dkm(LAYERS, sparse=False, likelihood="categorical", num_classes=3)
    m = dkm(LAYERS)
    x, y, _ = _data()
    p = m.init_params(x[:4], y)
    with pytest.raises(ValueError, match="x1 must be finite"):
        m.objective(p, x.at[0, 0].set(jnp.nan), y)
    with pytest.raises(ValueError, match="per-point shape"):
        m.objective(p, jnp.ones((14, 3)), y)
    with pytest.raises(ValueError, match="nan_policy"):
        dkm(LAYERS, nan_policy="ignore")


def test_nonfinite_step_is_skipped_or_raised():
    x, y, _ = _data()
    bad = y.at[0, 0].set(jnp.nan)
    m = dkm(LAYERS, noise=0.05)
    state = jax.jit(m.init)(jax.random.key(0), x[:4], y)
    new, info = jax.jit(m.step)(jax.random.key(1), state, (x, bad))
    assert not bool(info.finite) and int(new.num_skipped) == 1 and int(new.nonfinite_step) == 0
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(a, b)
    strict = dkm(LAYERS, noise=0.05, nan_policy="raise")
    with pytest.raises(FloatingPointError, match="step 0"):
        fit(jax.random.key(1), strict, state, 3, data=(x, bad))


def test_old_forms_warn_and_give_the_same_numbers(x64):
    x, y, _ = _data()
    m = dkm(LAYERS, sparse=True, noise=0.05)
    with pytest.warns(DeprecationWarning, match="init_params"):
        p = m.init(x[::2], y)
    with pytest.warns(DeprecationWarning, match="base.fit"):
        params, objs = m.fit(p, x, y, num_steps=5)
    s0 = jax.jit(m.init)(jax.random.key(0), x[::2], y)
    state, infos = fit(jax.random.key(0), m, s0, 5, data=(x, y))
    np.testing.assert_allclose(objs, infos.objective, rtol=1e-12)
    with pytest.warns(DeprecationWarning, match=r"step\(key, state"):  # jitted: the warning fires at trace time
        old, _ = jax.jit(lambda s: m.step(s, x, y))(s0)
    new, _ = jax.jit(lambda s: m.step(None, s, (x, y)))(s0)
    np.testing.assert_allclose(old.params.chols[0], new.params.chols[0], rtol=1e-12)
