"""Dense linear algebra for the GP solvers: a jittered Cholesky factorisation and conjugate gradients.

**Jitter policy.** The first try factors exactly ``K + s I`` (``jitter=0`` by default: no jitter is added to a
matrix that factors, so a well-conditioned problem gives the exact answer). Only if that factor is
non-finite (the matrix is not numerically positive definite) is a jitter added and grown: ``j_1 =
retry_jitter * mean(diag(K + s I))`` (relative, so scale free; default ``1e-8`` in float64, ``1e-6`` in
float32), then ``j_{t+1} = growth * j_t``, up to ``max_tries`` factorisations in all. A positive ``jitter``
makes the first try use ``jitter * mean(diag)`` instead (and the retries start from at least
``growth`` times it). The retries are a ``lax.while_loop`` (so it works under ``jit`` and ``vmap``) whose
initial state is the first factorisation: on the happy path that factorisation is the only one done and it
is the one returned. Gradients are the Cholesky derivative at the returned factor (the jitter is chosen
on stopped values; ``d jitter = 0``), so reverse mode never goes through the loop and costs what
``jnp.linalg.cholesky``'s does. The absolute jitter used (``0.0`` when the first try succeeds), the number
of tries and an ``ok`` flag are returned, and every GP/Student-t result carries the jitter. Called
eagerly, a matrix that is still not positive definite after the last try raises ``ValueError`` naming the
argument; under ``jit`` ``ok`` is ``False`` and the outputs are NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_int_range, check_positive, concrete_value
from jaxbayes._deprecation import renamed_arguments
from jaxbayes.kernels._common import check_square_matrix
from jaxbayes.typing import Array, ArrayLike


class CholeskyResult(NamedTuple):
    """A jittered Cholesky factorisation.

    Attributes:
      chol: lower-triangular ``L`` with ``L L^T = A + jitter I``.
      jitter: the absolute jitter added to the diagonal.
      ok: whether the factor is finite (the matrix was positive definite after jitter).
      n_tries: how many factorisations were attempted.
    """

    chol: Array
    jitter: Array
    ok: Array
    n_tries: Array


class CGResult(NamedTuple):
    """Conjugate-gradient solution of ``A x = b`` (one solve per column of ``b``).

    Attributes:
      x: the solution, shaped like ``b``.
      n_iters: iterations run.
      error: largest relative residual ``|b - A x| / |b|`` over columns (was ``residual_norm``).
      converged: ``error <= tol``.
    """

    x: Array
    n_iters: Array
    error: Array
    converged: Array

    @property
    def residual_norm(self) -> Array:
        """Deprecated name of :attr:`error`."""
        warnings.warn("CGResult.residual_norm was renamed CGResult.error", DeprecationWarning, stacklevel=2)
        return self.error


def default_retry_jitter(dtype) -> float:
    """The relative jitter of the first retry: ``1e-8`` for float64, ``1e-6`` for narrower floats."""
    return 1e-8 if jnp.finfo(dtype).bits >= 64 else 1e-6


@jax.custom_jvp
def _with_cholesky_derivative(chol: Array, a: Array, shift: Array) -> Array:
    """``chol``, the factor of ``a + (shift + j) I`` found by the jitter search, differentiated as a Cholesky
    factor of that matrix with respect to ``a`` and ``shift`` (``j`` is held fixed)."""
    return chol


@_with_cholesky_derivative.defjvp
def _with_cholesky_derivative_jvp(primals, tangents):
    # the forward-mode Cholesky rule JAX uses (Murray, 2016): dL = L phi(L^{-1} dA L^{-T}); it is linear in
    # dA, so reverse mode transposes it exactly as for jnp.linalg.cholesky
    # (the primal output is the function itself, so that higher derivatives go through this rule again)
    chol = _with_cholesky_derivative(*primals)
    _, da, dshift = tangents
    n = chol.shape[-1]
    idx = jnp.arange(n)
    dm = da.at[idx, idx].add(dshift)
    tmp = jax.lax.linalg.triangular_solve(chol, dm, left_side=False, transpose_a=True, lower=True)
    x = jax.lax.linalg.triangular_solve(chol, tmp, left_side=True, transpose_a=False, lower=True)
    phi = jnp.tril(x) / (1 + jnp.eye(n, dtype=x.dtype))
    return chol, jnp.matmul(chol, phi, precision=jax.lax.Precision.HIGHEST)


def jittered_cholesky(a: ArrayLike, *, jitter: float = 0.0, max_tries: int = 5, growth: float = 10.0,
                      shift: ArrayLike = 0.0, name: str = "a", retry_jitter: float | None = None
                      ) -> CholeskyResult:
    """Cholesky factor of ``a + (shift + j) I``: ``j = 0`` unless that fails, then a growing jitter.

    The policy is in the module docstring: the first try adds ``jitter * mean(diag(a + shift I))`` (0 by
    default); each retry uses ``max(growth * j, retry_jitter * mean(diag))``. Only the lower triangle of
    ``a`` is read (as LAPACK does). On the happy path one factorisation is done (the initial state of the
    retry ``lax.while_loop``) and returned; the derivative is the Cholesky derivative at the returned
    factor, with the jitter held fixed.

    Args:
      a: symmetric ``(n, n)`` matrix.
      jitter: relative jitter of the first try (>= 0; 0: none).
      max_tries: factorisations in all (>= 1; 1: no retries).
      growth: factor applied to the jitter after each failed retry (> 1).
      shift: added to the diagonal first (e.g. the observation-noise variance), without forming
        ``a + shift I`` separately.
      name: the argument name used in error messages.
      retry_jitter: relative jitter of the first retry (> 0); ``None``: ``1e-8`` in float64, ``1e-6``
        in float32.

    Raises:
      ValueError: (eagerly) when ``a`` is still not positive definite after ``max_tries`` attempts.

    Example:
      >>> import jax.numpy as jnp
      >>> r = jittered_cholesky(jnp.eye(2))  # factors: no jitter
      >>> bool(r.ok), int(r.n_tries), float(r.jitter)
      (True, 1, 0.0)
      >>> r = jittered_cholesky(jnp.ones((2, 2)))  # singular: retried with a jitter
      >>> bool(r.ok), int(r.n_tries) > 1, float(r.jitter) > 0
      (True, True, True)
    """
    a = check_square_matrix(name, a)
    check_positive("jitter", jitter, strict=False)
    max_tries = check_int_range("max_tries", max_tries, 1)
    check_positive("growth", growth)
    retry_jitter = default_retry_jitter(a.dtype) if retry_jitter is None else retry_jitter
    check_positive("retry_jitter", retry_jitter)
    shift = jnp.asarray(shift, a.dtype)
    # the search runs on stopped values (while_loop is not reverse-differentiable); the derivative is
    # attached to its result below
    a_stop = jax.lax.stop_gradient(a)
    shift_stop = jax.lax.stop_gradient(shift)
    idx = jnp.arange(a.shape[0])
    scale = jnp.abs(jnp.mean(jnp.diagonal(a_stop)) + shift_stop)
    scale = jnp.where(scale > 0, scale, 1.0)

    def attempt(j):
        # a failed factorisation comes back all NaN; any NaN in the factor also reaches its diagonal
        chol = jnp.linalg.cholesky(a_stop.at[idx, idx].add(shift_stop + j), symmetrize_input=False)
        return chol, jnp.all(jnp.isfinite(jnp.diagonal(chol)))

    n = a.shape[0]
    j0 = jnp.asarray(jitter, a.dtype) * scale
    chol, ok = attempt(j0)
    j, tries = j0, jnp.asarray(1)
    if max_tries > 1:
        retry = jnp.asarray(retry_jitter, a.dtype) * scale
        # The loop carries the factor as the flat row-major L^T, i.e. LAPACK's column-major L as it is: XLA:CPU
        # would otherwise give the loop state a row-major layout and transpose the factor on the way in and
        # out (that doubled the happy path's time at n = 3000).
        flat = lambda factor: factor.T.reshape(-1)

        def cond(state):
            _, ok, _, tries = state
            return (~ok) & (tries < max_tries)

        def body(state):
            _, _, j, tries = state
            j = jnp.maximum(j * growth, retry)
            chol, ok = attempt(j)
            return flat(chol), ok, j, tries + 1

        # the first factorisation is the loop's initial state: the loop body only runs after a failure
        chol, ok, j, tries = jax.lax.while_loop(cond, body, (flat(chol), ok, j, tries))
        chol = chol.reshape(n, n).T
    chol = _with_cholesky_derivative(chol, a, shift)
    flag = concrete_value(ok)
    if flag is not None and not bool(flag):
        raise ValueError(f"{name} is not positive definite even after {max_tries} jitter tries "
                         f"(last jitter {float(j):.3g}); check the kernel or raise jitter/noise")
    return CholeskyResult(chol, j, ok, tries)


@renamed_arguments(maxiter="max_iterations")
def cg_solve(a: ArrayLike | Callable[[Array], Array], b: ArrayLike, *, tol: float = 1e-6,
             max_iterations: int | None = None) -> CGResult:
    """Conjugate gradients for symmetric positive-definite ``a`` (a matrix or a matvec), per column of ``b``.

    Written by hand (not ``jax.scipy.sparse.linalg.cg``) so that iteration counts, residuals and a
    ``converged`` flag are reported. Cost: one ``a @ x`` product per iteration, no ``O(n^3)`` factorisation.

    Example:
      >>> import jax.numpy as jnp
      >>> r = cg_solve(jnp.array([[4.0, 1.0], [1.0, 3.0]]), jnp.array([1.0, 2.0]))
      >>> [round(v, 4) for v in r.x.tolist()], bool(r.converged)
      ([0.0909, 0.6364], True)
    """
    b = jnp.asarray(b)
    vector = b.ndim == 1
    bm = b[:, None] if vector else b
    if callable(a):
        matvec = a
    else:
        mat = jnp.asarray(a)
        matvec = lambda v: mat @ v
    check_positive("tol", tol)
    cap = 10 * bm.shape[0] if max_iterations is None else max_iterations
    max_iterations = check_int_range("max_iterations", cap, 1)
    bnorm = jnp.linalg.norm(bm, axis=0)
    bnorm = jnp.where(bnorm > 0, bnorm, 1.0)

    def cond(state):
        _, r, _, rs, it = state
        return (it < max_iterations) & (jnp.max(jnp.sqrt(rs) / bnorm) > tol)

    def body(state):
        x, r, p, rs, it = state
        ap = matvec(p)
        pap = jnp.sum(p * ap, axis=0)
        step = jnp.where(pap > 0, rs / jnp.where(pap > 0, pap, 1.0), 0.0)
        x = x + step * p
        r = r - step * ap
        rs_new = jnp.sum(r * r, axis=0)
        p = r + jnp.where(rs > 0, rs_new / jnp.where(rs > 0, rs, 1.0), 0.0) * p
        return x, r, p, rs_new, it + 1

    x0 = jnp.zeros_like(bm)
    rs0 = jnp.sum(bm * bm, axis=0)
    x, _, _, _, it = jax.lax.while_loop(cond, body, (x0, bm, bm, rs0, jnp.asarray(0)))
    res = jnp.max(jnp.linalg.norm(bm - matvec(x), axis=0) / bnorm)
    return CGResult(x[:, 0] if vector else x, it, res, res <= tol)



__all__ = ["CGResult", "CholeskyResult", "cg_solve", "default_retry_jitter", "jittered_cholesky"]
