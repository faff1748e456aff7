r"""Blackbox matrix-matrix GP inference (BBMM; Gardner et al., 2018, "GPyTorch: Blackbox Matrix-Matrix Gaussian
Process Inference with GPU Acceleration") on a :class:`~jaxbayes.kernels.KernelOperator`.

With ``Khat = K + s I`` (``s`` the noise variance, > 0) and only products ``K @ V`` available:

* **Preconditioner.** A rank-``r`` pivoted partial Cholesky ``K ~ L L^T`` (Harbrecht, Peters & Schneider,
  2012: greedy pivots on the largest remaining diagonal, ``r`` rows of ``K``), ``P = L L^T + s I``, applied
  by Woodbury: ``P^{-1} v = (v - L (s I_r + L^T L)^{-1} L^T v) / s`` and
  ``log|P| = log|s I_r + L^T L| + (n - r) log s``.
* **One batched PCG** for ``Khat [alpha, u_1..u_t] = [y, z_1..z_t]`` with probes ``z_i ~ N(0, P)``
  (``z = L e + sqrt(s) e'``). Each column's CG step sizes ``a_j`` and ratios ``b_j`` give the Lanczos
  tridiagonal of ``P^{-1/2} Khat P^{-1/2}`` started at ``P^{-1/2} z / |.|``:
  ``T_jj = 1/a_j + b_{j-1}/a_{j-1}``, ``T_{j,j+1} = sqrt(b_j)/a_j`` (BBMM, Sec. 4; Saad, 2003, 6.7.3).
* **Log determinant** by stochastic Lanczos quadrature: ``log|Khat| = log|P| + log|P^{-1} Khat|`` with
  ``log|P^{-1} Khat| ~ (1/t) sum_i (z_i^T P^{-1} z_i) e_1^T log(T_i) e_1`` (unbiased up to the quadrature
  error; ``P^{-1/2} z_i ~ N(0, I)``), and its Monte-Carlo standard error from the spread of the ``t`` terms.
  The quadrature error is a bias of one sign (Gauss overestimates ``int log``) that the standard error does
  not cover, and its nodes are the probe column's CG iterations: with a good preconditioner a loose ``tol``
  stops after 2-3 of them. So the probe columns run at least ``CG.min_lanczos_iterations`` steps (or to the
  rounding level, where the Krylov space is exhausted) whatever ``tol``; ``y``'s column stops at ``tol``.
* **Gradient** (custom VJP, no differentiation through the loop): for any leaf ``theta`` of the operator and
  the noise, ``d lml = 1/2 alpha^T dKhat alpha - 1/2 tr(Khat^{-1} dKhat)`` with the trace by the same probes
  (``u_i = Khat^{-1} z_i``, ``w_i = P^{-1} z_i``): GPyTorch's ``(1/t) sum_i u_i^T dKhat w_i`` (unbiased since
  ``E[z z^T] = P``) rewritten with the preconditioner as a control variate,
  ``tr(P^{-1} dKhat) + (1/t) sum_i (u_i - w_i)^T dKhat w_i``, whose first term is exact by Woodbury
  (``dKhat`` on the ``r`` columns of ``L`` and ``d tr K``), so a good preconditioner shrinks the gradient's
  Monte-Carlo error as it does the log determinant's. All products are one ``jax.vjp`` of the operator's
  matmul (and one of its diagonal).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_ndim, check_positive
from jaxbayes.kernels._lanczos import PCGResult, lanczos_quadrature, pcg
from jaxbayes.kernels._operator import KernelOperator
from jaxbayes.kernels._solvers import CG
from jaxbayes.parallel import unshard
from jaxbayes.typing import Array, ArrayLike, PRNGKey


class Preconditioner(NamedTuple):
    """``P = L L^T + noise I`` applied by Woodbury (see the module docstring)."""

    factor: Array
    noise: Array
    inner_chol: Array

    def solve(self, v: Array) -> Array:
        if self.factor.shape[1] == 0:
            return v / self.noise
        lv = self.factor.T @ v
        return (v - self.factor @ jax.scipy.linalg.cho_solve((self.inner_chol, True), lv)) / self.noise

    def logdet(self) -> Array:
        n, r = self.factor.shape
        return 2 * jnp.sum(jnp.log(jnp.diagonal(self.inner_chol))) + (n - r) * jnp.log(self.noise)

    def sample(self, key: PRNGKey, num: int) -> Array:
        n, r = self.factor.shape
        k1, k2 = jax.random.split(key)
        z = jnp.sqrt(self.noise) * jax.random.normal(k2, (n, num), self.factor.dtype)
        if r:
            z = z + self.factor @ jax.random.normal(k1, (r, num), self.factor.dtype)
        return z


def pivoted_cholesky(op: KernelOperator, rank: int) -> Array:
    """Rank-``rank`` pivoted partial Cholesky factor ``L`` ``(n, rank)`` with ``K ~ L L^T`` (exact at full rank).

    Each step takes the pivot with the largest remaining diagonal ``d_i = K_ii - sum_k L_ik^2``, reads one row of
    ``K`` (``op.rows``) and appends ``l = (K_i: - L L_i:^T) / sqrt(d_i)`` (Harbrecht et al., 2012, Alg. 1).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxbayes.kernels import kernel_operator, rbf
      >>> op = kernel_operator(rbf, jnp.arange(3.0)[:, None], {"lengthscale": 1.0, "variance": 1.0})
      >>> l = pivoted_cholesky(op, 3)
      >>> bool(jnp.allclose(l @ l.T, op.dense(), atol=1e-6))
      True
    """
    n = op.shape[0]
    rank = min(int(rank), n)
    d = op.diagonal()
    factor = jnp.zeros((n, rank), d.dtype)

    def body(m, state):
        factor, d, chosen = state
        i = jnp.argmax(jnp.where(chosen, -jnp.inf, d))
        piv = d[i]
        ok = piv > 0
        row = op.rows(i[None])[0]
        col = (row - factor @ factor[i]) / jnp.sqrt(jnp.where(ok, piv, 1.0))
        col = jnp.where(chosen | ~ok, 0.0, col).at[i].set(jnp.sqrt(jnp.maximum(piv, 0.0)))
        d = (d - col * col).at[i].set(0.0)
        return factor.at[:, m].set(col), d, chosen.at[i].set(True)

    factor, _, _ = jax.lax.fori_loop(0, rank, body, (factor, d, jnp.zeros(n, bool)))
    return factor


def make_preconditioner(op: KernelOperator, noise: Array, rank: int) -> Preconditioner:
    """``P = L L^T + noise I`` from a rank-``rank`` :func:`pivoted_cholesky` (``rank = 0``: ``noise I``)."""
    factor = pivoted_cholesky(op, rank) if rank else jnp.zeros((op.shape[0], 0), op.dtype)
    return preconditioner_from_factor(factor, noise)


def preconditioner_from_factor(factor: Array, noise: Array) -> Preconditioner:
    """``P = L L^T + noise I`` for a given factor ``L`` ``(n, r)``: the ``r x r`` Cholesky its Woodbury needs."""
    noise = jnp.asarray(noise, factor.dtype)
    inner = noise * jnp.eye(factor.shape[1], dtype=factor.dtype) + factor.T @ factor
    chol = jnp.linalg.cholesky(inner) if factor.shape[1] else inner
    return Preconditioner(factor, noise, chol)


class LMLEstimate(NamedTuple):
    """Stochastic log marginal likelihood (:func:`lml_and_stderr`).

    Attributes:
      lml: the estimate (differentiable w.r.t. the operator's leaves, the noise and ``y``).
      stderr: its Monte-Carlo standard error (from the log-determinant probes).
      logdet: the estimate of ``log|K + noise I|``; logdet_stderr: its standard error.
      n_iters: PCG iterations (the largest over columns). converged: all columns reached ``tol``.
    """

    lml: Array
    stderr: Array
    logdet: Array
    logdet_stderr: Array
    n_iters: Array
    converged: Array


def _check(op, y, noise, solver):
    if not isinstance(op, KernelOperator):
        raise TypeError(f"expected a KernelOperator, got {type(op).__name__}")
    if not isinstance(solver, CG):
        raise ValueError(f"a KernelOperator needs solver='cg' or a CG(...) object, got {solver!r}")
    # the solves work on whole n-vectors on every device (only the products K @ V are split over the mesh),
    # so explicitly sharded targets are gathered (a no-op otherwise)
    y = unshard(jnp.asarray(y))
    check_ndim("y_train", y, (1, 2))
    if y.shape[0] != op.shape[0]:
        raise ValueError(f"y_train must have {op.shape[0]} rows (one per training point), got shape {y.shape}")
    check_positive("noise", noise)  # > 0: the preconditioner and the solves need it
    return y


def _cap(max_iterations: int | None, n: int) -> int:
    return min(1000, 10 * n) if max_iterations is None else max_iterations


def _khat(op, noise):
    return lambda v: op.matmul(v) + noise * v


@jax.custom_vjp
def _quad_logdet(op, noise, y2, alpha, u, w, logdet, pre):
    """``(sum_j y_j^T Khat^{-1} y_j, log|Khat|)`` from the solves, differentiable through the custom VJP."""
    return jnp.sum(y2 * alpha), logdet


def _quad_logdet_fwd(op, noise, y2, alpha, u, w, logdet, pre):
    return _quad_logdet(op, noise, y2, alpha, u, w, logdet, pre), (op, noise, alpha, u, w, pre)


def _quad_logdet_bwd(res, g):
    # d quad = -alpha^T dKhat alpha + 2 alpha^T dy; d logdet = tr(P^-1 dKhat) + mean_i (u_i - w_i)^T dKhat w_i:
    # the exact trace against the preconditioner plus a Hutchinson estimate of the (small) remainder, as one
    # vjp of K @ B and one of diag(K) (tr(P^-1 dKhat) = (tr dKhat - sum_c (L C^-1)_c^T dKhat L_c) / s by
    # Woodbury)
    op, noise, alpha, u, w, pre = res
    g_quad, g_logdet = g
    t = u.shape[1]
    factor = pre.factor.astype(alpha.dtype)
    lc = (jax.scipy.linalg.cho_solve((pre.inner_chol, True), factor.T).T if factor.shape[1] else factor)
    bmat = jnp.concatenate([alpha, w, factor], 1)
    cot = jnp.concatenate([-g_quad * alpha, g_logdet / t * (u - w), -g_logdet / pre.noise * lc], 1)
    _, vjp = jax.vjp(lambda o, s: o.matmul(bmat) + s * bmat, op, noise)
    d_op, d_noise = vjp(cot.astype(bmat.dtype))
    _, vjp_tr = jax.vjp(lambda o, s: jnp.sum(o.diagonal()) + o.shape[0] * s, op, noise)
    d_op2, d_noise2 = vjp_tr(g_logdet / pre.noise)
    d_op = jax.tree.map(lambda a, b: a + b, d_op, d_op2)
    zero = jnp.zeros_like
    return (d_op, d_noise + d_noise2, 2 * g_quad * alpha, zero(alpha), zero(u), zero(w), zero(g_logdet),
            jax.tree.map(zero, pre))


_quad_logdet.defvjp(_quad_logdet_fwd, _quad_logdet_bwd)


class QuadLogdet(NamedTuple):
    """The two quantities every Gaussian-family marginal likelihood needs, estimated matrix-free.

    Attributes:
      quad: ``sum_j y_j^T (K + noise I)^{-1} y_j`` (by PCG; differentiable).
      logdet: the estimate of ``log|K + noise I|`` (differentiable; stochastic gradient).
      logdet_stderr: its Monte-Carlo standard error (``nan`` with one probe).
      n_iters: PCG iterations (the largest over columns). converged: the columns of ``y`` reached ``tol``.
    """

    quad: Array
    logdet: Array
    logdet_stderr: Array
    n_iters: Array
    converged: Array


def quad_and_logdet(op: KernelOperator, y_train: ArrayLike, *, noise: ArrayLike, solver: CG | None = None,
                    key: PRNGKey) -> QuadLogdet:
    r"""``sum_j y_j^T Khat^{-1} y_j`` and ``log|Khat|`` (``Khat = K + noise I``) from one batched PCG.

    The building block of :func:`lml_and_stderr` and of the Student-t marginal likelihood on an operator
    (module docstring: the preconditioner, the probes, stochastic Lanczos quadrature, the custom VJP).
    Arguments as in :func:`lml_and_stderr`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbayes.kernels import kernel_operator, rbf
      >>> op = kernel_operator(rbf, jnp.zeros((1, 1)), {"lengthscale": 1.0, "variance": 1.0})
      >>> r = quad_and_logdet(op, jnp.array([2.0]), noise=1.0, key=jax.random.key(0))
      >>> round(float(r.quad), 4), round(float(r.logdet), 4)  # 2^2 / 2, log 2
      (2.0, 0.6931)
    """
    solver = CG() if solver is None else solver
    y = _check(op, y_train, noise, solver)
    y2 = y[:, None] if y.ndim == 1 else y
    n, k = y2.shape
    op_s = jax.lax.stop_gradient(op)
    noise_s = jax.lax.stop_gradient(jnp.asarray(noise, y2.dtype))
    pre = make_preconditioner(op_s, noise_s, solver.preconditioner_rank)
    t = solver.num_probes
    z = pre.sample(key, t).astype(y2.dtype)
    # the probes' Lanczos depth (quadrature nodes) is not the solve's: y stops at tol, a probe runs on to depth
    depth = min(solver.min_lanczos_iterations, solver.lanczos_iterations, n)
    res = pcg(_khat(op_s, noise_s), jnp.concatenate([jax.lax.stop_gradient(y2), z], 1), pre.solve,
              tol=solver.tol, max_iterations=_cap(solver.max_iterations, n), lanczos_size=solver.lanczos_iterations,
              min_iterations=jnp.array([0] * k + [depth] * t))
    terms = res.rz0[k:] * lanczos_quadrature(res.alphas[:, k:], res.betas[:, k:], res.n_iters[k:])
    logdet = pre.logdet() + jnp.mean(terms)
    logdet_se = jnp.std(terms, ddof=1) / jnp.sqrt(t) if t > 1 else jnp.asarray(jnp.nan, y2.dtype)
    quad, logdet = _quad_logdet(op, jnp.asarray(noise, y2.dtype), y2, res.x[:, :k], res.x[:, k:], pre.solve(z),
                                logdet, pre)
    return QuadLogdet(quad, logdet, logdet_se, jnp.max(res.n_iters), jnp.all(res.converged[:k]))


def lml_and_stderr(op: KernelOperator, y_train: ArrayLike, *, noise: ArrayLike, solver: CG | None = None,
                   key: PRNGKey) -> LMLEstimate:
    r"""BBMM estimate of ``log N(y; 0, K + noise I)`` (summed over columns of ``y``) and its Monte-Carlo error.

    ``-1/2 y^T alpha - k/2 log|Khat| - n k/2 log 2 pi`` with ``alpha`` from PCG and ``log|Khat|`` by stochastic
    Lanczos quadrature with ``solver.num_probes`` probes (:func:`quad_and_logdet`); the gradient is the custom
    VJP of the module docstring. ``stderr = k/2 * std(terms) / sqrt(num_probes)``.

    Args:
      op: the kernel operator. y_train: ``(n,)`` or ``(n, k)``. noise: noise variance (> 0).
      solver: a :class:`~jaxbayes.kernels.CG` (``tol``, ``max_iterations``, ``preconditioner_rank``,
        ``num_probes``, ``lanczos_iterations``, ``min_lanczos_iterations``); ``None``: ``CG()``.
      key: PRNG key of the probes (use a fresh one per optimisation step for unbiased gradients).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbayes.kernels import kernel_operator, rbf
      >>> op = kernel_operator(rbf, jnp.zeros((1, 1)), {"lengthscale": 1.0, "variance": 1.0})
      >>> est = lml_and_stderr(op, jnp.array([0.0]), noise=1.0, key=jax.random.key(0))
      >>> round(float(est.lml), 4)  # one point: exact, log N(0; 0, 2)
      -1.2655
    """
    y = jnp.asarray(y_train)
    n, k = y.shape[0], (1 if y.ndim == 1 else y.shape[1])
    r = quad_and_logdet(op, y, noise=noise, solver=solver, key=key)
    lml = -0.5 * r.quad - 0.5 * k * r.logdet - 0.5 * n * k * jnp.log(2 * jnp.pi)
    return LMLEstimate(lml, 0.5 * k * r.logdet_stderr, r.logdet, r.logdet_stderr, r.n_iters, r.converged)


class OperatorConditioned(NamedTuple):
    """A GP conditioned on a :class:`KernelOperator` (``gp_condition(op, y, solver="cg")``).

    Attributes:
      alpha: ``(K + noise I)^{-1} y``. operator: the kernel operator. noise: the noise variance.
      precond_factor: the pivoted-Cholesky factor ``L`` of the preconditioner (reused by the variance solves).
      jitter: ``0.0`` (none is added). ok: the PCG solve converged. n_iters: its iterations.
    """

    alpha: Array
    operator: KernelOperator
    noise: Array
    precond_factor: Array
    jitter: Array
    ok: Array
    n_iters: Array

    @property
    def chol(self) -> None:
        return None


def condition_operator(op: KernelOperator, y_train: ArrayLike, noise: ArrayLike, solver: CG) -> OperatorConditioned:
    """PCG solve of ``(K + noise I) alpha = y`` (all columns of ``y`` in one batched solve)."""
    y = _check(op, y_train, noise, solver)
    y2 = y[:, None] if y.ndim == 1 else y
    noise = jnp.asarray(noise, y2.dtype)
    pre = make_preconditioner(op, noise, solver.preconditioner_rank)
    res = pcg(_khat(op, noise), y2, pre.solve, tol=solver.tol, max_iterations=_cap(solver.max_iterations, y2.shape[0]),
              lanczos_size=1)
    alpha = res.x[:, 0] if y.ndim == 1 else res.x
    return OperatorConditioned(alpha, op, noise, pre.factor, jnp.zeros((), y2.dtype), jnp.all(res.converged),
                               jnp.max(res.n_iters))


def predict_operator(cond: OperatorConditioned, cross, k_test_test: ArrayLike, *, full_cov: bool, tol: float,
                     max_iterations: int | None):
    """Mean ``K_*X alpha`` (tiled) and the (co)variances by one batched PCG of the ``m`` cross columns
    (``O(n m)`` memory: for many test points call it on batches of them). Returns ``(mean, cov, var, ok)``."""
    if cross.shape[1] != cond.alpha.shape[0]:
        raise ValueError(f"k_test_train must have {cond.alpha.shape[0]} columns, got shape {cross.shape}")
    kss = jnp.asarray(k_test_test)
    m = cross.shape[0]
    want = (m, m) if full_cov else (m,)
    if kss.shape != want:
        raise ValueError(f"k_test_test must have shape {want} (full_cov={full_cov}), got {kss.shape}")
    mean = cross.matmul(cond.alpha)
    kx = cross.dense()
    op, noise = cond.operator, cond.noise
    pre = preconditioner_from_factor(cond.precond_factor, noise)
    cap = _cap(max_iterations, op.shape[0])
    res = pcg(_khat(op, noise), kx.T, pre.solve, tol=tol, max_iterations=cap, lanczos_size=1)
    ok = cond.ok & jnp.all(res.converged)
    if full_cov:
        cov = kss - kx @ res.x
        return mean, cov, jnp.diagonal(cov), ok
    return mean, None, kss - jnp.sum(kx.T * res.x, 0), ok


__all__ = ["LMLEstimate", "OperatorConditioned", "PCGResult", "Preconditioner", "QuadLogdet", "condition_operator",
           "lanczos_quadrature", "lml_and_stderr", "make_preconditioner", "pcg", "pivoted_cholesky",
           "preconditioner_from_factor", "predict_operator", "quad_and_logdet"]
