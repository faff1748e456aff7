"""Shared oracles of the sde tests: a 2-D Gaussian, the three SDEs, a slope fit, a moment check and the exact-score
mixture checks (energy two-sample test + per-component moments) of the samplers at their defaults."""

import numpy as np

from jaxbayes.sde import VESDE, VPSDE, SubVPSDE

MU = np.array([1.0, -0.5])
COV = np.array([[0.5, 0.2], [0.2, 0.3]])
SDES = [VPSDE(), VESDE(sigma_max=20.0), SubVPSDE()]
IDS = ["vp", "ve", "subvp"]
N = 3000


def slope(errors, steps):
    """The convergence order: minus the slope of log error against log steps."""
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


def moments_ok(x, mean, cov, *, extra=0.0):
    """Sample mean within 4.5 standard errors; covariance entries within 4.5 of their standard errors (+ bias)."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    var = np.diag(np.asarray(cov))
    mean_z = np.abs(x.mean(0) - np.asarray(mean)) / np.sqrt(var / n)
    cov_se = np.sqrt((np.outer(var, var) + np.asarray(cov) ** 2) / n)
    cov_z = np.abs(np.cov(x.T) - np.asarray(cov)) / cov_se
    assert mean_z.max() < 4.5 + extra and cov_z.max() < 4.5 + extra, (mean_z, cov_z)


GMM_W = np.array([0.2, 0.5, 0.3])
GMM_MEANS = np.array([[-4.0, 0.0], [3.0, 3.0], [3.0, -3.0]])
GMM_COVS = np.tile(0.3 * np.eye(2), (3, 1, 1))


def assert_mode_weights(samples, n):
    """The samples' assignment to GMM_MEANS' modes passes a chi-square test against GMM_W at level 0.001."""
    from scipy import stats

    comp = np.argmin(np.linalg.norm(np.asarray(samples)[:, None] - GMM_MEANS[None], axis=-1), axis=1)
    counts = np.bincount(comp, minlength=3)
    chi2 = np.sum((counts - n * GMM_W) ** 2 / (n * GMM_W))
    assert chi2 < stats.chi2(2).ppf(0.999), counts


def mixture_component_z(samples, weights, means, covs):
    """Per-component moment check of samples from a well-separated Gaussian mixture.

    Each sample is assigned to its nearest mean. Returns ``(chi2 of the counts against weights, its 0.999
    quantile, max |z| of the component means, max |z| of the component covariance entries)``, where a mean's z
    uses its exact standard error ``sqrt(C_ii / n_k)`` and a covariance entry's the Gaussian one
    ``sqrt((C_ii C_jj + C_ij^2) / n_k)`` (``n_k`` the component's count). Far sharper than a two-sample test
    to a wrong component covariance or weight."""
    from scipy import stats

    x = np.asarray(samples, np.float64)
    means, covs, weights = (np.asarray(a, np.float64) for a in (means, covs, weights))
    n = x.shape[0]
    comp = np.argmin(np.linalg.norm(x[:, None] - means[None], axis=-1), axis=1)
    counts = np.bincount(comp, minlength=len(weights))
    chi2 = np.sum((counts - n * weights) ** 2 / (n * weights))
    mean_z = cov_z = 0.0
    for k, (mu, c) in enumerate(zip(means, covs, strict=True)):
        xk = x[comp == k]
        nk = xk.shape[0]
        var = np.diag(c)
        mean_z = max(mean_z, np.max(np.abs(xk.mean(0) - mu) / np.sqrt(var / nk)))
        emp = (xk - mu).T @ (xk - mu) / nk  # centred at the exact mean
        cov_z = max(cov_z, np.max(np.abs(emp - c) / np.sqrt((np.outer(var, var) + c**2) / nk)))
    return chi2, stats.chi2(len(weights) - 1).ppf(0.999), mean_z, cov_z


N_MOMENTS = 4000  # samples per SDE for the component-moment check (the first N_SAMPLES[d] for the energy test)


def mixture_oracle_checks(sampler, d, sdes, n=N_MOMENTS):
    """Draw ``n`` (>= N_SAMPLES[d]) samples of ``sampler(key, score, sde, shape)`` (its defaults) per SDE with the exact
    score of the anisotropic 3-component mixture of tests/sde/test_pc_oracle.py. Returns {sde name: (energy
    distance to a fresh exact set / the test_pc_oracle threshold, count chi2 / its 0.999 quantile, max component
    mean |z|, max component covariance |z|)}."""
    import jax
    import jax.numpy as jnp

    from jaxbayes.sde import gmm_score, sample_batch
    from tests.sde.test_pc_oracle import N_SAMPLES, energy_distance, exact_samples, mixture, null_threshold

    w, means, covs = mixture(d)
    wj, mj, cj = (jnp.asarray(a, jnp.float32) for a in (w, means, covs))

    @jax.jit
    def run(key):
        return [sample_batch(lambda k, sde=sde: sampler(k, gmm_score(sde, wj, mj, cj), sde, (d,)), key,
                             n).samples for sde in sdes]

    threshold, _ = null_threshold(d)
    ref = exact_samples(d, N_SAMPLES[d], seed=30_000 + d)
    out = {}
    for sde, x in zip(sdes, run(jax.random.key(40 + d)), strict=True):
        chi2, q, mean_z, cov_z = mixture_component_z(x, w, means, covs)
        energy = energy_distance(np.asarray(x[:N_SAMPLES[d]], np.float64), ref)
        out[type(sde).__name__] = (energy / threshold, chi2 / q, mean_z, cov_z)
    return out


def assert_oracle_checks(stats):
    """Energy ratio < 1, chi2 below its 0.999 quantile, every component mean and covariance entry within 4.5
    standard errors."""
    bad = {k: np.round(v, 2) for k, v in stats.items() if not (v[0] < 1 and v[1] < 1 and v[2] < 4.5 and v[3] < 4.5)}
    assert not bad, bad
