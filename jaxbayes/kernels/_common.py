"""Argument checks and small helpers shared by the GP, Student-t and classification files."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_finite, check_ndim, check_positive
from jaxbayes.parallel import unshard
from jaxbayes.typing import Array, ArrayLike, PRNGKey


def check_square_matrix(name: str, k: ArrayLike) -> Array:
    """A finite square ``(n, n)`` matrix, as an array, whole on every device.

    The dense factorisations (Cholesky, triangular solves, diagonals) that consume it need all of it: an
    explicitly sharded matrix (Explicit mesh axes) is gathered first; unsharded and Auto inputs are unchanged.
    """
    check_ndim(name, k, 2)
    k = jnp.asarray(k)
    if k.shape[0] != k.shape[1]:
        raise ValueError(f"{name} must be square, got shape {k.shape}")
    check_finite(name, k)
    return unshard(k)


def check_targets(k: Array, y: ArrayLike) -> Array:
    """Finite targets ``(n,)`` or ``(n, k)`` with one row per row of ``k``, whole on every device."""
    y = jnp.asarray(y)
    check_ndim("y_train", y, (1, 2))
    if y.shape[0] != k.shape[0]:
        raise ValueError(f"y_train must have {k.shape[0]} rows (one per training point), got shape {y.shape}")
    check_finite("y_train", y)
    return unshard(y)


def check_alpha_beta(alpha: ArrayLike, beta: ArrayLike) -> None:
    """Inverse-gamma shape and scale, both > 0."""
    check_positive("alpha", alpha)
    check_positive("beta", beta)


def normalised_weights(log_w: Array) -> tuple[Array, Array, Array]:
    """Self-normalised importance weights: ``(log w, w, effective sample size 1 / sum w^2)``."""
    log_w = log_w - jax.scipy.special.logsumexp(log_w)
    w = jnp.exp(log_w)
    return log_w, w, 1.0 / jnp.sum(w * w)


def inverse_gamma_scales(key: PRNGKey, alpha: ArrayLike, beta: ArrayLike, num: int, dtype) -> Array:
    """``num`` draws of ``sigma^2 ~ InvGamma(alpha, beta)``."""
    return beta / jax.random.gamma(key, jnp.asarray(alpha, dtype), (num,), dtype=dtype)



__all__ = ["check_alpha_beta", "check_square_matrix", "check_targets", "inverse_gamma_scales", "normalised_weights"]
