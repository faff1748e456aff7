r"""Implicit differentiation of a solver's answer through its optimality condition (one helper for all solvers).

A solver returns :math:`x^\star(\theta)` with :math:`R(\theta, x^\star) = 0` (a fixed point :math:`x = T(\theta,
x)` has :math:`R = x - T`; an argmin has :math:`R = \nabla_x F`). By the implicit function theorem
(Krantz & Parks 2002; Blondel et al. 2022, "Efficient and modular implicit differentiation")

.. math:: \frac{\partial x^\star}{\partial \theta} = -J^{-1} \partial_\theta R, \qquad J = \partial_x R,

so the vector-Jacobian product with a cotangent :math:`v` is :math:`-\lambda^\top \partial_\theta R` with
:math:`J^\top \lambda = v`. :func:`implicit_vjp` solves that system by conjugate gradients with matrix-free
products (``J`` must be symmetric positive (semi-)definite: a residual that is the gradient of a convex
function, or a symmetrised one such as the Sinkhorn marginal residual), plus a ``ridge`` for flat directions.
The solver's loop is never unrolled.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbayes.parallel import explicit_spec, unshard
from jaxbayes.typing import PyTree


class LinearSolve(NamedTuple):
    """How :func:`implicit_vjp` solves :math:`(J + \\text{ridge}\\,I)\\lambda = v` (static, hashable).

    Attributes:
      max_iterations: conjugate-gradient iterations.
      ridge: added to the diagonal (the system may be singular along gauge or flat directions).
      tol: relative residual tolerance of CG (``|r| <= tol |v|``).
    """

    max_iterations: int = 100
    ridge: float = 1e-6
    tol: float = 1e-5


def implicit_tol(cg_tol: float | None, forward_tol: float, dtype: Any) -> float:
    """The conjugate-gradient tolerance of a backward pass: ``cg_tol`` when given; otherwise the forward
    solve's own tolerance (its answer is no more accurate than that, and a looser solve would make the gradient
    less accurate than the answer), at most ``1e-5`` and at least 10 machine epsilons of ``dtype``.

    Example:
      >>> import numpy as np
      >>> implicit_tol(None, 1e-13, np.float64), implicit_tol(None, 1e-3, np.float32), implicit_tol(1e-8, 1e-3, float)
      (1e-13, 1e-05, 1e-08)
    """
    if cg_tol is not None:
        if not (float(cg_tol) > 0 and np.isfinite(float(cg_tol))):
            raise ValueError(f"cg_tol must be finite and > 0, got {cg_tol!r}")
        return float(cg_tol)
    floor = 10 * float(jnp.finfo(dtype).eps)
    return float(max(min(float(forward_tol), 1e-5), floor))


def implicit_vjp(residual: Callable[[PyTree, PyTree], PyTree], theta: PyTree, x: PyTree, v: PyTree,
                 solve: LinearSolve | None = None, *,
                 project: Callable[[PyTree], PyTree] | None = None) -> PyTree:
    r"""Cotangent of ``theta`` for the cotangent ``v`` of the solution ``x`` of ``residual(theta, x) = 0``.

    Computes :math:`-\lambda^\top \partial_\theta R(\theta, x)` with :math:`(\partial_x R + \text{ridge}\, I)
    \lambda = v` solved by CG (``partial_x R`` symmetric PSD). ``project`` (optional) removes a null-space
    component (e.g. a gauge direction) from ``v`` before the solve and from ``lambda`` after it.

    Example (the fixed point of :math:`x = A x + b`, whose derivative in ``b`` is :math:`(I - A)^{-1}`):
      >>> import jax, jax.numpy as jnp
      >>> A = jnp.array([[0.5, 0.1], [0.1, 0.3]])
      >>> res = lambda b, x: x - A @ x - b
      >>> x = jnp.linalg.solve(jnp.eye(2) - A, jnp.ones(2))
      >>> g = implicit_vjp(res, jnp.ones(2), x, jnp.array([1.0, 0.0]), LinearSolve(ridge=0.0))
      >>> bool(jnp.allclose(g, jnp.linalg.solve((jnp.eye(2) - A).T, jnp.array([1.0, 0.0])), atol=1e-5))
      True
    """
    solve = LinearSolve() if solve is None else solve
    if project is not None:
        v = project(v)
    # CG's inner products need whole vectors: explicitly sharded cotangents (potentials of a sharded
    # Sinkhorn) are gathered for the solve, O(n) per device, while the products in matvec stay sharded;
    # lambda goes back to the cotangent's sharding for the final vjp (all no-ops without Explicit axes)
    leaves, treedef = jax.tree.flatten(v)
    shardings = [None if explicit_spec(a) is None else jax.typeof(a).sharding for a in leaves]
    v = unshard(v)

    def matvec(u):
        ju = jax.jvp(lambda xx: residual(theta, xx), (x,), (u,))[1]
        return unshard(jax.tree.map(lambda h, uu: h + solve.ridge * uu, ju, u))

    lam, _ = jax.scipy.sparse.linalg.cg(matvec, v, tol=solve.tol, maxiter=solve.max_iterations)
    lam = treedef.unflatten([a if s is None else jax.sharding.reshard(a, s)
                             for a, s in zip(treedef.flatten_up_to(lam), shardings, strict=True)])
    if project is not None:
        lam = project(lam)
    _, vjp_theta = jax.vjp(lambda th: residual(th, x), theta)
    (g_theta,) = vjp_theta(jax.tree.map(jnp.negative, lam))
    return g_theta


def root_solve(solver: Callable[[Any, PyTree, PyTree], Any], residual_of: Callable[[Any], Callable],
               solve_of: Callable[[Any], LinearSolve], project_of: Callable[[Any], Callable | None] | None = None
               ) -> Callable[[Any, PyTree, PyTree], Any]:
    """Wrap ``solver(config, theta, x0) -> (x, *aux)`` so that ``x`` is differentiated implicitly in ``theta``.

    ``config`` is static (hashable); ``residual_of(config)`` is the residual ``R(theta, x)``, ``solve_of(config)``
    the :class:`LinearSolve`, ``project_of(config)`` an optional null-space projection ``project(theta, v)``
    (it may depend on ``theta``, e.g. on which weights are zero). ``theta`` enters the
    forward solve under ``stop_gradient``; ``x0`` and the auxiliary outputs get no gradient.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> def fixed_point(config, b, x0):  # x = x / 2 + b, so x* = 2 b
      ...     return jax.lax.fori_loop(0, 60, lambda i, x: x / 2 + b, x0), 60
      >>> solve = root_solve(fixed_point, lambda c: (lambda b, x: x - x / 2 - b), lambda c: LinearSolve(ridge=0.0))
      >>> float(jax.grad(lambda b: solve(None, b, jnp.zeros(()))[0])(jnp.asarray(1.0)))
      2.0
    """
    @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
    def run(config, theta, x0):
        return solver(config, jax.lax.stop_gradient(theta), x0)

    def fwd(config, theta, x0):
        out = run(config, theta, x0)
        return out, (theta, out[0], x0)

    def bwd(config, res, cts):
        theta, x, x0 = res
        project = None if project_of is None else project_of(config)
        if project is not None:
            project = functools.partial(project, theta)
        g = implicit_vjp(residual_of(config), theta, x, cts[0], solve_of(config), project=project)
        return g, jax.tree.map(jnp.zeros_like, x0)

    run.defvjp(fwd, bwd)
    return run


__all__ = ["LinearSolve", "implicit_tol", "implicit_vjp", "root_solve"]
