"""GP solvers as small frozen objects (strings as shorthand): how :func:`gp_condition` solves
``(K + noise I) alpha = y``.

* :class:`Cholesky` — exact, ``O(n^3)``, with the jitter policy of :func:`jittered_cholesky` (no jitter unless
  the factorisation fails, then a growing one);
* :class:`CG` — conjugate gradients, ``O(n^2)`` per iteration, for large ``n`` (a given relative jitter is
  added once, without retries; none by default).

A new solver is one class with a ``condition`` method; :func:`as_solver` accepts today's strings
(``"cholesky"``, ``"cg"``), as ``jaxbayes.ot.as_cost`` does for costs.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_int_range, check_positive
from jaxbayes.kernels._linalg import cg_solve, jittered_cholesky
from jaxbayes.typing import Array, ArrayLike


class GPConditioned(NamedTuple):
    """A GP conditioned on training data (reusable for many predictions).

    Attributes:
      chol: Cholesky factor of ``K + (noise + jitter) I`` (``None`` for the CG solver).
      alpha: ``(K + (noise + jitter) I)^{-1} y``.
      matrix: ``K + (noise + jitter) I`` when the CG solver is used, else ``None``.
      jitter: the absolute jitter used (``0.0`` when ``K + noise I`` factored as it is).
      ok: whether the factorisation / CG solve succeeded.
    """

    chol: Array | None
    alpha: Array
    matrix: Array | None
    jitter: Array
    ok: Array


@runtime_checkable
class GPSolver(Protocol):
    def condition(self, k: Array, y: Array, noise: ArrayLike, *, jitter: float, max_tries: int) -> GPConditioned:
        """Solve ``(K + noise I) alpha = y`` for checked ``k`` ``(n, n)`` and ``y`` ``(n,)``/``(n, k)``."""


@dataclasses.dataclass(frozen=True)
class Cholesky:
    """Exact solves through :func:`jittered_cholesky`: ``K + noise I`` as it is (``jitter=0``) unless it fails
    to factor, then a growing jitter (``max_tries`` factorisations in all).

    Example:
      >>> import jax.numpy as jnp
      >>> c = Cholesky().condition(jnp.eye(2), jnp.array([1.0, 2.0]), 1.0, jitter=0.0, max_tries=5)
      >>> [round(v, 4) for v in c.alpha.tolist()], float(c.jitter)
      ([0.5, 1.0], 0.0)
    """

    def condition(self, k: Array, y: Array, noise: ArrayLike, *, jitter: float, max_tries: int) -> GPConditioned:
        ch = jittered_cholesky(k, jitter=jitter, max_tries=max_tries, shift=noise, name="k_train_train")
        alpha = jax.scipy.linalg.cho_solve((ch.chol, True), y)
        return GPConditioned(ch.chol, alpha, None, ch.jitter, ch.ok)


@dataclasses.dataclass(frozen=True)
class CG:
    """Conjugate-gradient solves (:func:`cg_solve`) of ``K + (noise + j) I``, ``j = jitter * mean(diag)``
    (``jitter`` from :func:`gp_condition`, 0 by default).

    With a :class:`~jaxbayes.kernels.KernelOperator` instead of a matrix (``gp_condition``,
    ``log_marginal_likelihood``) the solves are preconditioned and batched, and the log determinant is
    estimated by stochastic Lanczos quadrature (BBMM, :mod:`jaxbayes.kernels._bbmm`); the last four fields only
    apply there.

    Attributes:
      tol: relative residual at which CG stops (> 0).
      max_iterations: iteration cap (``None``: ``10 n`` for matrices, ``min(10 n, 1000)`` for operators).
      preconditioner_rank: rank of the pivoted-Cholesky preconditioner (>= 0; 0: none).
      num_probes: Gaussian probe vectors of the log-determinant and trace estimates (>= 1; >= 2 for a
        standard error).
      lanczos_iterations: CG iterations whose coefficients form the Lanczos tridiagonal (>= 1; a column that
        needs more is truncated there, a Gauss quadrature of that many nodes).
      min_lanczos_iterations: CG iterations every probe column runs whatever ``tol`` (>= 1; capped at ``n``
        and ``lanczos_iterations``; a probe also stops once its residual is at the rounding level): the
        quadrature's nodes. Its bias (Gauss overestimates ``int log``: a too small ``lml``) is not in the
        stated standard error and does not average out, so it must not depend on how loose ``tol`` is. 10:
        at 2-3 nodes (a loose ``tol`` with a good preconditioner) the bias was up to 2.5 standard errors, at
        6-8 it was below 0.1 of one in every problem measured (RBF, ``n`` 2000-5000, 1-2 inputs).

    Example:
      >>> import jax.numpy as jnp
      >>> c = CG(tol=1e-10).condition(jnp.eye(2), jnp.array([1.0, 2.0]), 1.0, jitter=0.0, max_tries=1)
      >>> [round(v, 4) for v in c.alpha.tolist()], bool(c.ok)
      ([0.5, 1.0], True)
    """

    tol: float = 1e-6
    max_iterations: int | None = None
    preconditioner_rank: int = 15
    num_probes: int = 16
    lanczos_iterations: int = 100
    min_lanczos_iterations: int = 10

    def __post_init__(self):
        check_positive("tol", self.tol)
        if self.max_iterations is not None:
            check_int_range("max_iterations", self.max_iterations, 1)
        check_int_range("preconditioner_rank", self.preconditioner_rank, 0)
        check_int_range("num_probes", self.num_probes, 1)
        check_int_range("lanczos_iterations", self.lanczos_iterations, 1)
        check_int_range("min_lanczos_iterations", self.min_lanczos_iterations, 1)

    def condition(self, k: Array, y: Array, noise: ArrayLike, *, jitter: float, max_tries: int) -> GPConditioned:
        del max_tries  # no retries: CG does not fail loudly on an indefinite matrix
        check_positive("jitter", jitter, strict=False)
        idx = jnp.arange(k.shape[0])
        noise = jnp.asarray(noise, k.dtype)
        j = jax.lax.stop_gradient(jitter * jnp.abs(jnp.mean(jnp.diagonal(k)) + noise))
        a = k.at[idx, idx].add(noise + j)
        res = cg_solve(a, y, tol=self.tol, max_iterations=self.max_iterations)
        return GPConditioned(None, res.x, a, j, res.converged)


SOLVERS = {"cholesky": Cholesky, "cg": CG}


def as_solver(solver: str | GPSolver) -> GPSolver:
    """A :class:`GPSolver` from a solver object or its name (``"cholesky"``, ``"cg"``, default options).

    Example:
      >>> as_solver("cg")  # doctest: +NORMALIZE_WHITESPACE
      CG(tol=1e-06, max_iterations=None, preconditioner_rank=15, num_probes=16, lanczos_iterations=100,
      min_lanczos_iterations=10)
    """
    if isinstance(solver, str):
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {sorted(SOLVERS)} or a GPSolver, got {solver!r}")
        return SOLVERS[solver]()
    if not isinstance(solver, GPSolver):
        raise TypeError(f"solver must be a string or an object with a condition method, got {type(solver).__name__}")
    return solver


__all__ = ["CG", "SOLVERS", "Cholesky", "GPConditioned", "GPSolver", "as_solver"]
