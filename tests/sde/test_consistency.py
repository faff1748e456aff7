"""Consistency models: the boundary condition, the iCT schedule against its formulas, the loss against closed-form
expectations, exact samples from the exact consistency function of Gaussian data, and a trained 1-D mixture
model passing a two-sample test."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats
from scipy.spatial.distance import cdist

from jaxbayes.base import fit
from jaxbayes.sde import (
    ConsistencySchedule,
    consistency_distance,
    consistency_fn,
    consistency_loss,
    consistency_sampler,
    consistency_trainer,
    karras_sigmas,
    sample_batch,
)

SIGMA_MIN = 0.002


class MLP(nn.Module):
    """``F(x_in, c_noise)``: three SiLU layers on ``[x_in, c_noise]`` (one point or a batch)."""

    width: int = 64

    @nn.compact
    def __call__(self, x, c_noise):
        h = jnp.concatenate([x, jnp.broadcast_to(c_noise, (*x.shape[:-1], 1)).astype(x.dtype)], axis=-1)
        for _ in range(3):
            h = nn.silu(nn.Dense(self.width)(h))
        return nn.Dense(x.shape[-1])(h)


def gaussian_consistency_fn(m, s):
    """The exact consistency function of N(m, s^2 I) data: the PF-ODE map from sigma to sigma_min,
    ``x_min = m + sqrt(s^2 + sigma_min^2) / sqrt(s^2 + sigma^2) (x - m)``."""
    return lambda x, sigma: m + jnp.sqrt((s**2 + SIGMA_MIN**2) / (s**2 + sigma**2)) * (x - m)


# ----------------------------------------------------------------------------------------------------------- (a)

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_boundary_condition_is_exact(dtype):
    with jax.enable_x64(dtype == "float64"):
        x = 5.0 * jax.random.normal(jax.random.key(1), (64, 3), dtype)
        if dtype == "float32":  # a flax MLP; in float64 a cheap smooth stand-in with outputs of size 1e3
            model = MLP(16)
            params = jax.jit(model.init)(jax.random.key(0), jnp.zeros(3, dtype), 0.0)
            net = lambda x, c: 1e3 + model.apply(params, x, c)  # noqa: E731
        else:
            net = lambda x, c: 1e3 * jnp.sin(3 * x + c)  # noqa: E731

        @jax.jit
        def apply(sigma_data, sigma):
            f = consistency_fn(net, sigma_min=SIGMA_MIN, sigma_data=sigma_data)
            return jax.vmap(lambda xi: f(xi, sigma))(x)

        for sigma_data in (0.5, 0.37, 2.0):
            at_min = apply(jnp.asarray(sigma_data, dtype), jnp.asarray(SIGMA_MIN, dtype))
            np.testing.assert_array_equal(at_min, x)  # bit for bit, whatever the network outputs
            assert at_min.dtype == x.dtype
            assert not np.allclose(apply(jnp.asarray(sigma_data, dtype), jnp.asarray(0.01, dtype)), x)


def test_parameterisation_coefficients(x64):
    # with F = 1 the function is c_skip x + c_out: read both off two inputs and compare with the formulas
    sd, sigma = 0.5, 1.7
    f = consistency_fn(lambda x, c: jnp.ones_like(x), sigma_min=SIGMA_MIN, sigma_data=sd)
    c_out = float(f(jnp.zeros(1), sigma)[0])
    c_skip = float(f(jnp.ones(1), sigma)[0]) - c_out
    np.testing.assert_allclose(c_skip, sd**2 / ((sigma - SIGMA_MIN) ** 2 + sd**2), rtol=1e-14)
    np.testing.assert_allclose(c_out, (sigma - SIGMA_MIN) * sd / math.sqrt(sd**2 + sigma**2), rtol=1e-14)
    # the network sees EDM's c_in x and c_noise = log(sigma) / 4
    seen = consistency_fn(lambda x, c: jnp.concatenate([x, c[None]]), sigma_data=sd)(jnp.ones(1), sigma)
    want = c_skip * 1.0 + c_out * np.array([1 / math.sqrt(sigma**2 + sd**2), math.log(sigma) / 4])
    np.testing.assert_allclose(seen, want, rtol=1e-14)


# ------------------------------------------------------------------------------------------------ the schedule

def test_curriculum_and_levels_match_the_formulas(x64):
    sched = ConsistencySchedule(total_steps=1000)
    period = 1000 // (math.floor(math.log2(1280 // 10)) + 1)  # K' = floor(K / (log2 floor(s1/s0) + 1)) = 125
    steps = np.array([0, 124, 125, 300, 874, 875, 999, 5000])
    want = np.minimum(10 * 2 ** (steps // period), 1280) + 1
    np.testing.assert_array_equal(jax.jit(jax.vmap(sched.num_scales))(jnp.asarray(steps)), want)
    levels = jax.jit(sched.levels)()
    assert levels.shape == (8, 1281)
    for j in (0, 3, 7):
        n = min(10 * 2**j, 1280) + 1
        np.testing.assert_allclose(levels[j, :n], karras_sigmas(n)[:-1][::-1], rtol=1e-14)
        np.testing.assert_array_equal(levels[j, n:], 80.0)
    fixed = ConsistencySchedule(total_steps=10, s0=18, s1=18)  # the original CT's fixed N = 19
    assert fixed.num_stages == 1 and int(fixed.num_scales(7)) == 19


def test_level_pairs_follow_the_lognormal_interval_masses(x64):
    # chi-square goodness of fit of the drawn interval indices at stage 1 (N = 21) against
    # p_i = Phi(u_{i+1}) - Phi(u_i), u = (log sigma - P_mean) / P_std, at level 0.001
    sched = ConsistencySchedule(total_steps=800)
    num = 40_000
    lo, hi = jax.jit(lambda k: sched.sample_pairs(k, 150, num))(jax.random.key(3))
    sig = karras_sigmas(21)[:-1][::-1]
    idx = np.argmin(np.abs(np.log(np.asarray(sig))[None] - np.log(np.asarray(lo))[:, None]), axis=1)
    np.testing.assert_allclose(sig[idx], lo, rtol=1e-12)  # lo is a level ...
    np.testing.assert_allclose(sig[idx + 1], hi, rtol=1e-12)  # ... and hi the next one
    p = np.diff(stats.norm.cdf((np.log(np.asarray(sig)) + 1.1) / 2.0))
    p /= p.sum()
    counts = np.bincount(idx, minlength=20)
    assert np.all(num * p > 5)  # every cell is well filled for the chi-square approximation
    obs, exp = counts, num * p
    chi2 = np.sum((obs - exp) ** 2 / exp)
    assert chi2 < stats.chi2(len(obs) - 1).ppf(0.999), (chi2, obs, exp)


# ---------------------------------------------------------------------------------------------------- the loss

def test_distances_closed_form():
    x, y = jnp.array([3.0, 1.0]), jnp.array([-1.0, 1.0])
    np.testing.assert_allclose(consistency_distance(x, y, c=3.0), 2.0, rtol=1e-6)
    np.testing.assert_allclose(consistency_distance(x, y, distance="cauchy", c=2.0), math.log(1 + 16 / 8), rtol=1e-6)
    np.testing.assert_allclose(consistency_distance(x, y, distance="l2"), 16.0, rtol=1e-6)
    c = 0.00054 * math.sqrt(2)  # iCT's default c for d = 2
    np.testing.assert_allclose(consistency_distance(x, y), math.sqrt(16 + c**2) - c, rtol=1e-6)


def test_loss_of_the_identity_matches_closed_forms(x64):
    """For f(x, sigma) = x the prediction and target differ by (sigma_{i+1} - sigma_i) z (one z shared by both):

    * ``l2``: the weighted loss is ``Delta ||z||^2``, expectation ``d sum_i p_i Delta_i``;
    * pseudo-Huber with ``c -> 0``: it is ``||z||``, expectation ``sqrt(2) Gamma((d+1)/2) / Gamma(d/2)``.

    Tolerance: 5 standard errors of the batch mean (std of one term / sqrt(B)); an unshared z or a missing
    ``1 / Delta`` changes the value by orders of magnitude."""
    sched = ConsistencySchedule(total_steps=800)
    d, b, step = 3, 8000, 250  # stage 2: N = 41
    x0 = jax.random.normal(jax.random.key(0), (b, d)) + 3.0
    ident = lambda x, sigma: x  # noqa: E731
    sig = np.asarray(karras_sigmas(41)[:-1][::-1])
    p = np.diff(stats.norm.cdf((np.log(sig) + 1.1) / 2.0))
    p /= p.sum()
    delta = np.diff(sig)
    loss = jax.jit(lambda k, dist, c: consistency_loss(k, ident, x0, schedule=sched, step=step, distance=dist, c=c),
                   static_argnums=1)
    # l2: term = Delta chi2_d; E = d E[Delta], Var = E[Delta^2] (2d + d^2) - (d E[Delta])^2
    mean = d * p @ delta
    sd = math.sqrt(p @ delta**2 * (2 * d + d**2) - mean**2)
    assert abs(float(loss(jax.random.key(1), "l2", None)) - mean) < 5 * sd / math.sqrt(b)
    mean = math.sqrt(2) * math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))
    sd = math.sqrt(d - mean**2)
    assert abs(float(loss(jax.random.key(2), "pseudo_huber", 1e-9)) - mean) < 5 * sd / math.sqrt(b)


def test_target_is_stop_gradient():
    sched = ConsistencySchedule(total_steps=10)
    x0 = jax.random.normal(jax.random.key(0), (32, 2))
    f = lambda p: lambda x, sigma: p * x  # noqa: E731

    def loss(p, q):
        return consistency_loss(jax.random.key(1), f(p), x0, schedule=sched, step=0, target_fn=f(q))

    own_loss = lambda p: consistency_loss(jax.random.key(1), f(p), x0, schedule=sched, step=0)  # noqa: E731

    @jax.jit
    def grads():
        return jax.grad(loss, argnums=(0, 1))(1.3, 0.7), jax.grad(own_loss)(1.3), jax.grad(loss)(1.3, 1.3)

    (g_pred, g_target), own, split = grads()
    assert g_target == 0.0 and g_pred != 0.0
    # with the default target (f itself) only the prediction branch is differentiated
    np.testing.assert_allclose(own, split, rtol=1e-6)


# ------------------------------------------------------------------------------------------------------- (b)

def test_exact_consistency_function_gives_exact_samples(x64):
    """One and two steps with the exact f of N(m, s^2 I): the output is affine in Gaussian draws, so its law is
    Gaussian with closed-form moments. One step from sigma_max z: mean ``(1 - r_0) m``, variance
    ``r_0^2 sigma_max^2``, ``r(sigma) = sqrt(s^2 + sigma_min^2) / sqrt(s^2 + sigma^2)``. Two steps with tau:
    mean ``m + r(tau) (mu_1 - m)``, variance ``r(tau)^2 (v_1 + tau^2 - sigma_min^2)``: within ``s |m| / sigma_max``
    and ``s^4 / sigma_max^2`` of the data's N(m, s^2 + sigma_min^2) (the prior's mismatch, N(0, sigma_max^2) for
    N(m, s^2 + sigma_max^2)). Tolerance: 5 standard errors, ``sqrt(v / n)`` for a mean and
    ``v sqrt(2 / (n - 1))`` for a variance (n = 20000 per coordinate)."""
    m, s, smax, tau, n = np.array([1.0, -0.5]), 0.7, 80.0, 0.8, 20_000
    f = gaussian_consistency_fn(jnp.asarray(m), s)
    r = lambda sigma: math.sqrt((s**2 + SIGMA_MIN**2) / (s**2 + sigma**2))  # noqa: E731
    mu1, v1 = (1 - r(smax)) * m, (r(smax) * smax) ** 2
    mu2, v2 = m + r(tau) * (mu1 - m), r(tau) ** 2 * (v1 + tau**2 - SIGMA_MIN**2)
    assert abs(v2 - (s**2 + SIGMA_MIN**2)) < s**4 / smax**2 and np.all(np.abs(mu2 - m) <= s / smax * np.abs(m))

    draw = jax.jit(lambda k, sig: sample_batch(lambda kk: consistency_sampler(kk, f, (2,), sigmas=sig), k, n))
    for sig, mu, v in [((smax,), mu1, v1), ((smax, tau), mu2, v2)]:
        out = draw(jax.random.key(len(sig)), jnp.asarray(sig))
        assert int(out.nfe[0]) == len(sig)
        x = np.asarray(out.samples)
        assert np.all(np.abs(x.mean(0) - mu) < 5 * math.sqrt(v / n)), (sig, x.mean(0), mu)
        assert np.all(np.abs(x.var(0, ddof=1) - v) < 5 * v * math.sqrt(2 / (n - 1))), (sig, x.var(0), v)
        assert abs(np.corrcoef(x.T)[0, 1]) < 5 / math.sqrt(n)


def test_sampler_on_point_data_and_x_init():
    point = lambda x, sigma: jnp.full_like(x, -1.5)  # noqa: E731
    out = consistency_sampler(jax.random.key(0), point, (4,), sigmas=(80.0, 2.0, 0.5))
    np.testing.assert_array_equal(out.samples, -1.5)
    assert int(out.nfe) == 3
    seen = consistency_sampler(None, lambda x, sigma: x + sigma, (2,), sigmas=(3.0,), x_init=jnp.ones(2))
    np.testing.assert_allclose(seen.samples, 4.0)


# ------------------------------------------------------------------------------------------------------- (c)

WEIGHTS, MEANS, STD = np.array([0.3, 0.7]), np.array([-1.5, 1.5]), 0.5
N_TEST, NULL_PAIRS, FACTOR = 1000, 100, 2.5
TRAIN_STEPS, SIGMA_MAX, TWO_STEP = 600, 20.0, (20.0, 1.5)


def mixture_draws(num, seed):
    rng = np.random.default_rng(seed)
    comp = rng.choice(2, num, p=WEIGHTS)
    return (MEANS[comp] + STD * rng.normal(size=num))[:, None]


def energy(x, y):
    """The V-statistic ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (>= 0)."""
    return 2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean()


def test_consistency_training_passes_a_two_sample_test():
    """iCT on a 1-D two-component mixture (weights 0.3 / 0.7, means -/+1.5, std 0.5): a 3x64 MLP, 600 Adam steps
    (cosine-decayed lr 1e-3), batches of 256 from 4096 training points, the full iCT recipe (curriculum
    10 -> 1280, lognormal levels, pseudo-Huber, 1/Delta weights) with sigma_max = 20.

    Test: energy distance between N_TEST = 1000 two-step samples (levels 20, 1.5) and 1000 fresh exact draws,
    against FACTOR = 2.5 x the largest of NULL_PAIRS = 100 null statistics (pairs of disjoint exact sets of the
    same size), the calibration of tests/sde/test_pc_oracle.py (false alarm below 1.2e-4 for a chi2_1-like null).
    The untrained model must fail the same test by a factor of 10."""
    data = jnp.asarray(mixture_draws(4096, 1), jnp.float32)
    sigma_data = float(jnp.std(data))
    model = MLP(64)
    apply_fn = lambda p, x, c: model.apply(p, x, c)  # noqa: E731
    lr = optax.cosine_decay_schedule(1e-3, TRAIN_STEPS, 0.05)
    trainer = consistency_trainer(apply_fn, optax.adam(lr), ConsistencySchedule(TRAIN_STEPS, sigma_max=SIGMA_MAX),
                                  sigma_data=sigma_data, ema_decay=0.9)
    params0 = jax.jit(model.init)(jax.random.key(0), jnp.zeros(1), 0.0)
    train = jax.jit(lambda k, st: fit(k, trainer, st, TRAIN_STEPS, data=data, batch_size=256))
    state, infos = train(jax.random.key(10), trainer.init(None, params0))
    assert int(state.step) == TRAIN_STEPS and int(state.num_skipped) == 0
    assert int(infos.num_scales[0]) == 11 and int(infos.num_scales[-1]) == 1281

    @jax.jit
    def two_step(params, key):
        f = consistency_fn(lambda x, c: model.apply(params, x, c), sigma_min=SIGMA_MIN, sigma_data=sigma_data)
        return sample_batch(lambda k: consistency_sampler(k, f, (1,), sigmas=TWO_STEP), key, N_TEST).samples

    null = [energy(mixture_draws(N_TEST, 1000 + 2 * i), mixture_draws(N_TEST, 1001 + 2 * i))
            for i in range(NULL_PAIRS)]
    threshold = FACTOR * max(null)
    ref = mixture_draws(N_TEST, 99)
    trained = energy(np.asarray(two_step(state.params, jax.random.key(5)), np.float64), ref)
    untrained = energy(np.asarray(two_step(params0, jax.random.key(5)), np.float64), ref)
    assert trained < threshold, (trained, threshold)
    assert untrained > 10 * threshold, (untrained, threshold)


# --------------------------------------------------------------------------------------- trainer contract, errors

def test_trainer_step_is_the_documented_loss_and_skips_nonfinite():
    sched = ConsistencySchedule(total_steps=50)
    apply_fn = lambda p, x, c: p["w"] * x + p["b"]  # noqa: E731
    trainer = consistency_trainer(apply_fn, optax.sgd(0.1), sched, sigma_data=1.0, ema_decay=0.5)
    state = trainer.init(jax.random.key(0), {"w": jnp.array(0.5), "b": jnp.array(0.1)})
    batch = jax.random.normal(jax.random.key(1), (16, 2))
    step = jax.jit(trainer.step)
    new, info = step(jax.random.key(2), state, batch)
    f = consistency_fn(lambda x, c: apply_fn(state.params, x, c), sigma_data=1.0)
    loss = jax.jit(lambda: consistency_loss(jax.random.key(2), f, batch, schedule=sched, step=0))()
    np.testing.assert_allclose(info.loss, loss, rtol=1e-6)
    assert int(info.num_scales) == 11 and int(new.step) == 1
    bad, info = step(jax.random.key(3), new, batch.at[0, 0].set(jnp.nan))
    assert not bool(info.finite) and int(bad.num_skipped) == 1
    np.testing.assert_array_equal(bad.params["w"], new.params["w"])


def test_bad_inputs_name_the_argument():
    sched = ConsistencySchedule(total_steps=10)
    apply_fn = lambda p, x, c: x  # noqa: E731
    with pytest.raises(ValueError, match="distance"):
        consistency_trainer(apply_fn, optax.sgd(0.1), sched, distance="huber")
    with pytest.raises(TypeError, match="schedule"):
        consistency_trainer(apply_fn, optax.sgd(0.1), 10)
    with pytest.raises(ValueError, match="sigma_data"):
        consistency_fn(lambda x, c: x, sigma_data=0.0)
    with pytest.raises(ValueError, match="s1"):
        ConsistencySchedule(total_steps=10, s0=20, s1=10)
    with pytest.raises(TypeError, match="total_steps"):
        ConsistencySchedule(total_steps=10.0)
    with pytest.raises(ValueError, match="sigma_min"):
        ConsistencySchedule(total_steps=10, sigma_min=100.0)
    with pytest.raises(ValueError, match="c must"):
        consistency_distance(jnp.ones(2), jnp.zeros(2), c=-1.0)
    with pytest.raises(ValueError, match="x0"):
        consistency_loss(jax.random.key(0), lambda x, s: x, jnp.ones(3), schedule=sched, step=0)
    ident = lambda x, s: x  # noqa: E731
    for sigmas in [(0.5, 80.0), (80.0, 0.001), ()]:
        with pytest.raises(ValueError, match="sigmas"):
            consistency_sampler(jax.random.key(0), ident, (2,), sigmas=sigmas)
    with pytest.raises(ValueError, match="shape"):
        consistency_sampler(jax.random.key(0), lambda x, s: x[:1], (2,))
