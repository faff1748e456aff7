"""sinkhorn_divergence at its defaults (epsilon = 0.05 relative, tol = 1e-3) against the Gaussian closed form
(issue 10.8)."""

import jax
import numpy as np

from jaxbayes import ot
from jaxbayes.ot import analytic

M1, S1 = np.zeros(2), np.diag([1.0, 0.5])
M2, S2 = np.array([1.0, 0.5]), np.array([[1.5, 0.3], [0.3, 0.8]])
N, REPLICATES = 1000, 8
BIAS = 20.0 / N  # |E S_n - S| <= 20 / n: measured n x bias = 12, 13.5, 14.4, 17 at n = 250, 500, 1000, 2000


def _closed_form(m1, s1, m2, s2, eps, debiased=True):
    """S_eps = OT_eps(a, b) - (OT_eps(a, a) + OT_eps(b, b)) / 2 by analytic.entropic_ot_gaussians, whose
    convention (eps KL(P || a x b), absolute eps) is sinkhorn's; eps is the absolute epsilon the divergence
    used (its relative 0.05 resolved on the cross problem, shared by the three problems)."""
    value = float(analytic.entropic_ot_gaussians(m1, s1, m2, s2, epsilon=eps))
    if debiased:
        value -= 0.5 * float(analytic.entropic_ot_gaussians(m1, s1, m1, s1, epsilon=eps)
                             + analytic.entropic_ot_gaussians(m2, s2, m2, s2, epsilon=eps))
    return value


def test_sinkhorn_divergence_defaults_match_gaussian_closed_form(x64):
    """Samples of size n = 1000 from N(M1, S1) and N(M2, S2), 8 seeds.

    * Population oracle: S_eps(N(M1, S1), N(M2, S2)). The estimator fluctuates at O(n^-1/2) (sd 0.11 over
      seeds); the mean over the 8 seeds must lie within 4.5 standard errors (from the seeds' spread) plus
      the O(1/n) bias bound 20 / n.
    * Moment-matched oracle (the sharp check): S_eps between the Gaussians with each sample's mean and
      covariance. The entropic potentials between Gaussians are quadratic, so the first-order
      O(n^-1/2) fluctuation of the plug-in estimate is a linear functional of the empirical first and second
      moments, which this closed form shares; the difference is O(1/n) (sd 0.0025 over seeds, against
      0.11). Allowed: 20 / n + 4.5 SE (measured mean difference 0.0144 +- 0.0005 over 24 seeds).
    """
    l1, l2 = np.linalg.cholesky(S1), np.linalg.cholesky(S2)

    @jax.jit
    def sample_and_divide(key):
        k1, k2 = jax.random.split(key)
        x = M1 + jax.random.normal(k1, (N, 2)) @ l1.T
        y = M2 + jax.random.normal(k2, (N, 2)) @ l2.T
        out = ot.sinkhorn_divergence(x, y)
        return out.divergence, out.xy.epsilon, out.converged, x, y

    pop, matched, moments = [], [], []
    for seed in range(REPLICATES):
        div, eps, converged, x, y = sample_and_divide(jax.random.key(seed))
        assert bool(converged)
        x, y, eps = np.asarray(x), np.asarray(y), float(eps)
        mom = (x.mean(0), np.cov(x.T, bias=True), y.mean(0), np.cov(y.T, bias=True), eps)
        pop.append(float(div) - _closed_form(M1, S1, M2, S2, eps))
        matched.append(float(div) - _closed_form(*mom))
        moments.append((float(div), mom))
    pop, matched = np.array(pop), np.array(matched)
    se_pop, se_matched = pop.std(ddof=1) / np.sqrt(REPLICATES), matched.std(ddof=1) / np.sqrt(REPLICATES)
    tol_pop, tol_matched = BIAS + 4.5 * se_pop, BIAS + 4.5 * se_matched
    assert abs(pop.mean()) < tol_pop, (pop.mean(), tol_pop)
    assert abs(matched.mean()) < tol_matched, (matched.mean(), tol_matched)
    assert tol_matched < 0.03
    # the oracle can fail: without the debiasing terms, or with the second mean moved by 0.05, it is outside
    no_debias = np.mean([d - _closed_form(*mom, debiased=False) for d, mom in moments])
    shifted = np.mean([d - _closed_form(m1, s1, m2 + 0.05, s2, eps) for d, (m1, s1, m2, s2, eps) in moments])
    assert abs(no_debias) > tol_matched and abs(shifted) > tol_matched, (no_debias, shifted)
