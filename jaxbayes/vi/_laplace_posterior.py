"""The Laplace approximation as one method: MAP finding, a curvature structure, the Laplace log evidence
and prior-precision tuning by maximising it.

``laplace_posterior`` builds ``N(theta*, (H + delta I)^{-1})`` for a model ``f(theta, x)``, a likelihood
``p(y | f)`` and the prior ``N(0, I / delta)``; ``H`` is the GGN or Hessian of ``-log p(D | theta)`` at the MAP
``theta*`` in the structure's coordinates (all parameters, their diagonal, KFAC blocks, or the last layer).

Log evidence. At the MAP of the prior ``delta`` the Laplace formula is
``log p(D | theta*) + log N(theta*; 0, I / delta) + (d/2) log 2 pi - 1/2 log det(H + delta I)``.
For another ``delta'`` the posterior keeps ``H`` and expands the log-likelihood to second order around
``theta*`` (value ``L*``, gradient ``g``, curvature ``-H``); the Laplace evidence of that local model, at its own
mode ``theta' = (H + delta' I)^{-1} (H theta* + g)``, is closed form in ``H``'s eigenbasis
(``O(d)`` per ``delta'`` once ``theta*`` and ``g`` are rotated). It equals the formula above at ``delta' =
delta`` and is the exact log evidence of linear-Gaussian models for every ``delta'``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxbayes._checks import check_choice, check_int_range, check_positive
from jaxbayes.typing import Array, ArrayLike, PRNGKey, PyTree
from jaxbayes.vi._laplace_likelihoods import LIKELIHOOD_NAMES, log_prob
from jaxbayes.vi._laplace_map import MAPResult, find_map
from jaxbayes.vi._laplace_structure import LaplaceProblem, LaplaceStructure, sum_over_examples
from jaxbayes.vi._laplace_structures import as_structure


def as_apply_fn(model: nn.Module | Callable) -> Callable:
    """``(params, x_one) -> f`` from a flax linen module (applied to ``x_one[None]``) or a function as is."""
    if isinstance(model, nn.Module):
        return lambda p, xi: model.apply({"params": p}, xi[None])[0]
    if callable(model):
        return model
    raise TypeError(f"model must be a flax linen Module or a function (params, x_one) -> f, got {type(model)}")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LaplacePosterior:
    """A Laplace posterior ``N(mean, (H + prior_precision I)^{-1})`` over a structure's coordinates.

    Attributes:
      mean: the MAP, a parameter pytree (coordinates outside the structure stay fixed at it).
      curvature: the structure's curvature of ``-log p(D | theta)`` at ``mean`` (a NamedTuple of arrays).
      prior_precision: ``delta`` of the prior ``N(0, I / delta)``.
      log_likelihood: ``log p(D | mean)``.
      gradient: the log-likelihood's gradient at ``mean`` in the structure's coordinates (``delta * theta*`` at
        an exact MAP).
      noise_scale: Gaussian noise std (unused by classifiers).
      map: the :class:`MAPResult` of the MAP search (``converged``, ``n_iters``, ``error``), or ``None``.
      structure: the resolved structure object (static).
      likelihood: the likelihood's name (static).
      apply_fn: ``(params, x_one) -> f`` (static).
    """

    mean: PyTree
    curvature: Any
    prior_precision: Array
    log_likelihood: Array
    gradient: Array
    noise_scale: Array
    map: MAPResult | None
    structure: LaplaceStructure = dataclasses.field(metadata={"static": True})
    likelihood: str = dataclasses.field(metadata={"static": True})
    apply_fn: Callable = dataclasses.field(metadata={"static": True})

    def _delta(self, prior_precision):
        return self.prior_precision if prior_precision is None else jnp.asarray(prior_precision)

    @property
    def theta(self) -> Array:
        """The MAP in the structure's coordinates, ``(d,)``."""
        return self.structure.select(self.mean)

    @property
    def eigenvalues(self) -> Array:
        """Eigenvalues of the log-likelihood curvature ``H`` (without the prior)."""
        return self.structure.eigenvalues(self.curvature)

    def log_det_precision(self, prior_precision: ArrayLike | None = None) -> Array:
        """``log det(H + delta I)``."""
        return jnp.sum(jnp.log(self.eigenvalues + self._delta(prior_precision)))

    def log_evidence(self, prior_precision: ArrayLike | None = None) -> Array:
        """The Laplace log evidence ``log p(D | delta)`` (see the module docstring; ``None``: the fitted delta)."""
        return evidence_fn(self)(self._delta(prior_precision))

    def covariance(self, prior_precision: ArrayLike | None = None) -> Array:
        """The dense posterior covariance ``(H + delta I)^{-1}``, ``(d, d)`` (small models)."""
        s = self.structure
        rot = s.rotate(self.curvature, jnp.eye(self.theta.shape[0], dtype=self.theta.dtype))
        return s.unrotate(self.curvature, rot / (self.eigenvalues + self._delta(prior_precision)))

    def marginal_variance(self, prior_precision: ArrayLike | None = None) -> Array:
        """``diag((H + delta I)^{-1})``, ``(d,)``."""
        return self.structure.marginal_variance(self.curvature, self._delta(prior_precision))

    def whiten(self, v: Array, prior_precision: ArrayLike | None = None) -> Array:
        """``v (H + delta I)^{-1/2}`` in the eigenbasis for rows ``v`` ``(..., d)``: ``whiten(J) whiten(J)^T =
        J Sigma J^T``."""
        return self.structure.rotate(self.curvature, v) / jnp.sqrt(self.eigenvalues + self._delta(prior_precision))

    def sample(self, key: PRNGKey, num_samples: int, prior_precision: ArrayLike | None = None) -> PyTree:
        """``num_samples`` parameter pytrees (leading axis) drawn from the posterior."""
        num_samples = check_int_range("num_samples", num_samples, 1)
        z = jax.random.normal(key, (num_samples, self.theta.shape[0]), self.theta.dtype)
        u = z / jnp.sqrt(self.eigenvalues + self._delta(prior_precision))
        flat = self.theta + self.structure.unrotate(self.curvature, u)
        return jax.vmap(lambda v: self.structure.merge(self.mean, v))(flat)


