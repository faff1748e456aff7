"""Shared test problems of the vi tests: the conjugate linear-regression oracle (diabetes) and a small MLP."""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import scipy.stats

from jaxbayes import datasets, vi

NOISE_VAR = 0.5
PRIOR_PREC = 1.0


def conjugate_problem():
    """Bayesian linear regression y = X w + e on diabetes, w ~ N(0, I / a), e ~ N(0, s2): exact posterior."""
    ds = datasets.load("diabetes")
    x = np.concatenate([ds.x_train, np.ones((len(ds.x_train), 1), np.float32)], 1).astype(np.float64)
    y = ds.y_train.astype(np.float64)
    lam = PRIOR_PREC * np.eye(x.shape[1]) + x.T @ x / NOISE_VAR
    sigma = np.linalg.inv(lam)
    mu = sigma @ x.T @ y / NOISE_VAR
    evidence_cov = NOISE_VAR * np.eye(len(y)) + x @ x.T / PRIOR_PREC
    log_z = scipy.stats.multivariate_normal(np.zeros(len(y)), evidence_cov).logpdf(y)
    return x, y, lam, sigma, mu, log_z


def log_joint(x, y):
    # Normalised log joint (so the ELBO is a bound on the normalised log evidence).
    n, d = x.shape

    def logp(w):
        r = y - x @ w
        return (-0.5 * jnp.sum(r**2) / NOISE_VAR - 0.5 * n * jnp.log(2 * jnp.pi * NOISE_VAR)
                - 0.5 * PRIOR_PREC * jnp.sum(w**2) - 0.5 * d * jnp.log(2 * jnp.pi / PRIOR_PREC))

    return logp


def exact_fullrank(mu, sigma):
    chol = np.linalg.cholesky(sigma)
    return vi.FullRankNormal(jnp.asarray(mu), jnp.log(jnp.diag(chol)), jnp.asarray(np.tril(chol, -1)))


def meanfield_optimum(mu, lam):
    return vi.MeanFieldNormal(jnp.asarray(mu), -0.5 * jnp.log(jnp.diag(jnp.asarray(lam))))


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(6)(x))
        return nn.Dense(3)(x)
