"""Two-sample metrics (jaxbayes.sde._metrics): closed forms, a dense float64 oracle, sharding and gradients.

Closed forms (repeated draws; the tolerance is 5 standard errors of the mean of the replicates):

* RBF MMD^2 between N(mu1, s1^2 I_d) and N(mu2, s2^2 I_d): for Z ~ N(delta, s^2 I_d),
  E exp(-|Z|^2 / (2h^2)) = (h^2 / (h^2 + s^2))^(d/2) exp(-|delta|^2 / (2 (h^2 + s^2))), with
  X - X' ~ N(0, 2 s1^2 I), Y - Y' ~ N(0, 2 s2^2 I), X - Y ~ N(mu1 - mu2, (s1^2 + s2^2) I);
* energy distance in 1-D: for Z ~ N(d, s^2), E|Z| = s sqrt(2/pi) exp(-d^2 / (2 s^2)) + d (1 - 2 Phi(-d/s)).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from scipy.spatial.distance import cdist, pdist
from scipy.stats import norm

from jaxbayes import ot, pairwise, sde

REPS = 32


def gaussian_sets(key, reps, n, m, mu1, s1, mu2, s2):
    kx, ky = jax.random.split(key)
    d = len(mu1)
    x = jnp.asarray(mu1) + s1 * jax.random.normal(kx, (reps, n, d))
    y = jnp.asarray(mu2) + s2 * jax.random.normal(ky, (reps, m, d))
    return x, y


def within_se(values, exact, k=5.0):
    values = np.asarray(values, np.float64)
    se = values.std(ddof=1) / math.sqrt(values.size)
    err = abs(values.mean() - exact)
    assert err < k * se, f"mean {values.mean():.5f} vs exact {exact:.5f}: {err:.2e} >= {k} SE = {k * se:.2e}"
    print(f"mean {values.mean():.6f} exact {exact:.6f} err {err:.2e} se {se:.2e}")
    return err, se


def rbf_mmd2_exact(mu1, s1, mu2, s2, h):
    d = len(mu1)
    e = lambda delta2, s2_: (h**2 / (h**2 + s2_)) ** (d / 2) * math.exp(-delta2 / (2 * (h**2 + s2_)))  # noqa: E731
    delta2 = float(np.sum((np.asarray(mu1) - np.asarray(mu2)) ** 2))
    return e(0.0, 2 * s1**2) + e(0.0, 2 * s2**2) - 2 * e(delta2, s1**2 + s2**2)


def mean_abs_normal(d, s):
    return s * math.sqrt(2 / math.pi) * math.exp(-(d**2) / (2 * s**2)) + d * (1 - 2 * norm.cdf(-d / s))


def energy_exact_1d(m1, s1, m2, s2):
    return (2 * mean_abs_normal(m2 - m1, math.hypot(s1, s2)) - mean_abs_normal(0.0, math.sqrt(2) * s1)
            - mean_abs_normal(0.0, math.sqrt(2) * s2))


@pytest.mark.parametrize("same", [False, True])
def test_mmd2_rbf_matches_gaussian_closed_form(same):
    mu1, s1, h = (0.0, 0.0), 1.0, 1.2
    mu2, s2 = ((0.0, 0.0), 1.0) if same else ((1.0, -0.5), 1.4)
    x, y = gaussian_sets(jax.random.key(1), REPS, 400, 350, mu1, s1, mu2, s2)
    vals = jax.jit(jax.vmap(lambda a, b: sde.mmd2(a, b, bandwidth=h, chunk_size=128)))(x, y)
    exact = rbf_mmd2_exact(mu1, s1, mu2, s2, h)
    _, se = within_se(vals, exact)
    if not same:
        assert exact > 0.05 and 5 * se < 0.3 * exact  # the tolerance is informative


@pytest.mark.parametrize("same", [False, True])
def test_energy_distance_matches_1d_gaussian_closed_form(same):
    (m1, s1), (m2, s2) = (0.0, 1.0), ((0.0, 1.0) if same else (0.7, 1.3))
    x, y = gaussian_sets(jax.random.key(2), REPS, 400, 350, (m1,), s1, (m2,), s2)
    vals = jax.jit(jax.vmap(lambda a, b: sde.energy_distance(a, b, chunk_size=128)))(x, y)
    exact = energy_exact_1d(m1, s1, m2, s2)
    _, se = within_se(vals, exact)
    if not same:
        assert exact > 0.05 and 5 * se < 0.3 * exact
    else:
        assert exact == 0.0


def dense_mmd2(x, y, h, kernel, unbiased):
    k = (lambda r2: np.exp(-r2 / (2 * h * h))) if kernel == "rbf" else (lambda r2: 1 / np.sqrt(1 + r2 / h**2))
    kxx, kyy, kxy = k(cdist(x, x, "sqeuclidean")), k(cdist(y, y, "sqeuclidean")), k(cdist(x, y, "sqeuclidean"))
    n, m = len(x), len(y)
    if unbiased:
        return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                - 2 * kxy.mean())
    return kxx.mean() + kyy.mean() - 2 * kxy.mean()


def dense_energy(x, y, unbiased):
    n, m = len(x), len(y)
    dxx, dyy = cdist(x, x).sum(), cdist(y, y).sum()
    nxx, nyy = (n * (n - 1), m * (m - 1)) if unbiased else (n * n, m * m)
    return 2 * cdist(x, y).mean() - dxx / nxx - dyy / nyy


@pytest.fixture
def small_sets():
    rng = np.random.default_rng(0)
    return rng.normal(size=(50, 3)) + 2.0, rng.normal(size=(37, 3)) * 1.3 + 2.5


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
@pytest.mark.parametrize("unbiased", [True, False])
def test_mmd2_equals_dense_oracle(x64, small_sets, kernel, unbiased):
    x, y = small_sets
    got = sde.mmd2(jnp.asarray(x), jnp.asarray(y), bandwidth=1.3, kernel=kernel, unbiased=unbiased, chunk_size=16)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(float(got), dense_mmd2(x, y, 1.3, kernel, unbiased), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("unbiased", [True, False])
def test_energy_distance_equals_dense_oracle(x64, small_sets, unbiased):
    x, y = small_sets
    got = sde.energy_distance(jnp.asarray(x), jnp.asarray(y), unbiased=unbiased, chunk_size=16)
    np.testing.assert_allclose(float(got), dense_energy(x, y, unbiased), rtol=1e-6, atol=1e-12)


def test_median_bandwidth_is_the_median_pairwise_distance(x64, small_sets):
    x, y = small_sets
    h = sde.median_bandwidth(jnp.asarray(x), jnp.asarray(y))
    np.testing.assert_allclose(float(h), np.median(pdist(np.vstack([x, y]))), rtol=1e-10)
    np.testing.assert_allclose(float(sde.mmd2(x, y, chunk_size=16)),
                               dense_mmd2(x, y, float(h), "rbf", True), rtol=1e-6)
    # A subsample (evenly spaced rows of each set) bounds the cost; it stays deterministic.
    sub = sde.median_bandwidth(x, y, max_points=20)
    np.testing.assert_allclose(float(sub), float(sde.median_bandwidth(x, y, max_points=20)))
    assert float(sde.median_bandwidth(np.ones((3, 2)), np.ones((2, 2)))) == 1.0  # degenerate: falls back to 1


def dense_jnp(kind):
    def dist2(a, b):
        return jnp.sum((a[:, None] - b[None]) ** 2, -1)

    def safe_sqrt(r2):
        pos = r2 > 0
        return jnp.where(pos, jnp.sqrt(jnp.where(pos, r2, 1.0)), 0.0)

    def f(x, y):
        n, m = len(x), len(y)
        if kind == "mmd2":
            k = lambda a, b: jnp.exp(-dist2(a, b) / (2 * 1.3**2))  # noqa: E731
            return ((k(x, x).sum() - n) / (n * (n - 1)) + (k(y, y).sum() - m) / (m * (m - 1))
                    - 2 * k(x, y).mean())
        dd = lambda a, b: safe_sqrt(dist2(a, b))  # noqa: E731
        return 2 * dd(x, y).mean() - dd(x, x).sum() / (n * (n - 1)) - dd(y, y).sum() / (m * (m - 1))

    return f


METRICS = {"mmd2": lambda x, y, c=5: sde.mmd2(x, y, bandwidth=1.3, chunk_size=c),
           "energy": lambda x, y, c=5: sde.energy_distance(x, y, chunk_size=c)}


@pytest.mark.parametrize("kind", ["mmd2", "energy"])
def test_gradient_matches_dense(x64, small_sets, kind):
    x, y = map(jnp.asarray, small_sets)
    x = x.at[3].set(x[7])  # coincident points: the distance's square root must keep the gradient finite
    g = jax.jit(jax.grad(lambda a: METRICS[kind](a, y, 16)))(x)
    ref = jax.grad(lambda a: dense_jnp(kind)(a, y))(x)
    assert bool(jnp.all(jnp.isfinite(g)))
    np.testing.assert_allclose(np.asarray(g), np.asarray(ref), rtol=1e-6, atol=1e-10)


SHARDED = {
    **METRICS,
    "mmd2_median": lambda x, y: sde.mmd2(x, y, kernel="imq", chunk_size=5),
    "sinkhorn": lambda x, y: sde.sinkhorn_divergence(x, y, epsilon=0.1, chunk_size=16),
}


@pytest.fixture(scope="module")
def points64():
    kx, ky = jax.random.split(jax.random.key(3))
    return jax.random.normal(kx, (64, 3)), 0.5 + 1.2 * jax.random.normal(ky, (64, 3))


@pytest.fixture(scope="module")
def unsharded(points64):
    """{name: (value, gradient in x or None)} of every metric on the unsharded points (jitted once)."""
    x, y = points64
    return {name: (float(jax.jit(f)(x, y)), np.asarray(jax.jit(jax.grad(f))(x, y)) if name in METRICS else None)
            for name, f in SHARDED.items()}


@pytest.mark.parametrize("y_sharded", [True, False], ids=["both_sharded", "y_replicated"])
@pytest.mark.parametrize("axis_type", [AxisType.Explicit, AxisType.Auto], ids=["explicit", "auto"])
def test_sharded_equals_unsharded(points64, unsharded, axis_type, y_sharded):
    x, y = points64
    mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
    xs = jax.device_put(x, NamedSharding(mesh, P("data", None)))
    ys = jax.device_put(y, NamedSharding(mesh, P("data", None) if y_sharded else P()))
    placement = pairwise.placement_of(xs, ys)
    assert (placement.x_axis, placement.y_axis) == ("data", "data" if y_sharded else None)
    for name, f in SHARDED.items():
        value, grad = unsharded[name]
        np.testing.assert_allclose(float(jax.jit(f)(xs, ys)), value, rtol=2e-5, atol=2e-6, err_msg=name)
        if y_sharded and grad is not None:
            g = jax.jit(jax.grad(f))(xs, ys)
            np.testing.assert_allclose(np.asarray(g), grad, rtol=1e-4, atol=1e-6, err_msg=name)


def test_wrappers_delegate_to_ot(points64, unsharded):
    x, y = points64
    key = jax.random.key(4)
    assert float(sde.sliced_w2(key, x, y, num_projections=8)) == float(
        ot.sliced_wasserstein(key, x, y, num_projections=8))
    dense = jax.jit(lambda a, b: ot.sinkhorn_divergence(a, b, epsilon=0.1, chunk_size=None).divergence)
    np.testing.assert_allclose(unsharded["sinkhorn"][0], float(dense(x, y)), rtol=1e-4)
    assert unsharded["sinkhorn"][0] > 0.1
    assert abs(float(jax.jit(sde.sinkhorn_divergence)(x, x))) < 1e-4


def test_jit_with_traced_bandwidth(points64):
    x, y = points64
    f = jax.jit(lambda h: sde.mmd2(x, y, bandwidth=h, chunk_size=16))
    np.testing.assert_allclose(float(f(0.8)), float(sde.mmd2(x, y, bandwidth=0.8)), rtol=1e-5)
    assert bool(jnp.isfinite(jax.grad(f)(0.8)))


@pytest.mark.parametrize("fn", ["mmd2", "energy_distance", "sinkhorn_divergence", "median_bandwidth", "sliced"])
def test_bad_inputs_raise(fn):
    call = (lambda x, y: sde.sliced_w2(jax.random.key(0), x, y)) if fn == "sliced" else getattr(sde, fn)
    ok = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="ndim"):
        call(jnp.zeros(4), ok)
    with pytest.raises(ValueError, match="same number of features"):
        call(ok, jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="at least"):
        call(jnp.zeros((0, 2)), ok)


def test_bad_options_raise():
    x = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="bandwidth"):
        sde.mmd2(x, x, bandwidth=0.0)
    with pytest.raises(ValueError, match="bandwidth"):
        sde.mmd2(x, x, bandwidth=-1.0)
    with pytest.raises(ValueError, match="kernel"):
        sde.mmd2(x, x, bandwidth=1.0, kernel="laplace")
    for f in (lambda a: sde.mmd2(a, x, bandwidth=1.0), lambda a: sde.energy_distance(a, x)):
        with pytest.raises(ValueError, match="at least 2 points"):
            f(jnp.zeros((1, 2)))
    assert float(sde.energy_distance(jnp.zeros((1, 2)), x, unbiased=False)) == 0.0
