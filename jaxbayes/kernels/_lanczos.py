r"""Batched preconditioned conjugate gradients and the Lanczos quadrature read off its coefficients.

:func:`pcg` solves ``A X = B`` for all columns of ``B`` at once (one product with ``A`` per iteration) and keeps
each column's CG step sizes ``a_j`` and ratios ``b_j``. They are the Lanczos tridiagonal of
``M^{-1/2} A M^{-1/2}`` started at ``M^{-1/2} b / |.|`` (``M`` the preconditioner; Saad, 2003, 6.7.3):
``T_jj = 1/a_j + b_{j-1}/a_{j-1}``, ``T_{j,j+1} = sqrt(b_j)/a_j``, and :func:`lanczos_quadrature` turns ``T``
into the Gauss quadrature ``e_1^T log(T) e_1`` of ``b^T M^{-1/2} log(M^{-1/2} A M^{-1/2}) M^{-1/2} b / b^T M^{-1} b``
(Golub & Meurant, 2010; stochastic Lanczos quadrature, Ubaru, Chen & Saad, 2017).

A column's Lanczos depth is its number of CG iterations, so a column that stops at a loose ``tol`` gives a
quadrature of few nodes. Gauss quadrature overestimates ``int log`` (every even derivative of ``log`` is
negative), so that bias does not average out over probes: a column can be asked to run at least
``min_iterations`` steps whatever its residual (``pcg``'s ``min_iterations``; the BBMM log determinant's probe
columns use ``CG.min_lanczos_iterations``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbayes.typing import Array, ArrayLike


class PCGResult(NamedTuple):
    """Batched preconditioned CG for ``A X = B``, column by column.

    Attributes:
      x: ``(n, c)`` solutions. n_iters: ``(c,)`` iterations per column. error: ``(c,)`` relative residuals.
      converged: ``(c,)`` ``error <= tol``. alphas, betas: ``(J, c)`` CG step sizes and ratios of the first
        ``J`` iterations (zero past a column's count). rz0: ``(c,)`` ``b^T M^{-1} b``.
    """

    x: Array
    n_iters: Array
    error: Array
    converged: Array
    alphas: Array
    betas: Array
    rz0: Array


def pcg(matvec, b: Array, precond=None, *, tol: float = 1e-6, max_iterations: int = 1000,
        lanczos_size: int = 100, min_iterations: ArrayLike = 0) -> PCGResult:
    """Preconditioned CG on all columns of ``b`` at once (one ``matvec`` per iteration); a column stops
    updating once its relative residual is ``<= tol`` and it has run ``min_iterations`` steps (an int or one
    per column: its Lanczos depth, see the module docstring), or once its residual is at the rounding level
    (``100 eps``: the Krylov space is numerically exhausted, further steps add no quadrature node).

    Example:
      >>> import jax.numpy as jnp
      >>> r = pcg(lambda v: jnp.array([[4.0, 1.0], [1.0, 3.0]]) @ v, jnp.array([[1.0], [2.0]]))
      >>> [round(v, 4) for v in r.x[:, 0].tolist()], r.n_iters.tolist()
      ([0.0909, 0.6364], [2])
    """
    b = jnp.asarray(b)
    mv, pc = matvec, ((lambda v: v) if precond is None else precond)
    matvec = lambda v: mv(v).astype(b.dtype)  # noqa: E731 - the loop state keeps b's dtype
    precond = lambda v: pc(v).astype(b.dtype)  # noqa: E731
    j_size = max(1, min(lanczos_size, max_iterations))
    c = b.shape[1]
    min_it = jnp.broadcast_to(jnp.asarray(min_iterations, jnp.int32), (c,))
    floor = 100 * jnp.finfo(b.dtype).eps
    bnorm = jnp.linalg.norm(b, axis=0)
    bnorm = jnp.where(bnorm > 0, bnorm, 1.0)
    z0 = precond(b)
    rz0 = jnp.sum(b * z0, 0)

    def stop(rel, count):  # a column with min_iterations = 0 (the default) stops at tol exactly as plain CG
        return rel <= jnp.where(count >= min_it, tol, jnp.minimum(tol, floor))

    def cond(s):
        return (s["it"] < max_iterations) & jnp.any(s["active"])

    def body(s):
        act = s["active"]
        ap = matvec(s["p"])
        pap = jnp.sum(s["p"] * ap, 0)
        a = jnp.where(act & (pap > 0), s["rz"] / jnp.where(pap > 0, pap, 1.0), 0.0)
        x = s["x"] + a * s["p"]
        r = s["r"] - a * ap
        z = precond(r)
        rz_new = jnp.sum(r * z, 0)
        beta = jnp.where(act & (s["rz"] > 0), rz_new / jnp.where(s["rz"] > 0, s["rz"], 1.0), 0.0)
        p = jnp.where(act, z + beta * s["p"], s["p"])
        count = s["count"] + act
        done = stop(jnp.linalg.norm(r, axis=0) / bnorm, count) | (rz_new <= 0)
        return dict(x=x, r=r, p=p, rz=jnp.where(act, rz_new, s["rz"]), it=s["it"] + 1,
                    active=act & ~done, count=count,
                    alphas=s["alphas"].at[s["it"]].set(a, mode="drop"),
                    betas=s["betas"].at[s["it"]].set(beta, mode="drop"))

    count0 = jnp.zeros(c, jnp.int32)
    s0 = dict(x=jnp.zeros_like(b), r=b, p=z0, rz=rz0, it=jnp.asarray(0),
              active=~stop(jnp.linalg.norm(b, axis=0) / bnorm, count0), count=count0,
              alphas=jnp.zeros((j_size, c), b.dtype), betas=jnp.zeros((j_size, c), b.dtype))
    s = jax.lax.while_loop(cond, body, s0)
    err = jnp.linalg.norm(b - matvec(s["x"]), axis=0) / bnorm
    return PCGResult(s["x"], s["count"], err, err <= tol, s["alphas"], s["betas"], rz0)


def lanczos_quadrature(alphas: Array, betas: Array, counts: Array) -> Array:
    """``e_1^T log(T) e_1`` per column, ``T`` the Lanczos tridiagonal from CG coefficients (module docstring);
    rows past a column's count are decoupled with ``T_jj = 1`` (``log 1 = 0``), so they add nothing."""
    j_size = alphas.shape[0]
    m = jnp.minimum(counts, j_size)
    j = jnp.arange(j_size)[:, None]
    inv_a = jnp.where(j < m, 1.0 / jnp.where(alphas != 0, alphas, 1.0), 0.0)
    prev = jnp.concatenate([jnp.zeros_like(betas[:1]), (betas * inv_a)[:-1]], 0)
    diag = jnp.where(j < m, inv_a + prev, 1.0)
    off = jnp.where(j + 1 < m, jnp.sqrt(jnp.maximum(betas, 0.0)) * inv_a, 0.0)[:-1]
    t = jax.vmap(lambda dg, of: jnp.diag(dg) + jnp.diag(of, 1) + jnp.diag(of, -1), in_axes=1)(diag, off)
    w, u = jnp.linalg.eigh(t)
    return jnp.sum(u[:, 0, :] ** 2 * jnp.log(jnp.maximum(w, jnp.finfo(w.dtype).tiny)), -1)


__all__ = ["PCGResult", "lanczos_quadrature", "pcg"]
