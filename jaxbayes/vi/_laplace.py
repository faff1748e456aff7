"""Diagonal Fisher / GGN curvature for flax models: Laplace posteriors and Fisher-weighted model merging.

One curvature function, :func:`diagonal_fisher`, serves both:

* ``kind="fisher"``: the exact diagonal of the Fisher information, which for these likelihoods equals the
  generalised Gauss-Newton matrix ``J^T H J``: categorical ``sum_n sum_c p_nc (d log p_nc / d theta)^2``,
  Gaussian ``sum_n (d f_n / d theta)^2 / noise^2``.
* ``kind="empirical"``: the empirical Fisher ``sum_n (d log p(y_n | x_n) / d theta)^2`` (needs labels).

:func:`laplace` turns it into a diagonal Laplace posterior ``N(theta*, (F + prior_precision)^{-1})`` returned as
a :class:`MeanFieldNormal` (so :func:`jaxbayes.vi.predict` gives its predictive). :func:`fisher_merge` merges models
by Matena & Raffel (2022), "Merging Models with Fisher-Weighted Averaging":
``theta* = sum_i lambda_i F_i theta_i / sum_i lambda_i F_i`` elementwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_choice, check_int_range, check_positive
from jaxbayes.typing import ArrayLike, PyTree
from jaxbayes.vi._meanfield import MeanFieldNormal


def diagonal_fisher(
    apply_fn: Callable,
    params: PyTree,
    x: ArrayLike,
    y: ArrayLike | None = None,
    *,
    kind: str = "fisher",
    likelihood: str = "categorical",
    noise_scale: ArrayLike = 1.0,
    batch_size: int | None = None,
) -> PyTree:
    """Diagonal Fisher / GGN ``sum_n diag(F_n)`` over the examples of ``x``, a pytree shaped like ``params``.

    Args:
      apply_fn: ``(params, x_one) -> outputs`` for a single example (logits ``(C,)`` or a scalar / ``(1,)``
        regression output), e.g. ``lambda p, x: module.apply({"params": p}, x[None])[0]``.
      params: parameters at which the curvature is taken (e.g. the trained MAP).
      x: inputs ``(n, ...)``.
      y: labels / targets ``(n,)`` (needed for ``kind="empirical"``).
      kind: ``"fisher"`` (exact Fisher = GGN) or ``"empirical"``.
      likelihood: ``"categorical"`` or ``"gaussian"``.
      noise_scale: Gaussian observation noise std.
      batch_size: examples per ``lax.map`` chunk (bounds memory); default all at once.

    Example:
      >>> import jax.numpy as jnp
      >>> f = lambda p, x: p["w"] * x                       # linear-Gaussian: Fisher = sum x^2 / s^2
      >>> diagonal_fisher(f, {"w": jnp.ones(())}, jnp.array([1.0, 2.0]), likelihood="gaussian")["w"].item()
      5.0
    """
    check_choice("kind", kind, ("fisher", "empirical"))
    check_choice("likelihood", likelihood, ("categorical", "gaussian"))
    check_positive("noise_scale", noise_scale)
    x = jnp.asarray(x)
    n = x.shape[0]
    if kind == "empirical" and y is None:
        raise ValueError("kind='empirical' needs the labels/targets y")
    if y is not None and jnp.shape(y)[0] != n:
        raise ValueError(f"x and y must have the same length, got {n} and {jnp.shape(y)[0]}")
    if batch_size is not None:
        batch_size = check_int_range("batch_size", batch_size, 1, n)
    ys = jnp.zeros(n, jnp.int32) if y is None else jnp.asarray(y)

    def per_example(args):
        xi, yi = args
        if likelihood == "gaussian":
            if kind == "fisher":
                g = jax.grad(lambda p: jnp.sum(apply_fn(p, xi)))(params)
                return jax.tree.map(lambda v: v**2 / noise_scale**2, g)
            g = jax.grad(lambda p: -0.5 * jnp.sum((apply_fn(p, xi) - yi) ** 2) / noise_scale**2)(params)
            return jax.tree.map(jnp.square, g)
        if kind == "empirical":
            g = jax.grad(lambda p: jax.nn.log_softmax(apply_fn(p, xi))[yi.astype(jnp.int32)])(params)
            return jax.tree.map(jnp.square, g)
        logits = apply_fn(params, xi)
        probs = jax.lax.stop_gradient(jax.nn.softmax(logits))
        jac = jax.jacrev(lambda p: jax.nn.log_softmax(apply_fn(p, xi)))(params)  # leaves (C, *shape)
        return jax.tree.map(lambda j: jnp.tensordot(probs, j**2, axes=1), jac)

    per = jax.lax.map(per_example, (x, ys), batch_size=batch_size)
    return jax.tree.map(lambda v: jnp.sum(v, axis=0), per)


def laplace(
    apply_fn: Callable,
    params: PyTree,
    x: ArrayLike,
    y: ArrayLike | None = None,
    *,
    prior_precision: ArrayLike = 1.0,
    kind: str = "fisher",
    likelihood: str = "categorical",
    noise_scale: ArrayLike = 1.0,
    batch_size: int | None = None,
) -> MeanFieldNormal:
    """Diagonal Laplace posterior ``N(params, diag(1 / (F_ii + prior_precision)))`` as a :class:`MeanFieldNormal`.

    ``params`` should be a MAP estimate under the prior ``N(0, 1/prior_precision)``; arguments otherwise as in
    :func:`diagonal_fisher`. MacKay (1992); Ritter, Botev & Barber (2018) for the diagonal/GGN variants.
    :func:`jaxbayes.vi.laplace_posterior` is the whole method (MAP search, full / KFAC / last-layer
    structures, the log evidence, prior tuning and predictives); ``structure="diag"`` there gives this
    diagonal.
    """
    check_positive("prior_precision", prior_precision)
    fisher = diagonal_fisher(apply_fn, params, x, y, kind=kind, likelihood=likelihood, noise_scale=noise_scale,
                             batch_size=batch_size)
    log_scale = jax.tree.map(lambda f: -0.5 * jnp.log(f + prior_precision), fisher)
    return MeanFieldNormal(jax.tree.map(jnp.asarray, params), log_scale)


def fisher_merge(
    params: Sequence[PyTree],
    fishers: Sequence[PyTree],
    *,
    weights: Sequence[float] | ArrayLike | None = None,
    epsilon: ArrayLike = 1e-8,
) -> PyTree:
    """Fisher-weighted average of models sharing one architecture (Matena & Raffel, 2022).

    ``theta* = sum_i lambda_i (F_i + eps) theta_i / sum_i lambda_i (F_i + eps)`` per coordinate; ``eps`` keeps
    coordinates with zero Fisher everywhere at the plain (``lambda``-weighted) average.

    Example:
      >>> import jax.numpy as jnp
      >>> fisher_merge([{"w": jnp.array(0.0)}, {"w": jnp.array(4.0)}],
      ...              [{"w": jnp.array(3.0)}, {"w": jnp.array(1.0)}], epsilon=0.0)["w"].item()
      1.0
    """
    if len(params) == 0 or len(params) != len(fishers):
        raise ValueError(f"params and fishers must be non-empty and of equal length, got {len(params)} and "
                         f"{len(fishers)}")
    structure = jax.tree.structure(params[0])
    for i, (p, f) in enumerate(zip(params, fishers, strict=True)):
        if jax.tree.structure(p) != structure or jax.tree.structure(f) != structure:
            raise ValueError(f"params[{i}] / fishers[{i}] do not have the structure of params[0]")
    check_positive("epsilon", epsilon, strict=False)
    lam = jnp.ones(len(params)) if weights is None else jnp.asarray(weights, jnp.result_type(float))
    if lam.shape != (len(params),):
        raise ValueError(f"weights must have shape ({len(params)},), got {lam.shape}")
    check_positive("weights", lam, strict=False)

    def merge(*leaves):
        k = len(params)
        ps, fs = jnp.stack(leaves[:k]), jnp.stack(leaves[k:])
        w = lam.reshape((k,) + (1,) * (ps.ndim - 1)) * (fs + epsilon)
        return jnp.sum(w * ps, axis=0) / jnp.sum(w, axis=0)

    return jax.tree.map(merge, *params, *fishers)


__all__ = ["diagonal_fisher", "fisher_merge", "laplace"]
