"""Exact Gaussian-process inference with kernel matrices: posterior, marginal likelihood, CG, fitting.

Everything takes precomputed kernel blocks (from a network's ``kernel_fn``, :func:`gram`, or any other
kernel), so the same functions serve NNGP, NTK and baseline kernels. For training inputs ``X``, targets
``y`` (``(n,)`` or ``(n, k)`` for ``k`` independent outputs) and Gaussian noise variance ``s``:

``mean = K_*X (K_XX + s I)^{-1} y``, ``cov = K_** - K_*X (K_XX + s I)^{-1} K_X*`` (Rasmussen & Williams,
2006, Alg. 2.1) and ``log p(y) = -1/2 y^T (K + s I)^{-1} y - 1/2 log|K + s I| - n/2 log 2 pi`` per output.

**Jitter policy** (:mod:`jaxbayes.kernels._linalg`). By default nothing is added: the factor is of exactly
``K + s I``, so a well-conditioned problem gives the exact answer. Only if that factorisation fails (the
matrix is not numerically positive definite) is a relative jitter added and grown (``max_tries``
factorisations in all); the absolute jitter used is reported in every result (``0.0`` on the happy path).
Called eagerly, a matrix that is still not positive definite after the last try raises ``ValueError``
naming the argument; under ``jit`` ``ok`` is ``False`` and the outputs are NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxbayes._checks import (
    check_choice,
    check_int_range,
    check_ndim,
    check_positive,
)
from jaxbayes._deprecation import renamed_arguments
from jaxbayes.base import fit, optimizer_algorithm
from jaxbayes.kernels._bbmm import OperatorConditioned, condition_operator, lml_and_stderr, predict_operator
from jaxbayes.kernels._common import check_square_matrix, check_targets
from jaxbayes.kernels._distrax import gaussian_predictive
from jaxbayes.kernels._linalg import cg_solve, jittered_cholesky
from jaxbayes.kernels._operator import CrossOperator, KernelOperator
from jaxbayes.kernels._solvers import CG, GPConditioned, GPSolver, as_solver
from jaxbayes.parallel import data_parallel, unshard
from jaxbayes.typing import Array, ArrayLike, PyTree


class _GPPosteriorFields(NamedTuple):
    mean: Array
    cov: Array | None
    var: Array
    ok: Array
    jitter: Array


class GPPosterior(_GPPosteriorFields):
    """Posterior predictive of the latent function at test points.

    Attributes:
      mean: ``(m,)`` or ``(m, k)``.
      cov: the full ``(m, m)`` covariance (shared by all ``k`` outputs); ``None`` when ``full_cov=False``
        (reading it then still returns the variances, with a ``DeprecationWarning``: use ``var``).
      var: the ``(m,)`` marginal variances (the diagonal of ``cov``), whichever ``full_cov``.
      ok: whether the solves succeeded (see the jitter policy).
      jitter: the absolute jitter added to ``K + noise I`` (``0.0`` when it factored as it is).
    """

    __slots__ = ()

    @property
    def cov(self) -> Array:
        cov = tuple.__getitem__(self, 1)
        if cov is None:
            warnings.warn("GPPosterior.cov with full_cov=False (the marginal variances) was renamed "
                          "GPPosterior.var; cov is None then", DeprecationWarning, stacklevel=2)
            return self.var
        return cov

    def to_distrax(self):
        """The predictive as a distrax distribution: ``MultivariateNormalTri`` with ``full_cov=True``, the
        marginal ``Normal`` otherwise (see :mod:`jaxbayes.kernels._distrax`)."""
        return gaussian_predictive(self.mean, tuple.__getitem__(self, 1), self.var)


class FitResult(NamedTuple):
    """Result of :func:`fit_hyperparameters`: final ``params`` and the ``losses`` after every step."""

    params: PyTree
    losses: Array


def gp_condition(k_train_train: ArrayLike, y_train: ArrayLike, *, noise: ArrayLike = 0.0,
                 jitter: float = 0.0, max_tries: int = 5, solver: str | GPSolver = "cholesky",
                 cg_tol: float | None = None, cg_maxiter: int | None = None) -> GPConditioned:
    """Condition a zero-mean GP on ``(X, y)``: solve ``(K + noise I) alpha = y`` (jitter policy in
    :mod:`jaxbayes.kernels._linalg`).

    Args:
      k_train_train: ``(n, n)`` prior covariance of the training points, or a
        :class:`~jaxbayes.kernels.KernelOperator` (matrix-free; needs ``solver="cg"`` and ``noise > 0``: a
        pivoted-Cholesky preconditioned CG, :mod:`jaxbayes.kernels._bbmm`; returns an ``OperatorConditioned``).
      y_train: ``(n,)`` or ``(n, k)`` targets.
      noise: Gaussian observation-noise variance (>= 0).
      jitter, max_tries: the jitter policy: relative jitter of the first try (0: none, so a matrix that
        factors gives the exact answer) and factorisations in all (the retries grow the jitter).
      solver: a :class:`~jaxbayes.kernels.GPSolver` (``Cholesky()``, ``CG(tol=..., max_iterations=...)``) or
        its name (``"cholesky"``, ``"cg"``).
      cg_tol, cg_maxiter: deprecated; use ``solver=CG(tol=..., max_iterations=...)``.

    Example:
      >>> import jax.numpy as jnp
      >>> c = gp_condition(jnp.eye(2), jnp.array([1.0, 2.0]), noise=1.0)
      >>> [round(v, 4) for v in c.alpha.tolist()], float(c.jitter)
      ([0.5, 1.0], 0.0)
    """
    if isinstance(k_train_train, KernelOperator):
        return condition_operator(k_train_train, y_train, noise, as_solver(solver))
    k = check_square_matrix("k_train_train", k_train_train)
    y = check_targets(k, y_train)
    check_positive("noise", noise, strict=False)
    solver = as_solver(solver)
    if cg_tol is not None or cg_maxiter is not None:
        warnings.warn("gp_condition(): cg_tol/cg_maxiter are deprecated; pass solver=CG(tol=..., "
                      "max_iterations=...)", DeprecationWarning, stacklevel=2)
        if isinstance(solver, CG):
            solver = CG(solver.tol if cg_tol is None else cg_tol,
                        solver.max_iterations if cg_maxiter is None else cg_maxiter)
    return solver.condition(k, y, noise, jitter=jitter, max_tries=max_tries)


@renamed_arguments(cg_tol="tol", cg_maxiter="max_iterations")
def gp_predict(conditioned: GPConditioned, k_test_train: ArrayLike, k_test_test: ArrayLike, *,
               full_cov: bool = True, tol: float = 1e-6, max_iterations: int | None = None) -> GPPosterior:
    """Predict at test points from a :func:`gp_condition` result.

    Args:
      conditioned: the conditioned GP.
      k_test_train: ``(m, n)`` cross-covariance; for an operator-conditioned GP the cross operator
        ``op.cross(x_test)`` (mean by tiled products; the variances by one batched PCG of its ``m`` rows, so
        ``O(n m)`` memory: predict many test points in batches).
      k_test_test: ``(m, m)`` prior covariance of the test points if ``full_cov``, else their ``(m,)``
        prior variances.
      full_cov: return the full covariance in ``cov`` (else ``cov`` is ``None``); the marginal variances are
        in ``var`` either way.
      tol, max_iterations: CG stopping rule for the variance solves (CG solver only).
    """
    if isinstance(conditioned, OperatorConditioned):
        if not isinstance(k_test_train, CrossOperator):
            raise ValueError("an operator-conditioned GP needs k_test_train=op.cross(x_test)")
        mean, cov, var, ok = predict_operator(conditioned, k_test_train, k_test_test, full_cov=full_cov, tol=tol,
                                              max_iterations=max_iterations)
        return GPPosterior(mean, cov, var, ok, conditioned.jitter)
    # The variance solves pair every test row with every other (v^T v): explicitly sharded test kernels are
    # gathered first (a no-op for unsharded and Auto-sharded inputs).
    kx = unshard(jnp.asarray(k_test_train))
    check_ndim("k_test_train", kx, 2)
    if kx.shape[1] != conditioned.alpha.shape[0]:
        raise ValueError(f"k_test_train must have {conditioned.alpha.shape[0]} columns, got {kx.shape}")
    kss = unshard(jnp.asarray(k_test_test))
    check_ndim("k_test_test", kss, 2 if full_cov else 1)
    mean = kx @ conditioned.alpha
    ok = conditioned.ok
    if conditioned.chol is not None:
        v = jax.scipy.linalg.solve_triangular(conditioned.chol, kx.T, lower=True)
    else:
        res = cg_solve(conditioned.matrix, kx.T, tol=tol, max_iterations=max_iterations)
        ok = ok & res.converged
    if full_cov:
        if conditioned.chol is not None:
            cov = kss - v.T @ v
        else:
            cov = kss - kx @ res.x
        var = jnp.diagonal(cov)
    else:
        cov = None
        var = kss - (jnp.sum(v * v, axis=0) if conditioned.chol is not None else jnp.sum(kx.T * res.x, 0))
    return GPPosterior(mean, cov, var, ok, conditioned.jitter)


def gp_posterior(k_train_train: ArrayLike, y_train: ArrayLike, k_test_train: ArrayLike, k_test_test: ArrayLike,
                 *, noise: ArrayLike = 0.0, full_cov: bool = True, jitter: float = 0.0, max_tries: int = 5,
                 solver: str | GPSolver = "cholesky") -> GPPosterior:
    """Exact GP posterior predictive of the latent function (see the module docstring for the formulas).

    ``full_cov=False`` takes the ``(m,)`` prior variances as ``k_test_test`` and returns the marginal
    variances in ``var`` (``cov`` is ``None``). ``jitter``, ``max_tries``: the jitter policy (none unless the
    factorisation fails).

    Example:
      >>> import jax.numpy as jnp
      >>> post = gp_posterior(jnp.eye(1), jnp.array([2.0]), jnp.array([[0.5]]), jnp.eye(1), noise=1.0)
      >>> [round(v, 4) for v in (float(post.mean[0]), float(post.cov[0, 0]), float(post.var[0]))]
      [0.5, 0.875, 0.875]
      >>> float(post.jitter)
      0.0
    """
    cond = gp_condition(k_train_train, y_train, noise=noise, jitter=jitter, max_tries=max_tries, solver=solver)
    return gp_predict(cond, k_test_train, k_test_test, full_cov=full_cov)


def log_marginal_likelihood(k_train_train: ArrayLike, y_train: ArrayLike, *, noise: ArrayLike = 0.0,
                            jitter: float = 0.0, max_tries: int = 5, solver: str | GPSolver | None = None,
                            key: Array | None = None) -> Array:
    """``log N(y; 0, K + noise I)``, summed over the columns of ``y`` (see the module docstring).

    Exact (no jitter) whenever ``K + noise I`` factors; ``jitter``, ``max_tries`` as in :func:`gp_condition`.
    The jitter used is ``jittered_cholesky(K, shift=noise).jitter``.

    For a :class:`~jaxbayes.kernels.KernelOperator` (``solver="cg"`` or a ``CG(...)``, ``noise > 0`` and a
    ``key`` for the probes are required) it is the BBMM estimate of
    :func:`~jaxbayes.kernels.lml_and_stderr` (which also returns the Monte-Carlo standard error), with its
    stochastic gradient. Dense matrices take the exact Cholesky path (``solver`` ``None``/``"cholesky"``).

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(log_marginal_likelihood(jnp.eye(1), jnp.array([0.0]), noise=1.0)), 4)
      -1.2655
    """
    if isinstance(k_train_train, KernelOperator):
        if key is None:
            raise ValueError("log_marginal_likelihood of a KernelOperator needs key= (its log-det probes)")
        cg = as_solver("cg" if solver is None else solver)
        return lml_and_stderr(k_train_train, y_train, noise=noise, solver=cg, key=key).lml
    if solver is not None and not isinstance(as_solver(solver), type(as_solver("cholesky"))):
        raise ValueError(f"log_marginal_likelihood of a matrix is exact (Cholesky); got solver={solver!r} "
                         "(wrap the kernel in kernel_operator(...) for the CG estimate)")
    k = check_square_matrix("k_train_train", k_train_train)
    y = check_targets(k, y_train)
    check_positive("noise", noise, strict=False)
    ch = jittered_cholesky(k, jitter=jitter, max_tries=max_tries, shift=noise, name="k_train_train")
    ym = y[:, None] if y.ndim == 1 else y
    z = jax.scipy.linalg.solve_triangular(ch.chol, ym, lower=True)
    logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(ch.chol)))
    n, k_out = ym.shape
    return -0.5 * jnp.sum(z * z) - 0.5 * k_out * logdet - 0.5 * n * k_out * jnp.log(2 * jnp.pi)


@renamed_arguments(batch_size="chunk_size")
def gp_predict_batched(kernel_fn: Callable, conditioned: GPConditioned, x_train: ArrayLike, x_test: ArrayLike,
                       *, get: str = "nngp", chunk_size: int | None = 128, mesh: Mesh | None = None
                       ) -> GPPosterior:
    """Marginal posterior (mean, variance) at ``x_test`` with kernels computed on the fly, point by point.

    Memory stays ``O(chunk_size * n)``: test points are processed in chunks with ``lax.map`` (one device)
    or split across ``mesh`` (``data_parallel``); the numbers equal :func:`gp_predict` with
    ``full_cov=False`` (Cholesky solver).

    Args:
      kernel_fn: ``(x1, x2) -> Kernel``.
      conditioned: a Cholesky :func:`gp_condition` result for ``x_train``.
      x_train: ``(n, ...)`` training inputs used for ``conditioned``.
      x_test: ``(m, ...)`` test inputs.
      get: ``"nngp"`` or ``"ntk"``: which kernel ``conditioned`` was built from.
      chunk_size: test points per ``lax.map`` step (one device only).
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
        bs = None if chunk_size is None else check_int_range("chunk_size", chunk_size, 1)
        mean, var = jax.lax.map(lambda xt: one(xt, *args), x_test, batch_size=bs)
    return GPPosterior(mean, None, var, conditioned.ok, conditioned.jitter)


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
    theta = check_square_matrix("k_train_train.ntk", k_train_train.ntk)
    y = check_targets(theta, y_train)
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
        var = jnp.diagonal(cov)
    else:
        cov = None
        var = jnp.diagonal(kss) - 2 * jnp.sum(k_x.T * a, 0) + jnp.sum(a * (kxx @ a), 0)
    return GPPosterior(mean, cov, var, ch.ok, ch.jitter)


