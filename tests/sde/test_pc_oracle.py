"""The PC sampler against exact samples: every predictor x corrector at the defaults passes a two-sample test.

The data are anisotropic 3-component Gaussian mixtures with unequal weights and well-separated means, whose
score is exact (``gmm_score``), in d = 1, 2, 3, 8, 64 (VPSDE) and d = 2, 8 (VESDE, SubVPSDE). Each sampler runs
at its documented defaults (``num_steps = sde.N``, ``snr = 0.16``, one corrector step, Tweedie denoising).

The statistic is the energy distance (V-statistic, no bandwidth) between ``N_SAMPLES[d]`` sampler draws and as
many exact draws. Its null distribution is calibrated from ``NULL_PAIRS = 100`` pairs of disjoint exact sets of
the same size; the threshold is ``FACTOR = 2.5`` times the largest null statistic. Why 2.5: under the null
``n * energy`` tends to a weighted sum ``sum_j l_j chi2_1`` (l_j >= 0), whose tail relative to its scale is
heaviest when one term dominates (here: the multinomial fluctuation of the component weights). For a single
``chi2_1``, ``P(T > 2.5 max of 100 independent copies) = 1.2e-4`` (``chi2_2``: 3e-5), so the 75 combinations
have a family-wise false-alarm rate below 1 %. (A moment-matched ``a chi2_k`` fitted to 20 null statistics
underestimated that tail: it flagged a correct sampler.) The old per-sample Langevin step (issue 10) exceeds
the threshold in d <= 3 (energy 5 to 30 times the largest null statistic).

All combinations of one dimension are compiled as one program (compilation dominates the time on CPU).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from jaxbayes import datasets
from jaxbayes.sde import VESDE, VPSDE, SubVPSDE, gmm_score, pc_sampler, sample_batch

N_SAMPLES = {1: 1000, 2: 1000, 3: 1000, 8: 500, 64: 300}  # per dimension, to bound the run time
NULL_PAIRS = 100
FACTOR = 2.5
WEIGHTS = np.array([0.5, 0.3, 0.2])
PREDICTORS = ("euler_maruyama", "reverse_diffusion", "ancestral")
CORRECTORS = ("langevin", "annealed_langevin", "none")


def mixture(d):
    """Three components: means ~8.7 apart, covariances rotated with eigenvalues 0.1 .. 1.5 (unequal per component)."""
    rng = np.random.default_rng(1000 + d)
    if d == 1:
        means = np.array([[-6.0], [0.0], [5.0]])
    else:
        q = np.linalg.qr(rng.normal(size=(d, 2)))[0]
        angles = 2 * np.pi * np.arange(3) / 3
        means = 5.0 * (np.cos(angles)[:, None] * q[:, 0] + np.sin(angles)[:, None] * q[:, 1])
    covs = []
    for scale in (1.0, 0.4, 1.5):
        lam = scale * (np.array([0.6]) if d == 1 else np.geomspace(0.25, 1.0, d))
        u = np.linalg.qr(rng.normal(size=(d, d)))[0]
        covs.append(u @ np.diag(lam) @ u.T)
    return WEIGHTS, means, np.stack(covs)


def exact_samples(d, num, seed):
    w, means, covs = mixture(d)
    mix = datasets.GaussianMixture(jnp.asarray(w, jnp.float32), jnp.asarray(means, jnp.float32),
                                   jnp.asarray(covs, jnp.float32))
    return np.asarray(datasets.gaussian_mixture(jax.random.key(seed), num, mix)[0], np.float64)


def energy_distance(x, y):
    """The V-statistic ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (>= 0)."""
    return 2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean()


@functools.cache
def null_threshold(d):
    """(threshold, null statistics) from ``NULL_PAIRS`` disjoint pairs of exact sets of ``N_SAMPLES[d]`` each."""
    n = N_SAMPLES[d]
    sets = exact_samples(d, 2 * NULL_PAIRS * n, seed=10_000 + d).reshape(2 * NULL_PAIRS, n, d)
    null = np.array([energy_distance(sets[2 * i], sets[2 * i + 1]) for i in range(NULL_PAIRS)])
    return FACTOR * null.max(), null


SDES = {1: (VPSDE(),), 2: (VPSDE(), VESDE(), SubVPSDE()), 3: (VPSDE(),), 8: (VPSDE(), VESDE(), SubVPSDE()),
        64: (VPSDE(),)}


def combinations(d):
    """(sde, predictor, corrector) of dimension ``d``: ancestral steps exist for VE and VP only."""
    return [(sde, p, c) for sde in SDES[d] for p in PREDICTORS for c in CORRECTORS
            if p != "ancestral" or isinstance(sde, VESDE | VPSDE)]


def sampler_statistics(d):
    """{(sde name, predictor, corrector): energy distance to a fresh exact set} at the samplers' defaults."""
    w, means, covs = (jnp.asarray(a, jnp.float32) for a in mixture(d))
    combos = combinations(d)

    @jax.jit
    def run(key):
        return [sample_batch(lambda k, sde=sde, p=p, c=c: pc_sampler(k, gmm_score(sde, w, means, covs), sde, (d,),
                                                                     predictor=p, corrector=c), key,
                             N_SAMPLES[d]).samples for sde, p, c in combos]

    ref = exact_samples(d, N_SAMPLES[d], seed=20_000 + d)
    samples = run(jax.random.key(d))
    return {(type(sde).__name__, p, c): energy_distance(np.asarray(x, np.float64), ref)
            for (sde, p, c), x in zip(combos, samples, strict=True)}


@pytest.mark.parametrize("d", sorted(SDES))
def test_every_predictor_corrector_passes_a_two_sample_test(d):
    threshold, _ = null_threshold(d)
    stat = sampler_statistics(d)
    failed = {key: round(v / threshold, 2) for key, v in stat.items() if not v < threshold}
    assert not failed, f"energy distance / threshold in d={d}: {failed}"


def test_readme_ring_mixture_variance_and_range():
    """The README tour (ring of 8, exact score, VPSDE, default corrector, 500 steps): variance within 4.5 of its
    standard errors of the data's, and no sample far outside the ring (the old step gave variance ~1e5)."""
    mix = datasets.ring_mixture(8)
    vp = VPSDE()
    score = gmm_score(vp, mix.weights, mix.means, mix.covs)
    n = 2000
    x = jax.jit(lambda k: sample_batch(lambda kk: pc_sampler(kk, score, vp, (2,), num_steps=500), k, n))(
        jax.random.key(0)).samples
    x = np.asarray(x, np.float64)
    # Per coordinate x = a_k + s z with a_k the k-th mean's coordinate (equal weights), s = 0.3.
    a, s2 = np.asarray(mix.means, np.float64), 0.3**2
    var = (a**2).mean(0) + s2  # the means are centred
    m4 = (a**4).mean(0) + 6 * s2 * (a**2).mean(0) + 3 * s2**2
    se = np.sqrt((m4 - var**2) / n)  # standard error of the sample variance
    z = np.abs(x.var(0) - var) / se
    assert z.max() < 4.5, (x.var(0), var, se)
    assert np.linalg.norm(x, axis=1).max() < 4.0 + 6 * 0.3