def evidence_fn(post: LaplacePosterior) -> Callable[[Array], Array]:
    """``delta -> log p(D | delta)`` with the rotations done once (``O(d)`` per call; see the module docstring)."""
    s, c = post.structure, post.curvature
    eig = s.eigenvalues(c)
    theta, g = s.rotate(c, post.theta), s.rotate(c, post.gradient)
    b = eig * theta + g
    d = eig.shape[0]

    def log_evidence(delta):
        new = b / (eig + delta)
        step = new - theta
        loglik = post.log_likelihood + g @ step - 0.5 * jnp.sum(eig * step**2)
        log_prior = -0.5 * delta * jnp.sum(new**2) + 0.5 * d * jnp.log(delta)  # + the 2 pi terms, which cancel
        return loglik + log_prior - 0.5 * jnp.sum(jnp.log(eig + delta))

    return log_evidence


def laplace_posterior(
    model: nn.Module | Callable,
    params: PyTree,
    x: ArrayLike,
    y: ArrayLike,
    *,
    likelihood: str = "categorical",
    structure: str | LaplaceStructure = "full",
    curvature: str | None = None,
    prior_precision: ArrayLike = 1.0,
    noise_scale: ArrayLike = 1.0,
    optimizer: str | optax.GradientTransformation | None = "lbfgs",
    tol: float = 1e-6,
    max_iterations: int = 1000,
    batch_size: int | None = None,
) -> LaplacePosterior:
    """Laplace approximation of ``p(theta | D)`` for ``y ~ p(y | f(theta, x))`` and ``theta ~ N(0, I / delta)``.

    Args:
      model: a flax linen module (applied as ``module.apply({"params": p}, x_one[None])[0]``) or a function
        ``(params, x_one) -> f``; ``f`` is one logit (bernoulli), ``C`` logits (categorical) or the mean.
      params: where the MAP search starts (with ``optimizer=None``: the MAP itself).
      x, y: the data, ``(n, ...)``.
      likelihood: ``"bernoulli"`` (``y`` in {0, 1}), ``"categorical"`` (integer ``y``) or ``"gaussian"``.
      structure: ``"full"``, ``"diag"``, ``"kfac"`` (flax modules), ``"last_layer"`` or a structure object.
      curvature: ``"ggn"`` (default) or ``"hessian"`` for the string shorthands.
      prior_precision: ``delta`` (a positive scalar); see :func:`tune_prior_precision`.
      noise_scale: Gaussian noise std.
      optimizer: the MAP search (:func:`find_map`): ``"lbfgs"``, an optax optimiser, or ``None`` to skip it.
      tol, max_iterations: the MAP search's gradient tolerance and iteration cap.
      batch_size: examples per chunk when summing curvatures and likelihoods (bounds memory).

    Works under ``jit`` with the structural arguments static.

    Example:
      >>> import jax.numpy as jnp
      >>> x, y = jnp.array([[1.0], [2.0]]), jnp.array([1.0, 3.0])
      >>> post = laplace_posterior(lambda w, xi: xi @ w, jnp.zeros(1), x, y, likelihood="gaussian")
      >>> round(float(post.covariance()[0, 0]), 4), bool(post.map.converged)  # 1 / (1 + 4 + 1)
      (0.1667, True)
    """
    check_choice("likelihood", likelihood, LIKELIHOOD_NAMES)
    check_positive("prior_precision", prior_precision)
    check_positive("noise_scale", noise_scale)
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same length, got {x.shape[0]} and {y.shape[0]}")
    if batch_size is not None:
        batch_size = check_int_range("batch_size", batch_size, 1)
    dtype = jnp.result_type(float)
    delta, noise = jnp.asarray(prior_precision, dtype), jnp.asarray(noise_scale, dtype)
    if delta.ndim:
        raise ValueError(f"prior_precision must be a scalar, got shape {delta.shape}")
    apply_fn = as_apply_fn(model)
    problem = LaplaceProblem(apply_fn, x, y, likelihood, noise, batch_size,
                             model if isinstance(model, nn.Module) else None)

    def log_lik(p):
        one = lambda xi, yi: log_prob(likelihood, jnp.reshape(apply_fn(p, xi), (-1,)), yi, noise)
        return sum_over_examples(one, x, y, batch_size)

    params = jax.tree.map(jnp.asarray, params)
    result = None
    if optimizer is not None:
        neg_log_joint = lambda p: -log_lik(p) + 0.5 * delta * optax.tree.norm(p, squared=True)
        result = find_map(neg_log_joint, params, optimizer=optimizer, tol=tol, max_iterations=max_iterations)
        params = result.params
    s = as_structure(structure, curvature=curvature).resolve(problem, params)
    curv = s.fit(problem, params)
    loglik, grad = jax.value_and_grad(lambda v: log_lik(s.merge(params, v)))(s.select(params))
    return LaplacePosterior(params, curv, delta, loglik, grad, noise, result, s, likelihood, apply_fn)


