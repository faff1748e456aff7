"""The observation models of the Laplace approximation: log-likelihood, output curvature and inverse link.

A likelihood sees the model's output ``f`` for one example as a vector ``(C,)``:

* ``"bernoulli"``: ``f`` is one logit (``C = 1``), ``y`` in ``{0, 1}``;
* ``"categorical"``: ``f`` are ``C`` logits, ``y`` an integer class;
* ``"gaussian"``: ``f`` is the mean of ``y`` (``C`` outputs), known noise std ``noise_scale``.

``output_precision`` is ``-d^2 log p(y | f) / df^2`` (``(C, C)``, independent of ``y`` for all three), the
middle factor of the generalised Gauss-Newton matrix ``J^T Lambda J``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxbayes.typing import Array

LIKELIHOOD_NAMES = ("bernoulli", "categorical", "gaussian")


def log_prob(likelihood: str, f: Array, y: Array, noise_scale: Array) -> Array:
    """``log p(y | f)`` of one example."""
    if likelihood == "bernoulli":
        return y * f[0] - jax.nn.softplus(f[0])
    if likelihood == "categorical":
        return jax.nn.log_softmax(f)[y.astype(jnp.int32)]
    y = jnp.reshape(y, f.shape)
    return jnp.sum(-0.5 * ((y - f) / noise_scale) ** 2 - jnp.log(noise_scale) - 0.5 * math.log(2 * math.pi))


def output_precision(likelihood: str, f: Array, noise_scale: Array) -> Array:
    """``-d^2 log p(y | f) / df^2`` of one example, ``(C, C)``."""
    if likelihood == "bernoulli":
        p = jax.nn.sigmoid(f)
        return (p * (1 - p))[:, None]
    if likelihood == "categorical":
        p = jax.nn.softmax(f)
        return jnp.diag(p) - jnp.outer(p, p)
    return jnp.eye(f.shape[0], dtype=f.dtype) / noise_scale**2


def inverse_link(likelihood: str, f: Array) -> Array:
    """Class probabilities (``sigmoid`` / ``softmax`` over the last axis) or the mean itself (Gaussian)."""
    if likelihood == "bernoulli":
        return jax.nn.sigmoid(f)
    if likelihood == "categorical":
        return jax.nn.softmax(f, axis=-1)
    return f


__all__ = ["LIKELIHOOD_NAMES", "inverse_link", "log_prob", "output_precision"]
