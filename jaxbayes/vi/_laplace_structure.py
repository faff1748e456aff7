"""The Laplace curvature-structure interface: a small frozen object that computes the log-likelihood
curvature of a model at its MAP in an eigenbasis, plus the problem it is computed on.

Every structure represents the curvature ``H`` (GGN or Hessian of ``-log p(D | theta)``) of its parameter
coordinates ``v = select(params)`` (``d`` numbers) as an orthonormal rotation and eigenvalues,
``H = R^T diag(eigenvalues) R`` with ``rotate(v) = R v`` and ``unrotate(u) = R^T u``. With a prior
``N(0, I / delta)`` everything the posterior needs is then closed form for every ``delta`` at no new
curvature cost: ``log det(H + delta I) = sum log(eigenvalues + delta)``, ``(H + delta I)^{-1/2}``, samples,
marginal variances. A new structure is one subclass implementing :meth:`fit`, :meth:`rotate`,
:meth:`unrotate`, :meth:`eigenvalues` and :meth:`marginal_variance` (and :meth:`select`/:meth:`merge` when it
covers only some parameters).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxbayes.typing import Array, PyTree

CURVATURES = ("ggn", "hessian")


class LaplaceProblem(NamedTuple):
    """What a structure computes the curvature on.

    Attributes:
      apply_fn: ``(params, x_one) -> f`` for one example, reshaped to a vector ``(C,)``.
      x: inputs ``(n, ...)``.
      y: targets ``(n, ...)``.
      likelihood: ``"bernoulli"``, ``"categorical"`` or ``"gaussian"``.
      noise_scale: Gaussian noise std.
      batch_size: examples summed per chunk (bounds memory); ``None``: all at once.
      module: the flax linen module behind ``apply_fn``, or ``None`` (needed by KFAC and to find the last layer).
    """

    apply_fn: Callable
    x: Array
    y: Array
    likelihood: str
    noise_scale: Array
    batch_size: int | None
    module: Any


def sum_over_examples(fn: Callable[[Array, Array], PyTree], x: Array, y: Array, batch_size: int | None) -> PyTree:
    """``sum_n fn(x_n, y_n)``: vectorised over all examples, or over chunks of ``batch_size`` in a ``lax.scan``."""
    n = x.shape[0]
    if batch_size is None or batch_size >= n:
        return jax.tree.map(lambda v: jnp.sum(v, axis=0), jax.vmap(fn)(x, y))
    chunks = -(-n // batch_size)
    pad = chunks * batch_size - n
    padded = [jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)]).reshape((chunks, batch_size) + a.shape[1:])
              for a in (x, y)]
    mask = (jnp.arange(chunks * batch_size) < n).reshape(chunks, batch_size)

    def body(total, chunk):
        xc, yc, mc = chunk
        out = jax.vmap(fn)(xc, yc)
        part = jax.tree.map(lambda v: jnp.tensordot(mc.astype(v.dtype), v, axes=1), out)
        return jax.tree.map(jnp.add, total, part), None

    zero = jax.tree.map(lambda s: jnp.zeros(s.shape[1:], s.dtype), jax.eval_shape(jax.vmap(fn), x[:1], y[:1]))
    total, _ = jax.lax.scan(body, zero, (*padded, mask))
    return total


class LaplaceStructure:
    """Base class of the curvature structures (frozen dataclasses, so they can be static under ``jit``)."""

    def resolve(self, problem: LaplaceProblem, params: PyTree) -> LaplaceStructure:
        """This structure with whatever it finds out from the model filled in (layer paths); default: itself."""
        del problem, params
        return self

    def select(self, params: PyTree) -> Array:
        """The structure's parameter coordinates, a flat vector ``(d,)``; default: all parameters raveled."""
        return ravel_pytree(params)[0]

    def merge(self, params: PyTree, flat: Array) -> PyTree:
        """``params`` with the structure's coordinates replaced by ``flat``."""
        return ravel_pytree(params)[1](flat)

    def fit(self, problem: LaplaceProblem, params: PyTree) -> NamedTuple:
        """The curvature of ``-log p(D | theta)`` at ``params`` (a NamedTuple of arrays)."""
        raise NotImplementedError

    def rotate(self, curvature: NamedTuple, v: Array) -> Array:
        """``R v`` for vectors ``v`` of shape ``(..., d)``: into the eigenbasis."""
        raise NotImplementedError

    def unrotate(self, curvature: NamedTuple, u: Array) -> Array:
        """``R^T u`` for ``u`` of shape ``(..., d)``: back to parameter coordinates."""
        raise NotImplementedError

    def eigenvalues(self, curvature: NamedTuple) -> Array:
        """The curvature's eigenvalues ``(d,)`` in the order of :meth:`rotate`'s coordinates."""
        raise NotImplementedError

    def marginal_variance(self, curvature: NamedTuple, prior_precision: Array) -> Array:
        """``diag((H + prior_precision I)^{-1})`` in parameter coordinates, ``(d,)``."""
        raise NotImplementedError


def flat_model(problem: LaplaceProblem, structure: LaplaceStructure, params: PyTree) -> Callable[[Array, Array], Array]:
    """``(v, x_one) -> f`` with the structure's coordinates ``v`` and the rest of ``params`` held fixed."""
    return lambda v, xi: jnp.reshape(problem.apply_fn(structure.merge(params, v), xi), (-1,))


__all__ = ["CURVATURES", "LaplaceProblem", "LaplaceStructure", "flat_model",
           "sum_over_examples"]
