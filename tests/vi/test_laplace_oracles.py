"""Shared oracles of the Laplace tests (logistic regression on wine classes 0/1, conjugate linear regression),
and a check of the closed-form evidence itself."""

import numpy as np
from sklearn.datasets import load_wine


def wine01():
    """Wine classes 0/1, standardised features plus an intercept column: ``(X (130, 14), y (130,))``."""
    x, t = load_wine(return_X_y=True)
    keep = t < 2
    x, y = x[keep], t[keep].astype(float)
    x = (x - x.mean(0)) / x.std(0)
    return np.c_[x, np.ones(len(x))], y


def linear_data(n=30, d=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = x @ rng.normal(size=d) + 0.5 * rng.normal(size=n)
    return x, y


def linear_log_evidence(x, y, noise, delta):
    """``log N(y; 0, noise^2 I + X X^T / delta)`` in numpy."""
    cov = noise**2 * np.eye(len(y)) + x @ x.T / delta
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * (y @ np.linalg.solve(cov, y) + logdet + len(y) * np.log(2 * np.pi))


def test_linear_log_evidence_oracle_by_quadrature():
    # one weight: p(y | delta) = int N(y; x w, s^2 I) N(w; 0, 1/delta) dw by adaptive quadrature
    import scipy.integrate
    import scipy.stats

    x, y = linear_data(n=6, d=1, seed=3)
    noise, delta = 0.7, 1.5
    integrand = lambda w: np.exp(np.sum(scipy.stats.norm.logpdf(y, x[:, 0] * w, noise))
                                 + scipy.stats.norm.logpdf(w, 0, delta**-0.5))
    value, _ = scipy.integrate.quad(integrand, -20, 20, epsabs=0, epsrel=1e-12, points=[0.0])
    np.testing.assert_allclose(linear_log_evidence(x, y, noise, delta), np.log(value), rtol=1e-9)
