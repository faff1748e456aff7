"""Laplace curvature structures: full, diagonal and last-layer (KFAC lives in its own file), and
:func:`as_structure`, which turns a name into a structure object.

* :class:`LaplaceFull`: the exact ``d x d`` GGN ``sum_n J_n^T Lambda_n J_n`` or Hessian of
  ``-log p(D | theta)`` over all parameters, eigendecomposed once.
* :class:`LaplaceDiag`: its diagonal only.
* :class:`LaplaceLastLayer`: the full structure over the parameters of the last dense layer, the others held
  at the MAP (Kristiadi, Hein & Hennig, "Being Bayesian, even just a bit, fixes overconfidence", ICML 2020).
* :class:`jaxbayes.vi.LaplaceKFAC`: Kronecker-factored blocks per dense layer.

The strings ``"full"``, ``"diag"``, ``"kfac"`` and ``"last_layer"`` are shorthands.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxbayes._checks import check_choice
from jaxbayes.typing import Array, PyTree
from jaxbayes.vi._laplace_kfac import LaplaceKFAC, dense_layers
from jaxbayes.vi._laplace_likelihoods import log_prob, output_precision
from jaxbayes.vi._laplace_structure import (
    CURVATURES,
    LaplaceProblem,
    LaplaceStructure,
    flat_model,
    sum_over_examples,
)
from jaxbayes.vi._tree_paths import get_path, set_path


class FullCurvature(NamedTuple):
    """``H = Q diag(eigenvalues) Q^T`` (``Q = eigenvectors``, columns orthonormal)."""

    eigenvalues: Array
    eigenvectors: Array


class DiagCurvature(NamedTuple):
    """The diagonal of the curvature, ``(d,)``."""

    diagonal: Array


def curvature_matrix(problem: LaplaceProblem, structure: LaplaceStructure, params: PyTree, curvature: str,
                     diagonal: bool = False) -> Array:
    """GGN or Hessian of ``-log p(D | theta)`` in the structure's coordinates: ``(d, d)``, or ``(d,)`` if
    ``diagonal`` (the GGN diagonal without forming the matrix; the Hessian's diagonal from per-example
    Hessians)."""
    f = flat_model(problem, structure, params)
    v0 = structure.select(params)

    def per_example(xi, yi):
        if curvature == "hessian":
            h = jax.hessian(lambda v: -log_prob(problem.likelihood, f(v, xi), yi, problem.noise_scale))(v0)
            return jnp.diag(h) if diagonal else h
        jac = jax.jacrev(f)(v0, xi)  # (C, d)
        lam = output_precision(problem.likelihood, f(v0, xi), problem.noise_scale)
        if diagonal:
            return jnp.einsum("cd,ce,ed->d", jac, lam, jac)
        return jac.T @ lam @ jac

    return sum_over_examples(per_example, problem.x, problem.y, problem.batch_size)


@dataclasses.dataclass(frozen=True)
class LaplaceFull(LaplaceStructure):
    """Full curvature over all parameters: ``curvature="ggn"`` (generalised Gauss-Newton, PSD) or
    ``"hessian"`` (exact Hessian of the negative log-likelihood). Cost: ``d x d`` memory, one ``eigh``.

    Example:
      >>> LaplaceFull("hessian")
      LaplaceFull(curvature='hessian')
    """

    curvature: str = "ggn"

    def __post_init__(self):
        check_choice("curvature", self.curvature, CURVATURES)

    def fit(self, problem, params):
        h = curvature_matrix(problem, self, params, self.curvature)
        lam, q = jnp.linalg.eigh(0.5 * (h + h.T))
        return FullCurvature(lam, q)

    def rotate(self, curvature, v):
        return v @ curvature.eigenvectors

    def unrotate(self, curvature, u):
        return u @ curvature.eigenvectors.T

    def eigenvalues(self, curvature):
        return curvature.eigenvalues

    def marginal_variance(self, curvature, prior_precision):
        return curvature.eigenvectors**2 @ (1.0 / (curvature.eigenvalues + prior_precision))


@dataclasses.dataclass(frozen=True)
class LaplaceDiag(LaplaceStructure):
    """Diagonal curvature (of the GGN, or of the Hessian: ``curvature="hessian"``, which forms per-example
    Hessians and so suits small models only)."""

    curvature: str = "ggn"

    def __post_init__(self):
        check_choice("curvature", self.curvature, CURVATURES)

    def fit(self, problem, params):
        return DiagCurvature(curvature_matrix(problem, self, params, self.curvature, diagonal=True))

    def rotate(self, curvature, v):
        return v

    def unrotate(self, curvature, u):
        return u

    def eigenvalues(self, curvature):
        return curvature.diagonal

    def marginal_variance(self, curvature, prior_precision):
        return 1.0 / (curvature.diagonal + prior_precision)


@dataclasses.dataclass(frozen=True)
class LaplaceLastLayer(LaplaceFull):
    """Full curvature over the parameters at ``path`` (a tuple of keys into the params), the rest fixed.

    ``path=None`` finds the last ``flax.linen.Dense`` layer the module calls (needs a flax module as the
    model); pass the path for a plain ``apply_fn``. The prior and the evidence count these parameters only.
    """

    curvature: str = "ggn"
    path: tuple[str, ...] | None = None

    def resolve(self, problem, params):
        if self.path is not None:
            return dataclasses.replace(self, path=tuple(self.path))
        if not isinstance(problem.module, nn.Module):
            raise ValueError("LaplaceLastLayer(path=None) finds the last dense layer of a flax linen module; "
                             "pass path=(...) for a plain apply_fn")
        layers = dense_layers(problem.module, params, problem.x[0])
        return dataclasses.replace(self, path=layers[-1].path)

    def select(self, params):
        return ravel_pytree(get_path(params, self.path))[0]

    def merge(self, params, flat):
        return set_path(params, self.path, ravel_pytree(get_path(params, self.path))[1](flat))


STRUCTURES: dict[str, type[LaplaceStructure]] = {"full": LaplaceFull, "diag": LaplaceDiag, "kfac": LaplaceKFAC,
                                                 "last_layer": LaplaceLastLayer}


def as_structure(structure: str | LaplaceStructure, *, curvature: str | None = None) -> LaplaceStructure:
    """Turn ``structure`` into a :class:`LaplaceStructure` object.

    Args:
      structure: ``"full"``, ``"diag"``, ``"kfac"``, ``"last_layer"`` or a structure object (returned as is).
      curvature: ``"ggn"`` or ``"hessian"`` for the string shorthands (default ``"ggn"``; KFAC is GGN only);
        a structure object carries its own.

    Example:
      >>> as_structure("diag", curvature="hessian")
      LaplaceDiag(curvature='hessian')
    """
    if isinstance(structure, LaplaceStructure):
        if curvature is not None:
            raise ValueError(f"curvature is an option of the string shorthands; {structure!r} carries its own")
        return structure
    if isinstance(structure, str):
        if structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {sorted(STRUCTURES)} or a LaplaceStructure, got {structure!r}")
        if structure == "kfac":
            if curvature not in (None, "ggn"):
                raise ValueError("KFAC approximates the GGN; curvature='hessian' is not available for it")
            return LaplaceKFAC()
        return STRUCTURES[structure](curvature="ggn" if curvature is None else curvature)
    raise TypeError(f"structure must be a name or a LaplaceStructure, got {type(structure).__name__}")


__all__ = ["STRUCTURES", "DiagCurvature", "FullCurvature", "LaplaceDiag", "LaplaceFull", "LaplaceLastLayer",
           "as_structure", "curvature_matrix"]
