"""Exact Gaussian-process inference with kernel matrices: posterior, marginal likelihood, CG, fitting.

Everything takes precomputed kernel blocks (from a network's ``kernel_fn``, :func:`gram`, or any other
kernel), so the same functions serve NNGP, NTK and baseline kernels. For training inputs ``X``, targets
``y`` (``(n,)`` or ``(n, k)`` for ``k`` independent outputs) and Gaussian noise variance ``s``:

``mean = K_*X (K_XX + s I)^{-1} y``, ``cov = K_** - K_*X (K_XX + s I)^{-1} K_X*`` (Rasmussen & Williams,
2006, Alg. 2.1) and ``log p(y) = -1/2 y^T (K + s I)^{-1} y - 1/2 log|K + s I| - n/2 log 2 pi`` per output.

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

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxbayes._checks import (
    check_choice,
    check_finite,
    check_int_range,
    check_ndim,
    check_positive,
    concrete_value,
)
from jaxbayes.parallel import data_parallel
from jaxbayes.typing import Array, ArrayLike, PyTree


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


class GPConditioned(NamedTuple):
    """A GP conditioned on training data (reusable for many predictions).

    Attributes:
      chol: Cholesky factor of ``K + (noise + jitter) I`` (``None`` for the CG solver).
      alpha: ``(K + noise I)^{-1} y``.
      matrix: ``K + (noise + jitter) I`` when the CG solver is used, else ``None``.
      jitter: the absolute jitter used.
      ok: whether the factorisation / CG solve succeeded.
    """

    chol: Array | None
    alpha: Array
    matrix: Array | None
    jitter: Array
    ok: Array


class GPPosterior(NamedTuple):
    """Posterior predictive of the latent function at test points.

    Attributes:
      mean: ``(m,)`` or ``(m, k)``.
      cov: full ``(m, m)`` covariance, or the ``(m,)`` marginal variances when ``full_cov=False``
        (shared by all ``k`` outputs).
      ok: whether the solves succeeded (see the jitter policy).
    """

    mean: Array
    cov: Array
    ok: Array


class CGResult(NamedTuple):
    """Conjugate-gradient solution of ``A x = b`` (one solve per column of ``b``).

    Attributes:
      x: the solution, shaped like ``b``.
      n_iters: iterations run.
      residual_norm: largest relative residual ``|b - A x| / |b|`` over columns.
      converged: ``residual_norm <= tol``.
    """

    x: Array
    n_iters: Array
    residual_norm: Array
    converged: Array


class FitResult(NamedTuple):
    """Result of :func:`fit_hyperparameters`: final ``params`` and the ``losses`` after every step."""

    params: PyTree
    losses: Array


def _check_matrix(name: str, k: ArrayLike) -> Array:
    check_ndim(name, k, 2)
    k = jnp.asarray(k)
    if k.shape[0] != k.shape[1]:
        raise ValueError(f"{name} must be square, got shape {k.shape}")
    check_finite(name, k)
    return k


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
    a = _check_matrix(name, a)
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


def cg_solve(a: ArrayLike | Callable[[Array], Array], b: ArrayLike, *, tol: float = 1e-6,
             maxiter: int | None = None) -> CGResult:
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
    maxiter = check_int_range("maxiter", 10 * bm.shape[0] if maxiter is None else maxiter, 1)
    bnorm = jnp.linalg.norm(bm, axis=0)
    bnorm = jnp.where(bnorm > 0, bnorm, 1.0)

    def cond(state):
        _, r, _, rs, it = state
        return (it < maxiter) & (jnp.max(jnp.sqrt(rs) / bnorm) > tol)

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


def _check_targets(k: Array, y: ArrayLike) -> Array:
    y = jnp.asarray(y)
    check_ndim("y_train", y, (1, 2))
    if y.shape[0] != k.shape[0]:
        raise ValueError(f"y_train must have {k.shape[0]} rows (one per training point), got shape {y.shape}")
    check_finite("y_train", y)
    return y


def gp_condition(k_train_train: ArrayLike, y_train: ArrayLike, *, noise: ArrayLike = 0.0,
                 jitter: float = 1e-6, max_tries: int = 5, solver: str = "cholesky", cg_tol: float = 1e-6,
                 cg_maxiter: int | None = None) -> GPConditioned:
    """Condition a zero-mean GP on ``(X, y)``: factorise ``K + noise I`` (jitter policy in the module doc).

    Args:
      k_train_train: ``(n, n)`` prior covariance of the training points.
      y_train: ``(n,)`` or ``(n, k)`` targets.
      noise: Gaussian observation-noise variance (>= 0).
      jitter, max_tries: the jitter policy.
      solver: ``"cholesky"`` (exact, ``O(n^3)``) or ``"cg"`` (conjugate gradients, ``O(n^2)`` per
        iteration, for large ``n``; the jitter is then added once, without retries).
      cg_tol, cg_maxiter: CG stopping rule.

    Example:
      >>> import jax.numpy as jnp
      >>> c = gp_condition(jnp.eye(2), jnp.array([1.0, 2.0]), noise=1.0, jitter=0.0)
      >>> [round(v, 4) for v in c.alpha.tolist()]
      [0.5, 1.0]
    """
    k = _check_matrix("k_train_train", k_train_train)
    y = _check_targets(k, y_train)
    check_positive("noise", noise, strict=False)
    check_choice("solver", solver, ("cholesky", "cg"))
    if solver == "cholesky":
        ch = jittered_cholesky(k, jitter=jitter, max_tries=max_tries, shift=noise, name="k_train_train")
        alpha = jax.scipy.linalg.cho_solve((ch.chol, True), y)
        return GPConditioned(ch.chol, alpha, None, ch.jitter, ch.ok)
    a = k + jnp.asarray(noise, k.dtype) * jnp.eye(k.shape[0], dtype=k.dtype)
    check_positive("jitter", jitter, strict=False)
    j = jitter * jnp.abs(jnp.mean(jnp.diagonal(a)))
    a = a + j * jnp.eye(k.shape[0], dtype=k.dtype)
    res = cg_solve(a, y, tol=cg_tol, maxiter=cg_maxiter)
    return GPConditioned(None, res.x, a, j, res.converged)


def gp_predict(conditioned: GPConditioned, k_test_train: ArrayLike, k_test_test: ArrayLike, *,
               full_cov: bool = True, cg_tol: float = 1e-6, cg_maxiter: int | None = None) -> GPPosterior:
    """Predict at test points from a :func:`gp_condition` result.

    Args:
      conditioned: the conditioned GP.
      k_test_train: ``(m, n)`` cross-covariance.
      k_test_test: ``(m, m)`` prior covariance of the test points if ``full_cov``, else their ``(m,)``
        prior variances.
      full_cov: return the full covariance (else marginal variances).
      cg_tol, cg_maxiter: CG stopping rule for the variance solves (CG solver only).
    """
    kx = jnp.asarray(k_test_train)
    check_ndim("k_test_train", kx, 2)
    if kx.shape[1] != conditioned.alpha.shape[0]:
        raise ValueError(f"k_test_train must have {conditioned.alpha.shape[0]} columns, got {kx.shape}")
    kss = jnp.asarray(k_test_test)
    check_ndim("k_test_test", kss, 2 if full_cov else 1)
    mean = kx @ conditioned.alpha
    ok = conditioned.ok
    if conditioned.chol is not None:
        v = jax.scipy.linalg.solve_triangular(conditioned.chol, kx.T, lower=True)
    else:
        res = cg_solve(conditioned.matrix, kx.T, tol=cg_tol, maxiter=cg_maxiter)
        ok = ok & res.converged
    if full_cov:
        if conditioned.chol is not None:
            cov = kss - v.T @ v
        else:
            cov = kss - kx @ res.x
    else:
        cov = kss - (jnp.sum(v * v, axis=0) if conditioned.chol is not None else jnp.sum(kx.T * res.x, 0))
    return GPPosterior(mean, cov, ok)


def gp_posterior(k_train_train: ArrayLike, y_train: ArrayLike, k_test_train: ArrayLike, k_test_test: ArrayLike,
                 *, noise: ArrayLike = 0.0, full_cov: bool = True, jitter: float = 1e-6, max_tries: int = 5,
                 solver: str = "cholesky") -> GPPosterior:
    """Exact GP posterior predictive of the latent function (see the module docstring for the formulas).

    Example:
      >>> import jax.numpy as jnp
      >>> post = gp_posterior(jnp.eye(1), jnp.array([2.0]), jnp.array([[0.5]]), jnp.eye(1), noise=1.0)
      >>> [round(v, 4) for v in (float(post.mean[0]), float(post.cov[0, 0]))]
      [0.5, 0.875]
    """
    cond = gp_condition(k_train_train, y_train, noise=noise, jitter=jitter, max_tries=max_tries, solver=solver)
    return gp_predict(cond, k_test_train, k_test_test, full_cov=full_cov)


def log_marginal_likelihood(k_train_train: ArrayLike, y_train: ArrayLike, *, noise: ArrayLike = 0.0,
                            jitter: float = 1e-6, max_tries: int = 5) -> Array:
    """``log N(y; 0, K + noise I)``, summed over the columns of ``y`` (see the module docstring).

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(log_marginal_likelihood(jnp.eye(1), jnp.array([0.0]), noise=1.0, jitter=0.0)), 4)
      -1.2655
    """
    k = _check_matrix("k_train_train", k_train_train)
    y = _check_targets(k, y_train)
    check_positive("noise", noise, strict=False)
    ch = jittered_cholesky(k, jitter=jitter, max_tries=max_tries, shift=noise, name="k_train_train")
    ym = y[:, None] if y.ndim == 1 else y
    z = jax.scipy.linalg.solve_triangular(ch.chol, ym, lower=True)
    logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(ch.chol)))
    n, k_out = ym.shape
    return -0.5 * jnp.sum(z * z) - 0.5 * k_out * logdet - 0.5 * n * k_out * jnp.log(2 * jnp.pi)


def gp_predict_batched(kernel_fn: Callable, conditioned: GPConditioned, x_train: ArrayLike, x_test: ArrayLike,
                       *, get: str = "nngp", batch_size: int | None = 128, mesh: Mesh | None = None
                       ) -> GPPosterior:
    """Marginal posterior (mean, variance) at ``x_test`` with kernels computed on the fly, point by point.

    Memory stays ``O(batch_size * n)``: test points are processed in chunks with ``lax.map`` (one device)
    or split across ``mesh`` (``data_parallel``); the numbers equal :func:`gp_predict` with
    ``full_cov=False`` (Cholesky solver).

    Args:
      kernel_fn: ``(x1, x2) -> Kernel``.
      conditioned: a Cholesky :func:`gp_condition` result for ``x_train``.
      x_train: ``(n, ...)`` training inputs used for ``conditioned``.
      x_test: ``(m, ...)`` test inputs.
      get: ``"nngp"`` or ``"ntk"``: which kernel ``conditioned`` was built from.
      batch_size: test points per ``lax.map`` step (one device only).
      mesh: split the test points across this mesh instead.
    """
    check_choice("get", get, ("nngp", "ntk"))
    if conditioned.chol is None:
        raise ValueError("gp_predict_batched needs a Cholesky-conditioned GP (solver='cholesky')")
    x_train = jnp.asarray(x_train)
    x_test = jnp.asarray(x_test)
    if x_test.shape[1:] != x_train.shape[1:]:
        raise ValueError(f"x_test must have per-point shape {x_train.shape[1:]}, got {x_test.shape[1:]}")

    def one(xt, chol, alpha, xtr):
        k = kernel_fn(xt[None], xtr)
        kself = kernel_fn(xt[None])
        kx = getattr(k, get)[0]
        kss = getattr(kself, get)[0, 0]
        v = jax.scipy.linalg.solve_triangular(chol, kx, lower=True)
        return kx @ alpha, kss - jnp.sum(v * v)

    args = (conditioned.chol, conditioned.alpha, x_train)
    if mesh is not None:
        mean, var = data_parallel(one, mesh, in_axes=(0, None, None, None))(x_test, *args)
    else:
        bs = None if batch_size is None else check_int_range("batch_size", batch_size, 1)
        mean, var = jax.lax.map(lambda xt: one(xt, *args), x_test, batch_size=bs)
    return GPPosterior(mean, var, conditioned.ok)


def infinite_ensemble_posterior(k_train_train: NamedTuple, y_train: ArrayLike, k_test_train: NamedTuple,
                                k_test_test: NamedTuple, *, get: str = "ntk", diag_reg: float = 0.0,
                                full_cov: bool = True) -> GPPosterior:
    """Posterior of an infinite ensemble of infinitely wide networks trained to convergence (t = infinity).

    ``get="ntk"``: gradient-descent training on MSE from random initialisation (Lee et al., NeurIPS 2019):
    ``mean = T_*X T^{-1} y`` and
    ``cov = K_** - T_*X T^{-1} K_X* - K_*X T^{-1} T_X* + T_*X T^{-1} K T^{-1} T_X*``
    with ``T`` the NTK and ``K`` the NNGP. ``get="nngp"``: exact Bayesian inference with the NNGP (training
    only the readout), the plain GP posterior. ``diag_reg`` is added to the inverted kernel as
    ``diag_reg * mean(diag)`` (as neural-tangents does).

    Args:
      k_train_train, k_test_train, k_test_test: objects with ``nngp`` and ``ntk`` fields (:class:`Kernel`,
        :class:`KernelMatrices`) for (train, train), (test, train), (test, test).
      y_train: ``(n,)`` or ``(n, k)`` targets.
      get: ``"ntk"`` or ``"nngp"``.
      diag_reg: relative diagonal regulariser (>= 0).
      full_cov: full covariance (needs ``k_test_test`` square) or the marginal variances.
    """
    check_choice("get", get, ("nngp", "ntk"))
    check_positive("diag_reg", diag_reg, strict=False)
    if get == "nngp":
        cond = gp_condition(k_train_train.nngp, y_train, jitter=diag_reg, max_tries=1)
        kss = k_test_test.nngp if full_cov else jnp.diagonal(k_test_test.nngp)
        return gp_predict(cond, k_test_train.nngp, kss, full_cov=full_cov)
    theta = _check_matrix("k_train_train.ntk", k_train_train.ntk)
    y = _check_targets(theta, y_train)
    ch = jittered_cholesky(theta, jitter=diag_reg, max_tries=1, name="k_train_train.ntk")
    t_x = jnp.asarray(k_test_train.ntk)
    k_x = jnp.asarray(k_test_train.nngp)
    solve = lambda b: jax.scipy.linalg.cho_solve((ch.chol, True), b)
    mean = t_x @ solve(y)
    a = solve(t_x.T)  # T^{-1} T_X*, (n, m)
    kxx = jnp.asarray(k_train_train.nngp)
    kss = jnp.asarray(k_test_test.nngp)
    if full_cov:
        cross = k_x @ a
        cov = kss - cross - cross.T + a.T @ kxx @ a
    else:
        cov = jnp.diagonal(kss) - 2 * jnp.sum(k_x.T * a, 0) + jnp.sum(a * (kxx @ a), 0)
    return GPPosterior(mean, cov, ch.ok)


def fit_hyperparameters(loss_fn: Callable[[PyTree], Array], init_params: PyTree, *,
                        optimizer: optax.GradientTransformation | None = None,
                        num_steps: int = 200) -> FitResult:
    """Minimise ``loss_fn(params)`` (e.g. a negative log marginal likelihood) with optax in a ``lax.scan``.

    Parameterise positive hyper-parameters through ``exp``/``softplus`` inside ``loss_fn``.

    Example:
      >>> import jax.numpy as jnp
      >>> r = fit_hyperparameters(lambda p: (p - 3.0) ** 2, jnp.array(0.0), num_steps=300)
      >>> round(float(r.params), 2)
      3.0
    """
    num_steps = check_int_range("num_steps", num_steps, 1)
    opt = optax.adam(0.05) if optimizer is None else optimizer
    vg = jax.value_and_grad(loss_fn)

    def step(carry, _):
        params, state = carry
        loss, g = vg(params)
        updates, state = opt.update(g, state, params)
        return (optax.apply_updates(params, updates), state), loss

    (params, _), losses = jax.lax.scan(step, (init_params, opt.init(init_params)), length=num_steps)
    return FitResult(params, losses)


__all__ = [
    "CGResult", "CholeskyResult", "FitResult", "GPConditioned", "GPPosterior", "cg_solve",
    "fit_hyperparameters", "gp_condition", "gp_posterior", "gp_predict", "gp_predict_batched",
    "infinite_ensemble_posterior", "jittered_cholesky", "log_marginal_likelihood",
]
