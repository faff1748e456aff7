"""Shared oracles of the sde tests: a 2-D Gaussian, the three SDEs, a slope fit and a moment check."""

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
