"""Independent oracles for :mod:`jaxbayes.pairwise`: the full ``n x m`` matrix in float64 (NumPy + SciPy for
values, plain ``jax.numpy`` on the dense matrix for gradients). Nothing here calls the engine."""

import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp as sp_logsumexp


def sq_np(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return np.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=-1)


def rbf_np(x, y, p):
    return float(p["amp"]) * np.exp(-sq_np(x, y) / (2.0 * float(p["ls"]) ** 2))


def lse_np(k, h, eps, axis):
    """``log sum exp(h - K / eps)`` along ``axis`` of the dense ``K`` (SciPy)."""
    h = np.asarray(h, np.float64)
    z = (h[None, :] if axis == 1 else h[:, None]) - np.asarray(k, np.float64) / float(eps)
    return sp_logsumexp(z, axis=axis)


def matmul_np(k, v, axis):
    k, v = np.asarray(k, np.float64), np.asarray(v, np.float64)
    return k @ v if axis == 1 else k.T @ v


# The same functions on the dense matrix in jax (float64 under the x64 fixture), for gradient oracles.
def sq_jnp(x, y):
    return jnp.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=-1)


def rbf_jnp(x, y, p):
    return p["amp"] * jnp.exp(-sq_jnp(x, y) / (2.0 * p["ls"] ** 2))


def lse_jnp(k, h, eps, axis):
    z = (h[None, :] if axis == 1 else h[:, None]) - k / eps
    zmax = jnp.max(z, axis=axis, keepdims=True)
    return jnp.squeeze(zmax, axis) + jnp.log(jnp.sum(jnp.exp(z - zmax), axis=axis))
