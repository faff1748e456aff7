"""Prior-data fitted networks: the bar distribution against numerical integration, the GP prior against its
moments, the exact predictive against a scipy quadrature, the attention mask, and a trained PFN against the
exact (lengthscale-marginalised) GP posterior predictive."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import integrate, stats

from jaxbayes.base import fit
from jaxbayes.kernels import BarDistribution, GPPrior, PFNTransformer, bar_borders, pfn, sample_datasets

BORDERS = np.array([-2.0, -1.0, -0.5, 0.0, 0.3, 1.0, 2.5])
LOGITS = np.array([0.3, -1.0, 2.0, 0.5, 0.0, 1.2])


def _midpoint_grid(borders, tails, cells=4000, tail_scales=12.0):
    """Cell midpoints and widths covering every bucket (and the tails out to ``tail_scales`` half-normal
    scales), never straddling a border, so the midpoint rule sees a smooth density in every cell."""
    edges = list(borders)
    if tails:
        s_left = (borders[1] - borders[0]) / (math.sqrt(2) * 0.4769362762044699)
        s_right = (borders[-1] - borders[-2]) / (math.sqrt(2) * 0.4769362762044699)
        edges = [borders[1] - tail_scales * s_left, *borders[1:-1], borders[-2] + tail_scales * s_right]
    grid = [np.linspace(a, b, cells + 1) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    grid = np.unique(np.concatenate(grid))
    return 0.5 * (grid[1:] + grid[:-1]), np.diff(grid), grid


@jax.jit
def _summary(bar, y, q):
    """Everything the first test reads, in one compiled call (a few hundred eager ops cost more to compile)."""
    return bar.log_prob(y), bar.mean, bar.quantile(q), bar.log_prob(jnp.array([-3.0, 3.0]))


@pytest.mark.parametrize("tails", [False, True])
def test_bar_density_integrates_to_one_with_the_right_mean_and_quantiles(tails):
    bar = BarDistribution(jnp.asarray(LOGITS, jnp.float32), jnp.asarray(BORDERS, jnp.float32), tails=tails)
    mid, h, edges = _midpoint_grid(BORDERS, tails)
    p0 = float(jax.nn.softmax(jnp.asarray(LOGITS))[0])
    qs = np.array([0.3 * p0, 0.9 * p0, 0.1, 0.5, 0.77, 0.95, 0.995])  # the first two lie in the left tail
    logp, mean, quantiles, outside = _summary(bar, jnp.asarray(mid, jnp.float32), jnp.asarray(qs, jnp.float32))
    dens = np.exp(np.asarray(logp, np.float64))
    # midpoint rule: exact on the constant buckets; O(h^2) ~ 1e-7 on the half-normal tails; the tails beyond
    # 12 scales hold 2 (1 - Phi(12)) ~ 4e-33 of their mass; the density itself is float32 (rel. error ~1e-7)
    assert np.sum(h * dens) == pytest.approx(1.0, abs=1e-5)
    assert float(mean) == pytest.approx(np.sum(h * mid * dens), abs=1e-5)
    cdf = np.concatenate([[0.0], np.cumsum(h * dens)])
    np.testing.assert_allclose(quantiles, np.interp(qs, cdf, edges), atol=1e-4)
    assert np.all(np.isfinite(outside)) if tails else np.all(outside == -np.inf)


def test_bar_batches_and_gradient():
    """Batched logits with shared or stacked (vmap-style) borders agree with one distribution at a time
    (vmap); d log p / d logits is the closed form onehot(bucket) - softmax(logits) inside the interior
    buckets; all under jit."""
    logits = jnp.asarray(np.stack([LOGITS, LOGITS[::-1], np.zeros(6)]), jnp.float32)
    borders = jnp.asarray(BORDERS, jnp.float32)
    y = jnp.array([0.1, -0.7, 1.7])

    @jax.jit
    def everything(logits, y):
        shared = BarDistribution(logits, borders)
        stacked = BarDistribution(logits, jnp.broadcast_to(borders, (3, 7)))
        one = jax.vmap(lambda lg, yy: BarDistribution(lg, borders).log_prob(yy))(logits, y)
        grad = jax.grad(lambda lg: BarDistribution(lg, borders).log_prob(0.1))(logits[0])
        return (shared.log_prob(y), stacked.log_prob(y), one), (shared.quantile(0.4), stacked.quantile(0.4)), grad

    logps, quantiles, grad = everything(logits, y)
    np.testing.assert_allclose(logps[0], logps[1], rtol=1e-6)
    np.testing.assert_allclose(logps[0], logps[2], rtol=1e-6)
    np.testing.assert_allclose(quantiles[0], quantiles[1], rtol=1e-6)
    np.testing.assert_allclose(grad, np.eye(6)[3] - jax.nn.softmax(logits[0]), atol=1e-6)


PRIOR = GPPrior(lengthscale_min=0.5, lengthscale_max=2.0, variance=1.0, noise=0.1)
NUM_EVAL = 512


@pytest.fixture(scope="module")
def eval_data():
    """512 fresh data sets of 20 points from PRIOR (the moment checks and the PFN's held-out evaluation)."""
    return jax.jit(lambda k: sample_datasets(k, PRIOR, NUM_EVAL, 20))(jax.random.key(99))


def test_gp_prior_draws_have_the_gp_moments_and_the_borders_its_quantiles(eval_data):
    """Monte-Carlo checks with tolerances from the sample size n = 512 data sets (each a ~6e-5 chance to fail):

    * given x and l, E[y_0 y_1] = k_l(x_0, x_1) and E[y_0^2] = variance + noise, so z = y_0 y_1 - k and
      y_0^2 - (variance + noise) have mean 0: sample means within 4 standard errors std(z) / sqrt(n);
    * log l is uniform on [log l_min, log l_max]: mean within 4 sd / sqrt(n), sd = log(4) / sqrt(12);
    * y_0 over data sets is iid N(0, variance + noise), so the bucket borders of y_0 are its i/B quantiles up to
      4 sd of a sample quantile, sqrt(q (1 - q) / n) / phi(z_q) * sd (asymptotic normality of quantiles).
    """
    n, num_buckets = NUM_EVAL, 4
    x, y, ls = (np.asarray(a, np.float64) for a in eval_data)
    k01 = np.exp(-0.5 * (x[:, 0, 0] - x[:, 1, 0]) ** 2 / ls**2)
    for z in (y[:, 0] * y[:, 1] - k01, y[:, 0] ** 2 - 1.1):
        assert abs(z.mean()) < 4 * z.std() / math.sqrt(n)
    assert abs(np.log(ls).mean()) < 4 * np.log(4) / math.sqrt(12 * n)  # the midpoint of [log 0.5, log 2] is 0
    assert np.all((x >= -1) & (x <= 1)) and np.all((ls >= 0.5 - 1e-6) & (ls <= 2.0 + 1e-6))
    borders = np.asarray(bar_borders(eval_data.y[:, 0], num_buckets))
    q = np.arange(1, num_buckets) / num_buckets
    sd = math.sqrt(1.1)
    tol = 4 * np.sqrt(q * (1 - q) / n) / stats.norm.pdf(stats.norm.ppf(q)) * sd
    assert np.all(np.abs(borders[1:-1] - sd * stats.norm.ppf(q)) < tol)
    assert borders[0] == pytest.approx(y[:, 0].min()) and borders[-1] == pytest.approx(y[:, 0].max())


def _numpy_gp_logpdf(xc, yc, xq, yq, ls, var, noise):
    """log p(y_c | l) and the per-query log N(y_q; mu, s2 + noise) by plain numpy (Rasmussen & Williams 2.1)."""
    k = lambda a, b: var * np.exp(-0.5 * (a[:, None, 0] - b[None, :, 0]) ** 2 / ls**2)  # noqa: E731
    a = k(xc, xc) + noise * np.eye(len(xc))
    lml = stats.multivariate_normal(np.zeros(len(xc)), a).logpdf(yc)
    kq = k(xq, xc)
    mu = kq @ np.linalg.solve(a, yc)
    s2 = var - np.sum(kq * np.linalg.solve(a, kq.T).T, 1)
    return lml, stats.norm.logpdf(yq, mu, np.sqrt(s2 + noise))


def test_exact_predictive_matches_scipy_quadrature(x64):
    rng = np.random.default_rng(0)
    xc, yc = rng.uniform(-1, 1, (5, 1)), rng.normal(size=5)
    xq, yq = rng.uniform(-1, 1, (2, 1)), rng.normal(size=2)
    prior = GPPrior(lengthscale_min=0.1, lengthscale_max=2.0, variance=1.3, noise=0.1)
    lo, hi = math.log(0.1), math.log(2.0)

    def joint(t, j):  # p(y_c, l) (j < 0) or p(y_c, y_q[j], l) as a density in t = log l, up to 1 / (hi - lo)
        lml, logp = _numpy_gp_logpdf(xc, yc, xq, yq, math.exp(t), 1.3, 0.1)
        return math.exp(lml + (logp[j] if j >= 0 else 0.0))

    evidence = integrate.quad(lambda t: joint(t, -1), lo, hi, epsabs=0, epsrel=1e-10)[0]
    oracle = [math.log(integrate.quad(lambda t, j=j: joint(t, j), lo, hi, epsabs=0, epsrel=1e-10)[0] / evidence)
              for j in range(2)]
    # the midpoint rule in log l with 256 cells: error O(h^2) with h = log(20) / 256 ~ 0.012
    got = jax.jit(lambda *a: prior.predictive_logpdf(*a, num_lengthscales=256))(xc, yc, xq, yq)
    np.testing.assert_allclose(got, oracle, atol=1e-4)


@pytest.fixture(scope="module")
def trained():
    """A tiny PFN (2 layers, d_model 32, 32 buckets) trained 300 steps on 32 PRIOR data sets of 20 points each,
    and one jitted predictor for a batch of tasks (10 context, 10 query points each)."""
    net = PFNTransformer(num_buckets=32, d_model=32, num_heads=2, num_layers=2, mlp_dim=64)
    steps = 300
    opt = optax.adam(optax.warmup_cosine_decay_schedule(0.0, 1e-2, 30, steps, 1e-3))
    alg = pfn(PRIOR, model=net, optimizer=opt, batch_size=32, num_points=20, num_border_samples=200)
    state0 = jax.jit(alg.init)(jax.random.key(0))
    state, _ = fit(jax.random.key(1), alg, state0, steps)
    predict_tasks = jax.jit(jax.vmap(lambda st, x, y: alg.predict(st, x[:10], y[:10], x[10:]), (None, 0, 0)))
    return dict(alg=alg, state0=state0, state=state, predict_tasks=predict_tasks)


def test_trained_pfn_approaches_the_exact_gp_posterior(trained, eval_data):
    """Held-out NLL on the 512 fresh data sets against the exact posterior predictive marginalised over the
    lengthscale prior (the Bayes-optimal predictor for this prior). NLL differences are averaged per data
    set; their standard error is std / sqrt(512) (about 0.015 here)."""
    ev, predict_tasks = eval_data, trained["predict_tasks"]
    assert int(trained["state"].step) == 300 and int(trained["state"].num_skipped) == 0
    yq = ev.y[:, 10:]
    exact = -np.asarray(jax.jit(jax.vmap(
        lambda x, y: PRIOR.predictive_logpdf(x[:10], y[:10], x[10:], y[10:])))(ev.x, ev.y)).mean(1)
    before = -np.asarray(predict_tasks(trained["state0"], ev.x, ev.y).log_prob(yq)).mean(1)
    after = -np.asarray(predict_tasks(trained["state"], ev.x, ev.y).log_prob(yq)).mean(1)
    prior_nll = -stats.norm.logpdf(np.asarray(yq), 0, math.sqrt(1.1)).mean()
    gap = after - exact
    se = gap.std() / math.sqrt(len(gap))
    # untrained: the zero head gives uniform logits, i.e. the prior marginal up to the bucketing (~0.1 nats)
    assert abs(before.mean() - prior_nll) < 0.25
    assert before.mean() - after.mean() > 0.7  # training helps substantially
    # a PFN that ignored the context would sit at the prior NLL; this one closes >= 70% of the way to exact
    assert after.mean() - exact.mean() < 0.3 * (prior_nll - exact.mean())
    assert gap.mean() < 0.3  # the stated margin (measured 0.18 +- 0.01 after 300 steps)
    assert gap.mean() > -4 * se  # no predictor beats the Bayes-optimal one beyond Monte-Carlo noise


def test_pfn_prediction_density_quantiles_and_mask(trained, eval_data):
    """One forward pass per task gives the predictive: its density integrates to 1 on a y grid (midpoint rule
    over buckets and tails) with the stated mean; the central 80% interval covers about 80% of the 5120 query
    points (binomial sd 0.006; the tolerance 0.1 is mostly the approximation: after 300 steps the PFN is a
    little under-confident, ~87% coverage, where the exact posterior has 80%). The attention mask:
    a query's output ignores the other queries and permutations of the context, not a context y."""
    state, ev = trained["state"], eval_data
    bars = trained["predict_tasks"](state, ev.x, ev.y)
    mid, h, _ = _midpoint_grid(np.asarray(state.borders, np.float64), True, cells=200)
    bar0 = BarDistribution(bars.logits[0], state.borders)
    dens = np.exp(np.asarray(jax.jit(bar0.log_prob)(jnp.asarray(mid, jnp.float32)[:, None]), np.float64))
    np.testing.assert_allclose(h @ dens, 1.0, atol=2e-3)  # (G, 10) densities; the tails by the midpoint rule
    np.testing.assert_allclose(bars.mean[0], (h * mid) @ dens, atol=2e-2)
    yq = ev.y[:, 10:]
    inside = (yq >= bars.quantile(0.1)) & (yq <= bars.quantile(0.9))
    assert abs(float(jnp.mean(inside)) - 0.8) < 0.1
    # tasks 1-3 are task 0 with query 5 moved, a context y shifted, the context permuted (same compiled call)
    x0, y0 = ev.x[0], ev.y[0]
    perm = jnp.array([2, 0, 3, 1, 4, 5, 6, 7, 8, 9, *range(10, 20)])
    x = ev.x.at[1].set(x0.at[15].set(-x0[15])).at[2].set(x0).at[3].set(x0[perm])
    y = ev.y.at[1].set(y0).at[2].set(y0.at[0].add(1.0)).at[3].set(y0[perm])
    logits = trained["predict_tasks"](state, x, y).logits
    others = jnp.arange(10) != 5
    np.testing.assert_allclose(logits[1][others], bars.logits[0][others], atol=1e-4)
    assert not np.allclose(logits[1][5], bars.logits[0][5], atol=1e-3)  # its own x it does see
    assert not np.allclose(logits[2], bars.logits[0], atol=1e-3)
    np.testing.assert_allclose(logits[3], bars.logits[0], atol=1e-4)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="noise"):
        GPPrior(noise=0.0)
    with pytest.raises(ValueError, match="lengthscale_min"):
        GPPrior(lengthscale_min=2.0, lengthscale_max=1.0)
    with pytest.raises(ValueError, match="logits"):
        BarDistribution(jnp.zeros(3), jnp.asarray(BORDERS))
    with pytest.raises(ValueError, match="strictly increasing"):
        BarDistribution(jnp.zeros(2), jnp.array([0.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="num_buckets"):
        bar_borders(jnp.arange(4.0), 8)
    with pytest.raises(ValueError, match="batch_size"):
        pfn(GPPrior(), batch_size=0)
    with pytest.raises(ValueError, match="min_context"):
        pfn(GPPrior(), num_points=8, min_context=8)
    with pytest.raises(TypeError, match="model"):
        pfn(GPPrior(), model=lambda x, y, c: x)
    prior = GPPrior()
    with pytest.raises(ValueError, match="x_context"):
        prior.predictive_logpdf(jnp.zeros(3), jnp.zeros(3), jnp.zeros((1, 1)), jnp.zeros(1))
    with pytest.raises(ValueError, match="y_context"):
        prior.predictive_logpdf(jnp.zeros((3, 1)), jnp.zeros(2), jnp.zeros((1, 1)), jnp.zeros(1))
    with pytest.raises(ValueError, match="features"):
        prior.predictive_logpdf(jnp.zeros((3, 1)), jnp.zeros(3), jnp.zeros((1, 2)), jnp.zeros(1))
    with pytest.raises(ValueError, match="1 features"):  # checked before the state is touched
        pfn(prior).predict(None, jnp.zeros((3, 2)), jnp.zeros(3), jnp.zeros((1, 2)))
