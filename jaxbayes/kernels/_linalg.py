"""Dense linear algebra for the GP solvers: a jittered Cholesky factorisation and conjugate gradients.

**Jitter policy.** The Cholesky factor is taken of ``K + s I + j I`` with ``j = jitter * mean(diag(K + sI))``
(relative, so it is scale free). If the factorisation fails (non-finite), ``j`` is multiplied by ``growth``
and retried, up to ``max_tries`` attempts in all (a ``lax.while_loop``, so it works under ``jit``). When the
first try succeeds it is the only factorisation done (the retries sit in the other branch of a ``lax.cond``),
and ``K + (s + j) I`` is formed once, by adding to the diagonal. The jitter actually used and an ``ok`` flag
are returned. Called eagerly, a matrix that is still not positive
definite after the last try raises ``ValueError`` naming the argument; under ``jit`` ``ok`` is ``False``
and the outputs are NaN.
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


def jittered_cholesky(a: ArrayLike, *, jitter: float = 1e-6, max_tries: int = 5, growth: float = 10.0,
                      shift: ArrayLike = 0.0, name: str = "a") -> CholeskyResult:
    """Cholesky factor of ``a + (shift + j) I`` with ``j = jitter * mean(diag(a + shift I))``, grown on failure.

    Only the lower triangle of ``a`` is read (as LAPACK does). The first try is the only factorisation when
    it succeeds: the retries (a ``lax.while_loop`` choosing the jitter, then one differentiable
    factorisation with it) sit in the other branch of a ``lax.cond``.

    Args:
      a: symmetric ``(n, n)`` matrix.
      jitter: relative jitter of the first try (>= 0).
      max_tries: attempts in all (>= 1).
      growth: factor applied to the jitter after each failure (> 1).
      shift: added to the diagonal first (e.g. the observation-noise variance), without forming
        ``a + shift I`` separately.
      name: the argument name used in error messages.

    Raises:
      ValueError: (eagerly) when ``a`` is still not positive definite after ``max_tries`` attempts.

    Example:
      >>> import jax.numpy as jnp
      >>> r = jittered_cholesky(jnp.ones((2, 2)), jitter=1e-3)
      >>> bool(r.ok), int(r.n_tries)
      (True, 1)
    """
    a = check_square_matrix(name, a)
    check_positive("jitter", jitter, strict=False)
    max_tries = check_int_range("max_tries", max_tries, 1)
    check_positive("growth", growth)
    shift = jnp.asarray(shift, a.dtype)
    idx = jnp.arange(a.shape[0])
    scale = jnp.abs(jnp.mean(jnp.diagonal(a)) + shift)
    scale = jnp.where(scale > 0, scale, 1.0)

    def attempt(j, m=a):
        # a failed factorisation comes back all NaN; any NaN in the factor also reaches its diagonal
        chol = jnp.linalg.cholesky(m.at[idx, idx].add(shift + j), symmetrize_input=False)
        return chol, jnp.all(jnp.isfinite(jnp.diagonal(chol)))

    j0 = jax.lax.stop_gradient(jnp.asarray(jitter, a.dtype) * scale)
    chol0, ok0 = attempt(j0)
    one = jnp.asarray(1)
    if max_tries == 1:
        chol, ok, j, tries = chol0, ok0, j0, one
    else:
        def retry():
            # The loop only chooses the jitter (on stopped values: while_loop is not reverse-differentiable);
            # the factor is then recomputed with that jitter, differentiably.
            a_stop = jax.lax.stop_gradient(a)
            tiny = jnp.asarray(1e-10, a.dtype) * jax.lax.stop_gradient(scale)

            def cond(state):
                _, ok, tries = state
                return (~ok) & (tries < max_tries)

            def body(state):
                j, _, tries = state
                j = jnp.where(j > 0, j * growth, tiny)
                return j, attempt(j, a_stop)[1], tries + 1

            j, ok, tries = jax.lax.while_loop(cond, body, (j0, ok0, one))
            return attempt(j)[0], ok, j, tries

        chol, ok, j, tries = jax.lax.cond(ok0, lambda: (chol0, ok0, j0, one), retry)
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



__all__ = ["CGResult", "CholeskyResult", "cg_solve", "jittered_cholesky"]