class PriorPrecisionResult(NamedTuple):
    """Result of :func:`tune_prior_precision`.

    Attributes:
      prior_precision: the maximiser ``delta*`` of the Laplace log evidence.
      log_evidence: the log evidence there.
      converged: ``error <= tol`` and the grid's best point was not one of its ends.
      n_iters: golden-section iterations.
      error: the final bracket's width in ``log delta``.
    """

    prior_precision: Array
    log_evidence: Array
    converged: Array
    n_iters: Array
    error: Array


def tune_prior_precision(
    post: LaplacePosterior,
    *,
    grid: ArrayLike | None = None,
    tol: float = 1e-10,
    max_iterations: int = 200,
) -> PriorPrecisionResult:
    """Maximise the Laplace log evidence over the prior precision (type-II maximum likelihood / MacKay).

    A grid search over ``log delta`` (default 81 points from ``1e-4`` to ``1e4``) brackets the maximum, which
    golden-section search on ``log delta`` then refines to a bracket of width ``tol``. Each evaluation reuses
    the posterior's eigendecomposition (``O(d)``), so no curvature is recomputed; jittable. Refit with
    ``laplace_posterior(..., prior_precision=result.prior_precision)`` to move the MAP as well.
    """
    check_positive("tol", tol)
    max_iterations = check_int_range("max_iterations", max_iterations, 1)
    dtype = post.theta.dtype
    grid = jnp.logspace(-4, 4, 81, dtype=dtype) if grid is None else jnp.sort(jnp.asarray(grid, dtype))
    check_positive("grid", grid)
    if grid.ndim != 1 or grid.shape[0] < 3:
        raise ValueError(f"grid must be a vector of at least 3 precisions, got shape {grid.shape}")
    ev = evidence_fn(post)
    f = lambda t: ev(jnp.exp(t))
    t_grid = jnp.log(grid)
    best = jnp.argmax(jax.vmap(f)(t_grid))
    interior = (best > 0) & (best < grid.shape[0] - 1)  # a maximum at the grid's end is not bracketed
    i = jnp.clip(best, 1, grid.shape[0] - 2)
    ratio = (math.sqrt(5.0) - 1.0) / 2.0

    def cond(carry):
        lo, hi, it = carry
        return (hi - lo > tol) & (it < max_iterations)

    def body(carry):
        lo, hi, it = carry
        c, d = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        better_left = f(c) > f(d)
        return jnp.where(better_left, lo, c), jnp.where(better_left, d, hi), it + 1

    lo, hi, it = jax.lax.while_loop(cond, body, (t_grid[i - 1], t_grid[i + 1], jnp.zeros((), jnp.int32)))
    t = 0.5 * (lo + hi)
    return PriorPrecisionResult(jnp.exp(t), f(t), (hi - lo <= tol) & interior, it, hi - lo)


__all__ = ["LaplacePosterior", "PriorPrecisionResult", "as_apply_fn", "evidence_fn", "laplace_posterior",
           "tune_prior_precision"]
