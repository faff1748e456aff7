"""GP inference vs explicit linear algebra and scipy; jitter policy; CG; batched/sharded prediction."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxbayes.kernels import (
    Dense,
    ReLU,
    cg_solve,
    fit_hyperparameters,
    gp_condition,
    gp_posterior,
    gp_predict,
    gp_predict_batched,
    gram,
    infinite_ensemble_posterior,
    log_marginal_likelihood,
    serial,
)

NET = serial(Dense(1, 1.5, 0.2), ReLU(), Dense(1, 1.5, 0.2), ReLU(), Dense(1, 1.0, 0.1))


def _data(key, n=12, m=5):
    k1, k2 = jax.random.split(key)
    x = jax.random.normal(k1, (n, 2))
    xt = jax.random.normal(k2, (m, 2))
    y = jnp.sin(2 * x[:, 0]) + 0.3 * x[:, 1]
    return x, y, xt


def test_posterior_and_marginal_likelihood_vs_numpy(key, x64):
    x, y, xt = _data(key)
    k, kx, kss = (np.asarray(NET.kernel_fn(a, b).nngp) for a, b in ((x, None), (xt, x), (xt, None)))
    noise = 0.1
    post = gp_posterior(k, y, kx, kss, noise=noise, jitter=0.0)
    a = k + noise * np.eye(len(k))
    np.testing.assert_allclose(post.mean, kx @ np.linalg.solve(a, np.asarray(y)), rtol=1e-10)
    np.testing.assert_allclose(post.cov, kss - kx @ np.linalg.solve(a, kx.T), rtol=1e-9, atol=1e-12)
    lml = log_marginal_likelihood(k, y, noise=noise, jitter=0.0)
    np.testing.assert_allclose(lml, stats.multivariate_normal(np.zeros(len(k)), a).logpdf(np.asarray(y)),
                               rtol=1e-10)
    # two output columns = sum of the two log likelihoods; mean per column
    y2 = jnp.stack([y, -2 * y], 1)
    lml2 = log_marginal_likelihood(k, y2, noise=noise, jitter=0.0)
    ref2 = sum(stats.multivariate_normal(np.zeros(len(k)), a).logpdf(np.asarray(c)) for c in y2.T)
    np.testing.assert_allclose(lml2, ref2, rtol=1e-10)
    diag = gp_posterior(k, y2, kx, np.diag(kss), noise=noise, full_cov=False, jitter=0.0)
    np.testing.assert_allclose(diag.mean[:, 1], -2 * post.mean, rtol=1e-10)
    np.testing.assert_allclose(diag.var, np.diag(post.cov), rtol=1e-9, atol=1e-12)


def test_cg_matches_cholesky(key, x64):
    x, y, xt = _data(key, n=40)
    k, kx, kss = (NET.kernel_fn(a, b).nngp for a, b in ((x, None), (xt, x), (xt, None)))
    ref = gp_posterior(k, y, kx, kss, noise=0.05, jitter=0.0)
    cg = gp_posterior(k, y, kx, kss, noise=0.05, jitter=0.0, solver="cg")
    np.testing.assert_allclose(cg.mean, ref.mean, atol=1e-5)
    np.testing.assert_allclose(cg.cov, ref.cov, atol=1e-5)
    assert bool(cg.ok)
    r = jax.jit(lambda a, b: cg_solve(a, b, tol=1e-10))(k + 0.05 * jnp.eye(40), y)
    assert bool(r.converged) and 0 < int(r.n_iters) <= 400
    np.testing.assert_allclose(r.x, np.linalg.solve(k + 0.05 * np.eye(40), y), rtol=1e-7)


def test_condition_errors(x64):
    neg = -jnp.eye(3)
    with pytest.raises(ValueError, match="k_train_train is not positive definite even after 3 jitter"):
        gp_condition(neg, jnp.ones(3), max_tries=3)
    with pytest.raises(ValueError, match="noise must be finite and >= 0"):
        gp_condition(jnp.eye(2), jnp.ones(2), noise=-1.0)
    with pytest.raises(ValueError, match="k_train_train must be finite"):
        gp_condition(jnp.eye(2).at[0, 0].set(jnp.nan), jnp.ones(2))
    with pytest.raises(ValueError, match="y_train must have 2 rows"):
        gp_condition(jnp.eye(2), jnp.ones(3))


def test_batched_and_sharded_prediction(key, mesh8, x64):
    x, y, xt = _data(key, n=20, m=13)
    km = gram(NET.kernel_fn, x)
    cond = gp_condition(km.nngp, y, noise=0.1)
    ref = gp_predict(cond, NET.kernel_fn(xt, x).nngp, jnp.diagonal(NET.kernel_fn(xt).nngp), full_cov=False)
    one = gp_predict_batched(NET.kernel_fn, cond, x, xt, chunk_size=4)
    eight = jax.jit(lambda c, a, b: gp_predict_batched(NET.kernel_fn, c, a, b, mesh=mesh8))(cond, x, xt)
    for out in (one, eight):
        np.testing.assert_allclose(out.mean, ref.mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out.var, ref.var, rtol=1e-8, atol=1e-12)


def test_sharded_gram_equals_unbatched(key, mesh8, x64):
    x, _, xt = _data(key, n=37, m=11)
    ref = NET.kernel_fn(x, xt)
    ref_sym = NET.kernel_fn(x)
    for mesh in (None, mesh8):
        out = jax.jit(lambda a, b, m=mesh: gram(NET.kernel_fn, a, b, chunk_size=4, mesh=m))(x, xt)
        np.testing.assert_allclose(np.asarray(out.nngp), ref.nngp, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(np.asarray(out.ntk), ref.ntk, rtol=1e-12, atol=1e-14)
        sym = jax.jit(lambda a, m=mesh: gram(NET.kernel_fn, a, chunk_size=4, mesh=m))(x)
        np.testing.assert_allclose(np.asarray(sym.nngp), ref_sym.nngp, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(np.asarray(sym.ntk), ref_sym.ntk, rtol=1e-12, atol=1e-14)


def test_infinite_ensemble(key, x64):
    x, y, xt = _data(key)
    ktt, kxt, kxx = NET.kernel_fn(x), NET.kernel_fn(xt, x), NET.kernel_fn(xt)
    nngp = infinite_ensemble_posterior(ktt, y, kxt, kxx, get="nngp")
    ref = gp_posterior(ktt.nngp, y, kxt.nngp, kxx.nngp, jitter=0.0)
    np.testing.assert_allclose(nngp.mean, ref.mean, rtol=1e-8)
    ntk = infinite_ensemble_posterior(ktt, y, kxt, kxx, get="ntk")
    t, tx, k, kx, kss = (np.asarray(a) for a in (ktt.ntk, kxt.ntk, ktt.nngp, kxt.nngp, kxx.nngp))
    tinv = np.linalg.inv(t)
    np.testing.assert_allclose(ntk.mean, tx @ tinv @ np.asarray(y), rtol=1e-7)
    cov = kss - tx @ tinv @ kx.T - kx @ tinv @ tx.T + tx @ tinv @ k @ tinv @ tx.T
    np.testing.assert_allclose(ntk.cov, cov, rtol=1e-6, atol=1e-8)
    # a linear model (one Dense layer) has NTK = NNGP: the ensemble is the GP posterior
    lin = Dense(1, 1.3, 0.4)
    a, b, c = lin.kernel_fn(x[:2]), lin.kernel_fn(xt, x[:2]), lin.kernel_fn(xt)
    e = infinite_ensemble_posterior(a, y[:2], b, c, get="ntk")
    g = gp_posterior(a.nngp, y[:2], b.nngp, c.nngp, jitter=0.0)
    np.testing.assert_allclose(e.cov, g.cov, atol=1e-10)


def test_fit_noise_by_marginal_likelihood(key, x64):
    from scipy.optimize import minimize_scalar

    x, y, _ = _data(key, n=30)
    y = y + 0.3 * jax.random.normal(jax.random.key(7), y.shape)
    k = NET.kernel_fn(x).nngp
    loss = lambda p: -log_marginal_likelihood(k, y, noise=jnp.exp(p), jitter=1e-9)
    res = fit_hyperparameters(loss, jnp.array(0.0), num_steps=400)
    best = minimize_scalar(lambda p: float(loss(p)), bounds=(-5, 2), method="bounded").x
    np.testing.assert_allclose(res.params, best, atol=2e-2)
    assert res.losses[-1] < res.losses[0]


def _rbf(x, lengthscale=0.7):
    d = x[:, None, :] - x[None, :, :]
    return jnp.exp(-0.5 * jnp.sum(d * d, -1) / lengthscale**2)


def _rbf_problem(n=15, m=6):
    rng = np.random.default_rng(3)
    x = rng.uniform(-2, 2, size=(n, 1))
    xt = rng.uniform(-2, 2, size=(m, 1))
    y = np.sin(2 * x[:, 0]) + 0.1 * rng.normal(size=n)
    return x, y, xt


def test_well_conditioned_problem_is_exact_without_jitter(x64):
    # defaults: nothing is added to K + noise I, so the answers equal plain linear algebra to 1e-10
    x, y, xt = _rbf_problem()
    noise = 0.1
    k = np.asarray(_rbf(jnp.asarray(x)))
    allx = np.asarray(_rbf(jnp.asarray(np.concatenate([xt, x]))))
    kx, kss = allx[:6, 6:], allx[:6, :6]
    a = k + noise * np.eye(15)
    lml = log_marginal_likelihood(k, y, noise=noise)
    np.testing.assert_allclose(lml, stats.multivariate_normal(np.zeros(15), a).logpdf(y), rtol=1e-10)
    post = gp_posterior(k, y, kx, kss, noise=noise)
    cov = kss - kx @ np.linalg.solve(a, kx.T)
    np.testing.assert_allclose(post.mean, kx @ np.linalg.solve(a, y), rtol=1e-10)
    np.testing.assert_allclose(post.cov, cov, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(post.var, np.diag(cov), rtol=1e-10, atol=1e-13)
    assert float(post.jitter) == 0.0 and bool(post.ok)
    # marginal posterior: the variances are named var; cov is None (reading it warns and gives var)
    diag = gp_posterior(k, y, kx, np.diag(kss), noise=noise, full_cov=False)
    np.testing.assert_allclose(diag.var, np.diag(cov), rtol=1e-10, atol=1e-13)
    assert diag._asdict()["cov"] is None and float(diag.jitter) == 0.0
    with pytest.warns(DeprecationWarning, match="renamed GPPosterior.var"):
        np.testing.assert_array_equal(diag.cov, diag.var)
    cond = gp_condition(k, y, noise=noise)
    assert float(cond.jitter) == 0.0
    np.testing.assert_allclose(cond.alpha, np.linalg.solve(a, y), rtol=1e-10)


def test_singular_gram_is_retried_with_jitter(x64):
    # duplicated points and no noise: K is singular and does not factor as it is; the retry adds a jitter
    x, y, xt = _rbf_problem()
    xd = np.concatenate([x[:1], x[:1], x[1:]])
    yd = np.concatenate([y[:1], y])
    k = np.asarray(_rbf(jnp.asarray(xd)))
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(k)
    cond = gp_condition(k, yd)
    j = float(cond.jitter)
    assert bool(cond.ok) and j > 0 and j <= 1e-4
    np.testing.assert_allclose(cond.chol @ cond.chol.T, k + j * np.eye(16), atol=1e-12)
    lml = log_marginal_likelihood(k, yd)
    ref = stats.multivariate_normal(np.zeros(16), k + j * np.eye(16)).logpdf(yd)
    np.testing.assert_allclose(lml, ref, rtol=1e-6)  # ill-conditioned (jitter ~1e-8): a looser oracle
    # under vmap: the singular problem gets a jitter, the well-conditioned one none and its exact value
    kw = np.asarray(_rbf(jnp.asarray(xd))) + 0.1 * np.eye(16)
    out = jax.jit(jax.vmap(lambda kk: gp_condition(kk, yd)))(jnp.stack([jnp.asarray(k), jnp.asarray(kw)]))
    assert float(out.jitter[0]) > 0 and float(out.jitter[1]) == 0.0 and bool(jnp.all(out.ok))
    np.testing.assert_allclose(out.alpha[1], np.linalg.solve(kw, yd), rtol=1e-10)


def test_marginal_likelihood_gradients_match_finite_differences(x64):
    x, y, _ = _rbf_problem()

    def exact(p):  # the numpy oracle (no jitter)
        k = np.asarray(_rbf(jnp.asarray(x), np.exp(p[0]))) + np.exp(p[1]) * np.eye(15)
        return stats.multivariate_normal(np.zeros(15), k).logpdf(y)

    f = lambda p: log_marginal_likelihood(_rbf(jnp.asarray(x), jnp.exp(p[0])), y, noise=jnp.exp(p[1]))
    p = np.array([np.log(0.7), np.log(0.1)])
    grad = jax.jit(jax.grad(f))(jnp.asarray(p))
    h = 1e-5
    fd = [(exact(p + h * e) - exact(p - h * e)) / (2 * h) for e in np.eye(2)]
    np.testing.assert_allclose(grad, fd, rtol=1e-7)
    # forward mode and vmap over hyper-parameters
    _, tangent = jax.jvp(f, (jnp.asarray(p),), (jnp.array([1.0, 0.0]),))
    np.testing.assert_allclose(tangent, fd[0], rtol=1e-7)
    ps = jnp.stack([jnp.asarray(p), jnp.asarray(p) + 0.1])
    np.testing.assert_allclose(jax.vmap(f)(ps), [exact(np.asarray(q)) for q in ps], rtol=1e-10)
