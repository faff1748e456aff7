"""Matrix-free GP (BBMM) on a KernelOperator against the dense Cholesky oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxbayes import kernels as K
from jaxbayes.kernels._bbmm import make_preconditioner
from jaxbayes.kernels._lanczos import pcg

PARAMS = {"lengthscale": 0.5, "variance": 1.3}
NOISE = 0.05


def _data(n, d=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 5, size=(n, d))
    y = np.sin(2 * x[:, 0]) + 0.2 * rng.normal(size=n)
    return jnp.asarray(x), jnp.asarray(y)


def _exact_logdet(k, noise):
    return 2 * jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(k + noise * jnp.eye(k.shape[0])))))


def test_operator_products_match_dense(x64):
    x, _ = _data(150, d=3)
    p = {"lengthscale": jnp.array([0.5, 1.0, 2.0]), "variance": 0.7}
    d = np.asarray(x)[:, None] - np.asarray(x)[None]
    r = np.sqrt(np.sum((d / np.array([0.5, 1.0, 2.0])) ** 2, -1))
    oracles = {K.rbf: 0.7 * np.exp(-0.5 * r**2),
               K.matern52: 0.7 * (1 + np.sqrt(5) * r + 5 * r**2 / 3) * np.exp(-np.sqrt(5) * r)}
    v = jnp.asarray(np.random.default_rng(1).normal(size=(150, 2)))
    for fn, dense in oracles.items():
        op = K.kernel_operator(fn, x, p, chunk_size=64)
        assert op.shape == (150, 150)
        np.testing.assert_allclose(op.dense(), dense, atol=1e-12)
        np.testing.assert_allclose(op.matmul(v), dense @ np.asarray(v), atol=1e-11)
        np.testing.assert_allclose(op.diagonal(), np.diagonal(dense), atol=1e-12)
        np.testing.assert_allclose(op.rows(jnp.array([3, 7])), dense[[3, 7]], atol=1e-12)
        cr = op.cross(x[:5])
        assert cr.shape == (5, 150)
        np.testing.assert_allclose(cr.matmul(v), dense[:5] @ np.asarray(v), atol=1e-11)
    net = K.serial(K.Dense(1, 1.5, 0.1), K.ReLU(), K.Dense(1, 1.5, 0.1))
    op = K.kernel_operator(K.nngp_pair_fn(net.kernel_fn), x, chunk_size=64)
    kd = net.kernel_fn(x, x).nngp
    np.testing.assert_allclose(op.matmul(v), kd @ v, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(op.diagonal(), jnp.diagonal(kd), rtol=1e-12)


def test_pivoted_cholesky_exact_at_full_rank(x64):
    x, _ = _data(80, d=2)
    op = K.kernel_operator(K.matern52, x, PARAMS)
    kd = op.dense()
    lfull = K.pivoted_cholesky(op, 80)
    np.testing.assert_allclose(lfull @ lfull.T, kd, atol=1e-10)
    # the trace error of the greedy low-rank factors decreases with the rank (Harbrecht et al., 2012)
    errs = [float(jnp.trace(kd) - jnp.sum(K.pivoted_cholesky(op, r) ** 2)) for r in (2, 8, 32)]
    assert errs[0] > errs[1] > errs[2] >= -1e-9


def test_pcg_fewer_iterations_with_preconditioner(x64):
    x, y = _data(600)
    op = K.kernel_operator(K.rbf, x, PARAMS, chunk_size=300)
    exact = jnp.linalg.solve(op.dense() + NOISE * jnp.eye(600), y)
    iters = {}
    for rank in (0, 30):
        pre = make_preconditioner(op, NOISE, rank)
        res = pcg(lambda v: op.matmul(v) + NOISE * v, y[:, None], pre.solve, tol=1e-10, max_iterations=2000)
        np.testing.assert_allclose(res.x[:, 0], exact, atol=1e-7)
        iters[rank] = int(res.n_iters[0])
    assert iters[30] < iters[0] / 2, iters


@pytest.fixture(scope="module")
def big():
    with jax.enable_x64(True):  # float64 arrays; the context closes here so x64 does not leak into other tests
        x, y = _data(2000)
        op = K.kernel_operator(K.rbf, x, PARAMS, chunk_size=1000)
        return x, y, op, op.dense()


def test_posterior_matches_cholesky_n2000(x64, big):
    x, y, op, kd = big
    solver = K.CG(tol=1e-11, preconditioner_rank=60)
    cond = jax.jit(lambda o, y: K.gp_condition(o, y, noise=NOISE, solver=solver))(op, y)
    assert bool(cond.ok)
    xt = jnp.linspace(-0.5, 5.5, 9)[:, None]
    post = K.gp_predict(cond, op.cross(xt), jnp.full(9, PARAMS["variance"]), full_cov=False, tol=1e-11)
    dense = K.gp_posterior(kd, y, K.rbf(xt, x, PARAMS), K.rbf(xt, xt, PARAMS), noise=NOISE)
    np.testing.assert_allclose(post.mean, dense.mean, atol=1e-6)
    np.testing.assert_allclose(post.var, dense.var, atol=1e-6)
    full = K.gp_predict(cond, op.cross(xt), K.rbf(xt, xt, PARAMS), full_cov=True, tol=1e-11)
    np.testing.assert_allclose(full.cov, dense.cov, atol=1e-6)


def test_lml_matches_cholesky_n2000(x64, big):
    x, y, op, kd = big
    solver = K.CG(tol=1e-10, preconditioner_rank=60, num_probes=16)
    y2 = jnp.stack([y, jnp.cos(x[:, 0])], 1)
    est = jax.jit(lambda o, y, k: K.lml_and_stderr(o, y, noise=NOISE, solver=solver, key=k))(op, y2,
                                                                                            jax.random.key(0))
    exact = K.log_marginal_likelihood(kd, y2, noise=NOISE)
    err = abs(float(est.lml - exact))
    assert bool(est.converged)
    assert err < 1e-3 * abs(float(exact)), (float(est.lml), float(exact))
    assert err < 4 * float(est.stderr) + 1e-6, (err, float(est.stderr))
    one = K.log_marginal_likelihood(op, y, noise=NOISE, solver=solver, key=jax.random.key(1))
    assert abs(float(one - K.log_marginal_likelihood(kd, y, noise=NOISE))) < 1e-3 * abs(float(exact))


def test_logdet_estimator_unbiased(x64):
    # a weak preconditioner (rank 3) so that the probe spread is large and any bias would show
    x, y = _data(200)
    op = K.kernel_operator(K.rbf, x, PARAMS)
    exact = _exact_logdet(op.dense(), NOISE)
    solver = K.CG(tol=1e-8, preconditioner_rank=3, num_probes=8, lanczos_iterations=60)
    f = jax.jit(jax.vmap(lambda k: K.lml_and_stderr(op, y, noise=NOISE, solver=solver, key=k)))
    est = f(jax.random.split(jax.random.key(2), 16))
    mean = jnp.mean(est.logdet)
    se = jnp.std(est.logdet, ddof=1) / np.sqrt(16)
    assert float(se) > 1e-3  # the test has power
    assert abs(float(mean - exact)) < 4 * float(se), (float(mean), float(exact), float(se))
    # the stated per-set standard error agrees with the spread across sets (within a factor 2)
    ratio = float(jnp.mean(est.logdet_stderr) / jnp.std(est.logdet, ddof=1))
    assert 0.5 < ratio < 2.0, ratio


def test_lml_unbiased_at_a_loose_tol(x64):
    # tol 1e-3 with a good preconditioner: y's solve stops after 2-3 iterations, but the probes must still run
    # CG.min_lanczos_iterations Lanczos steps (the quadrature's nodes; Gauss quadrature of log is biased upwards,
    # which no probe average removes); the lml over 16 probe seeds must match the dense Cholesky lml within 4
    # standard errors of their mean (SE = std / sqrt(16)), the solve error at tol 1e-3 included
    x, y = _data(200)
    op = K.kernel_operator(K.rbf, x, PARAMS)
    exact = K.log_marginal_likelihood(op.dense(), y, noise=NOISE)
    solver = K.CG(tol=1e-3, num_probes=8)
    est = jax.jit(jax.vmap(lambda k: K.lml_and_stderr(op, y, noise=NOISE, solver=solver, key=k)))(
        jax.random.split(jax.random.key(5), 16))
    assert bool(jnp.all(est.n_iters >= 6)), est.n_iters  # 10, or fewer where a probe reached the rounding level
    se = float(jnp.std(est.lml, ddof=1)) / 4.0
    assert se > 1e-3  # the test has power
    assert abs(float(jnp.mean(est.lml) - exact)) < 4 * se, (float(jnp.mean(est.lml)), float(exact), se)


@pytest.mark.parametrize("rank", [5, 60])
def test_lml_gradient_within_mc_error(x64, rank):
    # rank 5: a noisy estimator, checked by its z-score; rank 60: P ~ Khat, the estimate is near exact
    x, y = _data(300)
    solver = K.CG(tol=1e-10, preconditioner_rank=rank, num_probes=8)

    def lml(theta, k):
        p = {"lengthscale": jnp.exp(theta[0]), "variance": jnp.exp(theta[1])}
        return K.log_marginal_likelihood(K.kernel_operator(K.rbf, x, p), y, noise=jnp.exp(theta[2]), solver=solver,
                                         key=k)

    def exact(theta):
        p = {"lengthscale": jnp.exp(theta[0]), "variance": jnp.exp(theta[1])}
        return K.log_marginal_likelihood(K.rbf(x, x, p), y, noise=jnp.exp(theta[2]))

    theta = jnp.log(jnp.array([PARAMS["lengthscale"], PARAMS["variance"], NOISE]))
    g = jax.jit(jax.vmap(jax.grad(lml), (None, 0)))(theta, jax.random.split(jax.random.key(3), 16))
    g_exact = jax.grad(exact)(theta)
    mean, se = jnp.mean(g, 0), jnp.std(g, 0, ddof=1) / 4.0
    # z-score < 4, with a floor at the CG tolerance's level for the (near-exact) rank-60 estimate
    assert bool(jnp.all(jnp.abs(mean - g_exact) < 4 * se + 1e-7 * jnp.abs(g_exact))), (mean, g_exact, se)
    if rank == 5:
        assert bool(jnp.all(se > 1e-3 * jnp.abs(g_exact)))  # the z test has power
    else:
        np.testing.assert_allclose(g, jnp.broadcast_to(g_exact, g.shape), rtol=1e-6)


def test_bad_input_raises():
    x, y = _data(20)
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    op = K.kernel_operator(K.rbf, x, PARAMS)
    with pytest.raises(ValueError, match="lengthscale"):
        K.kernel_operator(K.rbf, x, {"lengthscale": -1.0, "variance": 1.0})
    with pytest.raises(ValueError, match="lengthscale"):
        K.kernel_operator(K.rbf, x, {"lengthscale": jnp.ones(3), "variance": 1.0})
    with pytest.raises(ValueError, match="variance"):
        K.kernel_operator(K.matern52, x, {"lengthscale": 1.0, "variance": 0.0})
    with pytest.raises(ValueError, match="params"):
        K.kernel_operator(K.rbf, x, {"scale": 1.0})
    with pytest.raises(ValueError, match="x"):
        K.kernel_operator(K.rbf, x[:, 0], PARAMS)
    with pytest.raises(ValueError, match="noise"):
        K.gp_condition(op, y, noise=0.0, solver="cg")
    with pytest.raises(ValueError, match="noise"):
        K.log_marginal_likelihood(op, y, noise=-1.0, solver="cg", key=jax.random.key(0))
    with pytest.raises(ValueError, match="y_train"):
        K.gp_condition(op, y[:5], noise=0.1, solver="cg")
    with pytest.raises(ValueError, match="solver"):
        K.gp_condition(op, y, noise=0.1)  # the default Cholesky needs a matrix
    with pytest.raises(ValueError, match="key"):
        K.log_marginal_likelihood(op, y, noise=0.1, solver="cg")
    with pytest.raises(ValueError, match="solver"):
        K.log_marginal_likelihood(op.dense(), y, noise=0.1, solver="cg")
    with pytest.raises(ValueError, match="x_test"):
        op.cross(jnp.zeros((3, 2)))
    cond = K.gp_condition(op, y, noise=0.1, solver="cg")
    with pytest.raises(ValueError, match="k_test_test"):
        K.gp_predict(cond, op.cross(x[:3]), jnp.ones(4), full_cov=False)
    with pytest.raises(ValueError, match="cross"):
        K.gp_predict(cond, op.dense()[:3], jnp.ones(3), full_cov=False)
    for bad in (dict(preconditioner_rank=-1), dict(num_probes=0), dict(lanczos_iterations=0),
                dict(min_lanczos_iterations=0)):
        with pytest.raises(ValueError):
            K.CG(**bad)


def test_sharded_inputs_equal_unsharded(x64):
    # n = 80 (10 rows a device): the sharded path must equal the plain one to rounding, and the plain one the
    # dense oracle (the posterior mean to the CG tolerance; the lml within 4 of its stated standard errors)
    x, y = _data(80)
    mesh = jax.make_mesh((8,), ("data",))
    xs = jax.device_put(x, NamedSharding(mesh, P("data", None)))
    solver = K.CG(tol=1e-10, preconditioner_rank=20, num_probes=4)
    xt = jnp.linspace(0.0, 5.0, 8)[:, None]
    out = {}
    for name, xx in (("plain", x), ("sharded", xs)):
        op = K.kernel_operator(K.rbf, xx, PARAMS, chunk_size=None)
        cond = K.gp_condition(op, y, noise=NOISE, solver=solver)
        mean = K.gp_predict(cond, op.cross(xt), jnp.full(8, PARAMS["variance"]), full_cov=False, tol=1e-10).mean
        out[name] = (mean, K.lml_and_stderr(op, y, noise=NOISE, solver=solver, key=jax.random.key(4)))
    np.testing.assert_allclose(out["sharded"][0], out["plain"][0], atol=1e-9)
    np.testing.assert_allclose(out["sharded"][1].lml, out["plain"][1].lml, rtol=1e-9)
    kd = K.rbf(x, x, PARAMS)
    dense = K.gp_posterior(kd, y, K.rbf(xt, x, PARAMS), K.rbf(xt, xt, PARAMS), noise=NOISE)
    np.testing.assert_allclose(out["plain"][0], dense.mean, atol=1e-7)
    est = out["plain"][1]
    assert abs(float(est.lml - K.log_marginal_likelihood(kd, y, noise=NOISE))) < 4 * float(est.stderr) + 1e-7


def test_student_t_on_an_operator_matches_the_dense_oracle(x64):
    # a full-rank preconditioner makes the solves exact, so the log density, its gradient and the posterior
    # must equal the Cholesky path to the CG tolerance; a rank-5 one must stay within its Monte-Carlo error
    x, y = _data(120)
    xt = jnp.linspace(-0.5, 5.5, 7)[:, None]
    exact_solver = K.CG(tol=1e-11, preconditioner_rank=120, num_probes=4)

    def lml(theta, solver, key, dense=False):
        p = {"lengthscale": jnp.exp(theta[0]), "variance": 1.0}
        k = K.rbf(x, x, p) if dense else K.kernel_operator(K.rbf, x, p)
        kw = {} if dense else {"solver": solver, "key": key}
        return K.student_t_log_marginal_likelihood(k, y, alpha=jnp.exp(theta[1]), beta=jnp.exp(theta[2]),
                                                   noise=NOISE, **kw)

    theta = jnp.log(jnp.array([0.5, 2.0, 3.0]))
    exact = lml(theta, None, None, dense=True)
    np.testing.assert_allclose(lml(theta, exact_solver, jax.random.key(0)), exact, rtol=1e-8)
    np.testing.assert_allclose(jax.grad(lml)(theta, exact_solver, jax.random.key(0)),
                               jax.grad(lambda t: lml(t, None, None, dense=True))(theta), rtol=1e-6)
    weak = K.CG(tol=1e-10, preconditioner_rank=5, num_probes=16)
    est = lml(theta, weak, jax.random.key(1))
    se = 0.5 * float(K.lml_and_stderr(K.kernel_operator(K.rbf, x, {"lengthscale": 0.5, "variance": 1.0}), y,
                                      noise=NOISE, solver=weak, key=jax.random.key(1)).logdet_stderr)
    assert abs(float(est - exact)) < 4 * se + 1e-8, (float(est), float(exact), se)

    op = K.kernel_operator(K.rbf, x, PARAMS)
    kd, kx, kss = op.dense(), K.rbf(xt, x, PARAMS), K.rbf(xt, xt, PARAMS)
    for full_cov in (True, False):
        prior = kss if full_cov else jnp.diagonal(kss)
        dense = K.student_t_posterior(kd, y, kx, prior, alpha=2.0, beta=3.0, noise=NOISE, full_cov=full_cov)
        mf = K.student_t_posterior(op, y, op.cross(xt), prior, alpha=2.0, beta=3.0, noise=NOISE,
                                   full_cov=full_cov, solver=K.CG(tol=1e-11, preconditioner_rank=60), tol=1e-11)
        assert bool(mf.ok)
        for field in ("mean", "scale", "cov", "df", "alpha", "beta"):
            np.testing.assert_allclose(getattr(mf, field), getattr(dense, field), atol=1e-7, err_msg=field)
    with pytest.raises(ValueError, match="op.cross"):
        K.student_t_posterior(op, y, kx, kss, alpha=2.0, beta=3.0, noise=NOISE)
    with pytest.raises(ValueError, match="needs key="):
        K.student_t_log_marginal_likelihood(op, y, alpha=2.0, beta=3.0, noise=NOISE)
    with pytest.raises(ValueError, match="kernel_operator"):
        K.student_t_log_marginal_likelihood(kd, y, alpha=2.0, beta=3.0, noise=NOISE, solver="cg")