def fit_hyperparameters(loss_fn: Callable[[PyTree], Array], init_params: PyTree, *,
                        optimizer: optax.GradientTransformation | None = None,
                        num_steps: int = 200) -> FitResult:
    """Minimise ``loss_fn(params)`` (e.g. a negative log marginal likelihood) with optax.

    Runs :func:`jaxbayes.base.optimizer_algorithm` through :func:`jaxbayes.base.fit` (one ``lax.scan``; a step
    whose gradient is non-finite is skipped). ``losses[t]`` is the loss before step ``t``.

    Parameterise positive hyper-parameters through ``exp``/``softplus`` inside ``loss_fn``.

    Example:
      >>> import jax.numpy as jnp
      >>> r = fit_hyperparameters(lambda p: (p - 3.0) ** 2, jnp.array(0.0), num_steps=300)
      >>> round(float(r.params), 2)
      3.0
    """
    opt = optax.adam(0.05) if optimizer is None else optimizer
    alg = optimizer_algorithm(lambda params, key, batch: loss_fn(params), opt)
    state, info = fit(jax.random.key(0), alg, alg.init(None, init_params), num_steps)
    return FitResult(state.params, info.loss)


__all__ = [
    "FitResult", "GPPosterior",
    "fit_hyperparameters", "gp_condition", "gp_posterior", "gp_predict", "gp_predict_batched",
    "infinite_ensemble_posterior", "log_marginal_likelihood",
]
