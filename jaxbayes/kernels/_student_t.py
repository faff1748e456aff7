"""Scale mixtures of NNGPs: Student-t process regression (Lee et al., "Scale Mixtures of Neural Network
Gaussian Processes", ICLR 2022).

Put an inverse-gamma prior on the variance ``sigma^2`` of the last layer: ``sigma^2 ~ InvGamma(alpha, beta)``
and ``f | sigma^2 ~ GP(0, sigma^2 K)``, where ``K`` is the NNGP of the network with a unit last-layer
variance. Marginally ``f`` is a Student-t process: any finite vector is multivariate t with ``2 alpha``
degrees of freedom and scale matrix ``(beta / alpha) K``. As in Shah et al. (2014), the observation noise is
scaled with the kernel (``y | f, sigma^2 ~ N(f, sigma^2 s I)``) so the posterior stays in closed form: with
``A = K + s I``, ``n`` training points and ``k`` outputs sharing ``sigma^2``,

* ``sigma^2 | y ~ InvGamma(alpha + n k / 2, beta + 1/2 sum_j y_j^T A^{-1} y_j)``;
* ``f_* | y ~ t_{2 alpha'}(K_*X A^{-1} y, (beta'/alpha') (K_** - K_*X A^{-1} K_X*))``, whose covariance is
  the scale matrix times ``alpha' / (alpha' - 1)``;
* ``log p(y) = log Gamma(alpha') - log Gamma(alpha) - n k/2 log(2 pi beta) - k/2 log|A|
  - alpha' log(beta' / beta)``.

When ``alpha -> infinity`` with ``beta = alpha sigma0^2`` this becomes the Gaussian posterior with kernel
``sigma0^2 K``. Other scale priors are handled by self-normalised importance sampling with the prior as the
proposal (:func:`scale_mixture_posterior`): the conditional mean does not depend on ``sigma^2`` and the
conditional covariance is ``sigma^2`` times the Gaussian one, so only ``E[sigma^2 | y]`` has to be estimated.

Predictives: :func:`student_t_predictive_logpdf` (per point, marginal) and
:func:`student_t_joint_predictive_logpdf` (the joint density of a test vector: multivariate t with ``2 alpha'``
degrees of freedom, location ``mean`` and the posterior scale matrix). Their ``noise`` (relative to
``sigma^2``, as above) gives noisy targets ``y_* = f_* + eps``; ``student_t_posterior(noisy_targets=True)``
returns that predictive itself. No jitter is added to a matrix that factors (jitter policy in
:mod:`jaxbayes.kernels._linalg`); the results carry the jitter used.

Classification with scale mixtures (Laplace approximations) lives in
:mod:`jaxbayes.kernels._laplace_classification`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxbayes._checks import check_int_range, check_positive
from jaxbayes.kernels._bbmm import condition_operator, predict_operator, quad_and_logdet
from jaxbayes.kernels._common import (
    check_alpha_beta,
    check_square_matrix,
    check_targets,
    normalised_weights,
)
from jaxbayes.kernels._distrax import student_t_predictive
from jaxbayes.kernels._gp import fit_hyperparameters
from jaxbayes.kernels._linalg import jittered_cholesky
from jaxbayes.kernels._operator import CrossOperator, KernelOperator
from jaxbayes.kernels._solvers import CG, GPSolver, as_solver
from jaxbayes.parallel import unshard
from jaxbayes.typing import Array, ArrayLike, PRNGKey


class StudentTPosterior(NamedTuple):
    """Student-t process posterior predictive of the latent function (or of noisy targets).

    Attributes:
      mean: ``(m,)`` or ``(m, k)`` location (= mean when ``df > 1``).
      scale: the t scale matrix ``(m, m)`` (or its diagonal ``(m,)`` when ``full_cov=False``).
      cov: the predictive covariance ``scale * df / (df - 2)`` (same shape as ``scale``).
      df: degrees of freedom ``2 alpha'``.
      alpha: posterior shape ``alpha'`` of ``sigma^2``.
      beta: posterior rate ``beta'`` of ``sigma^2``.
      ok: whether the Cholesky factorisation succeeded (for a kernel operator: the CG solves converged).
      jitter: the absolute jitter added to ``K + noise I`` (``0.0`` when it factored as it is).
    """

    mean: Array
    scale: Array
    cov: Array
    df: Array
    alpha: Array
    beta: Array
    ok: Array
    jitter: Array

    def to_distrax(self):
        """The predictive as a distribution: TFP's ``MultivariateStudentTLinearOperator`` (full scale) or the
        marginal ``StudentT`` (diagonal), wrapped by ``distrax.as_distribution`` (see
        :mod:`jaxbayes.kernels._distrax`)."""
        return student_t_predictive(self.mean, self.scale, self.df)


class ScaleMixturePosterior(NamedTuple):
    """Importance-sampled scale-mixture posterior.

    Attributes:
      mean: posterior mean ``(m,)`` or ``(m, k)``.
      cov: posterior covariance ``E[sigma^2 | y] * S`` with ``S`` the unit-scale Gaussian posterior
        covariance (``(m, m)`` or ``(m,)``).
      scale_mean: the estimate of ``E[sigma^2 | y]``.
      scales: the prior draws of ``sigma^2``.
      log_weights: their normalised log importance weights.
      ess: effective sample size ``1 / sum w^2``.
      jitter: the absolute jitter added to ``K + noise I`` (``0.0`` when it factored as it is).
    """

    mean: Array
    cov: Array
    scale_mean: Array
    scales: Array
    log_weights: Array
    ess: Array
    jitter: Array


def _quadratic(k: Array, y: Array, noise: ArrayLike, jitter: float, max_tries: int):
    ch = jittered_cholesky(k, jitter=jitter, max_tries=max_tries, shift=noise, name="k_train_train")
    ym = y[:, None] if y.ndim == 1 else y
    z = jax.scipy.linalg.solve_triangular(ch.chol, ym, lower=True)
    logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(ch.chol)))
    return ch, jnp.sum(z * z), logdet, ym.shape


def student_t_log_marginal_likelihood(k_train_train: ArrayLike, y_train: ArrayLike, *, alpha: ArrayLike,
                                      beta: ArrayLike, noise: ArrayLike = 0.0, jitter: float = 0.0,
                                      max_tries: int = 5, solver: str | GPSolver | None = None,
                                      key: PRNGKey | None = None) -> Array:
    """``log p(y)`` under the Student-t process (formula in the module docstring).

    For one output column this is ``scipy.stats.multivariate_t(df=2 alpha, shape=beta/alpha (K + s I))``,
    exactly (no jitter) whenever ``K + s I`` factors; ``jitter``, ``max_tries``: the jitter policy.

    For a :class:`~jaxbayes.kernels.KernelOperator` (``noise > 0`` and a ``key`` for the probes) the quadratic
    form and ``log|K + s I|`` come from the matrix-free BBMM solve (:func:`~jaxbayes.kernels.quad_and_logdet`,
    ``solver`` a ``CG``, default ``CG()``), with its stochastic gradient; the estimate inherits the log
    determinant's Monte-Carlo error times ``k/2``.

    Example:
      >>> import jax.numpy as jnp
      >>> v = student_t_log_marginal_likelihood(jnp.eye(1), jnp.array([0.0]), alpha=1.0, beta=1.0)
      >>> round(float(v), 4)  # t_2 density at 0: Gamma(3/2) / (Gamma(1) sqrt(2 pi))
      -1.0397
    """
    check_alpha_beta(alpha, beta)
    check_positive("noise", noise, strict=False)
    if isinstance(k_train_train, KernelOperator):
        if key is None:
            raise ValueError("student_t_log_marginal_likelihood of a KernelOperator needs key= (its log-det probes)")
        r = quad_and_logdet(k_train_train, y_train, noise=noise, solver=_operator_solver(solver), key=key)
        y = jnp.asarray(y_train)
        quad, logdet, n, n_out = r.quad, r.logdet, y.shape[0], (1 if y.ndim == 1 else y.shape[1])
    else:
        _check_dense_solver(solver)
        k = check_square_matrix("k_train_train", k_train_train)
        y = check_targets(k, y_train)
        _, quad, logdet, (n, n_out) = _quadratic(k, y, noise, jitter, max_tries)
    # y is multivariate t with df = 2 alpha and shape (beta / alpha) (K + s I) per column
    d = n * n_out
    ratio = jnp.asarray(beta, quad.dtype) / alpha
    return _log_multivariate_t(quad / ratio, n_out * logdet + d * jnp.log(ratio), d, 2 * jnp.asarray(alpha))


def student_t_posterior(k_train_train: ArrayLike, y_train: ArrayLike, k_test_train: ArrayLike,
                        k_test_test: ArrayLike, *, alpha: ArrayLike, beta: ArrayLike, noise: ArrayLike = 0.0,
                        full_cov: bool = True, jitter: float = 0.0, max_tries: int = 5,
                        noisy_targets: bool = False, solver: str | GPSolver | None = None,
                        tol: float = 1e-6, max_iterations: int | None = None) -> StudentTPosterior:
    """Closed-form Student-t process posterior predictive (module docstring; Lee et al., 2022, Thm 3.2).

    Args:
      k_train_train: ``(n, n)`` NNGP of the training inputs with unit last-layer variance.
      y_train: ``(n,)`` or ``(n, k)`` targets.
      k_test_train: ``(m, n)``.
      k_test_test: ``(m, m)`` if ``full_cov`` else the ``(m,)`` prior variances.
      alpha, beta: inverse-gamma prior of the last-layer variance (> 0).
      noise: noise variance relative to ``sigma^2`` (>= 0).
      full_cov: full covariance or marginal variances.
      jitter, max_tries: the jitter policy of :func:`jittered_cholesky` (none unless the factorisation fails).
      noisy_targets: the predictive of noisy targets ``y_* = f_* + eps`` (``noise`` added to the diagonal of
        the unit-scale covariance, so ``(beta'/alpha') noise`` to ``scale``) instead of the latent ``f_*``.
        Then pass no ``noise`` to the log densities.
      solver, tol, max_iterations: for a :class:`~jaxbayes.kernels.KernelOperator` ``k_train_train`` (with
        ``k_test_train = op.cross(x_test)`` and ``noise > 0``): the ``CG`` of the training solve (default
        ``CG()``) and the stopping rule of the variance solves, as in :func:`~jaxbayes.kernels.gp_predict`.

    Example:
      >>> import jax.numpy as jnp
      >>> p = student_t_posterior(jnp.eye(1), jnp.array([0.0]), jnp.zeros((1, 1)), jnp.eye(1),
      ...                         alpha=2.0, beta=2.0, noise=1.0)
      >>> float(p.df), round(float(p.cov[0, 0]), 4)  # beta'/(alpha'-1) = 2 / 1.5
      (5.0, 1.3333)
    """
    check_alpha_beta(alpha, beta)
    check_positive("noise", noise, strict=False)
    if isinstance(k_train_train, KernelOperator):
        if not isinstance(k_test_train, CrossOperator):
            raise ValueError("a KernelOperator k_train_train needs k_test_train=op.cross(x_test)")
        cond = condition_operator(k_train_train, y_train, noise, _operator_solver(solver))
        mean, cov_g, var_g, ok = predict_operator(cond, k_test_train, k_test_test, full_cov=full_cov, tol=tol,
                                                  max_iterations=max_iterations)
        gauss = cov_g if full_cov else var_g
        y = unshard(jnp.asarray(y_train))
        n, n_out = y.shape[0], (1 if y.ndim == 1 else y.shape[1])
        quad, jit_used = jnp.sum(y * cond.alpha), cond.jitter
    else:
        _check_dense_solver(solver)
        k = check_square_matrix("k_train_train", k_train_train)
        y = check_targets(k, y_train)
        ch, quad, _, (n, n_out) = _quadratic(k, y, noise, jitter, max_tries)
        kx = jnp.asarray(k_test_train)
        kss = jnp.asarray(k_test_test)
        mean = kx @ jax.scipy.linalg.cho_solve((ch.chol, True), y)
        v = jax.scipy.linalg.solve_triangular(ch.chol, kx.T, lower=True)
        gauss = kss - v.T @ v if full_cov else kss - jnp.sum(v * v, axis=0)
        ok, jit_used = ch.ok, ch.jitter
    if noisy_targets:
        noise = jnp.asarray(noise, gauss.dtype)
        gauss = gauss + noise * jnp.eye(gauss.shape[0], dtype=gauss.dtype) if full_cov else gauss + noise
    a_post = alpha + 0.5 * n * n_out
    b_post = beta + 0.5 * quad
    scale = (b_post / a_post) * gauss
    cov = (b_post / (a_post - 1)) * gauss
    return StudentTPosterior(mean, scale, cov, 2 * a_post, a_post, b_post, ok, jit_used)


def _operator_solver(solver: str | GPSolver | None) -> CG:
    solver = as_solver("cg" if solver is None else solver)
    if not isinstance(solver, CG):
        raise ValueError(f"a KernelOperator needs solver='cg' or a CG(...) object, got {solver!r}")
    return solver


def _check_dense_solver(solver: str | GPSolver | None) -> None:
    if solver is not None and isinstance(as_solver(solver), CG):
        raise ValueError("the Student-t functions factor a matrix exactly (Cholesky); for CG wrap the kernel in "
                         "kernel_operator(...)")


def student_t_predictive_logpdf(posterior: StudentTPosterior, y_test: ArrayLike, *,
                                noise: ArrayLike = 0.0) -> Array:
    """Per-point log density of test targets under the marginal Student-t predictive (``full_cov=False``).

    The predictive of ``y_*`` is ``t_df(mean, scale + (beta'/alpha') noise)`` (``noise`` relative to
    ``sigma^2``, as in :func:`student_t_posterior`; 0 for the latent ``f_*``). For the joint density of the
    test vector see :func:`student_t_joint_predictive_logpdf`.
    """
    y = jnp.asarray(y_test)
    if posterior.scale.ndim != 1:
        raise ValueError("student_t_predictive_logpdf needs the marginal posterior (full_cov=False); for the "
                         "full one use student_t_joint_predictive_logpdf")
    scale = posterior.scale + posterior.beta / posterior.alpha * noise
    if y.ndim == 2:
        scale = scale[:, None]
    return jax.scipy.stats.t.logpdf(y, posterior.df, posterior.mean, jnp.sqrt(scale))


def student_t_joint_predictive_logpdf(posterior: StudentTPosterior, y_test: ArrayLike, *,
                                      noise: ArrayLike = 0.0, jitter: float = 0.0, max_tries: int = 5) -> Array:
    """Joint log density of the test vector ``y_*`` under the Student-t predictive (``full_cov=True``).

    ``y_* ~ t_df(mean, S)``, ``S = scale + (beta'/alpha') noise I`` (multivariate t; ``noise`` relative to
    ``sigma^2`` gives noisy targets, 0 the latent ``f_*``). The ``k`` columns of an ``(m, k)`` ``y_*`` share
    ``sigma^2``, so they are one ``m k``-dimensional t with scale ``I_k kron S``, not ``k`` independent ones.
    For one column this is ``scipy.stats.multivariate_t(mean, S, df=df).logpdf(y_test)``.

    Args:
      posterior: a :func:`student_t_posterior` result with ``full_cov=True``.
      y_test: ``(m,)`` or ``(m, k)`` like ``posterior.mean``.
      noise: observation-noise variance relative to ``sigma^2`` (>= 0).
      jitter, max_tries: the jitter policy for factoring ``S`` (none unless it fails).

    Example:
      >>> import jax.numpy as jnp
      >>> p = student_t_posterior(jnp.eye(1), jnp.array([0.0]), jnp.zeros((2, 1)), jnp.eye(2),
      ...                         alpha=1.0, beta=1.0, noise=1.0)
      >>> round(float(student_t_joint_predictive_logpdf(p, jnp.zeros(2))), 4)  # t_3, scale 2/3 I
      -1.4324
    """
    if posterior.scale.ndim != 2:
        raise ValueError("student_t_joint_predictive_logpdf needs the full posterior (full_cov=True)")
    check_positive("noise", noise, strict=False)
    y = jnp.asarray(y_test)
    if y.shape != posterior.mean.shape:
        raise ValueError(f"y_test must have the shape of posterior.mean {posterior.mean.shape}, got {y.shape}")
    scale = posterior.scale
    ch = jittered_cholesky(scale, jitter=jitter, max_tries=max_tries, name="posterior.scale",
                           shift=posterior.beta / posterior.alpha * jnp.asarray(noise, scale.dtype))
    r = y - posterior.mean
    rm = r[:, None] if r.ndim == 1 else r
    z = jax.scipy.linalg.solve_triangular(ch.chol, rm, lower=True)
    m, k_out = rm.shape
    logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(ch.chol)))
    return _log_multivariate_t(jnp.sum(z * z), k_out * logdet, m * k_out, posterior.df)


def _log_multivariate_t(quad: Array, logdet: Array, d: int, df: ArrayLike) -> Array:
    """``log t_df(y; mu, S)`` in ``d`` dimensions from ``quad = (y - mu)^T S^{-1} (y - mu)`` and
    ``logdet = log det S`` (the one formula behind the marginal likelihood and the joint predictive)."""
    return (jax.scipy.special.gammaln(0.5 * (df + d)) - jax.scipy.special.gammaln(0.5 * df)
            - 0.5 * d * jnp.log(df * jnp.pi) - 0.5 * logdet - 0.5 * (df + d) * jnp.log1p(quad / df))


def fit_student_t(k_train_train: ArrayLike, y_train: ArrayLike, *, noise: ArrayLike = 0.0,
                  init_alpha: float = 2.0, init_beta: float = 2.0, num_steps: int = 300,
                  optimizer: optax.GradientTransformation | None = None, jitter: float = 0.0
                  ) -> tuple[Array, Array, Array]:
    """Fit ``(alpha, beta)`` by maximising :func:`student_t_log_marginal_likelihood` (optax, log-parameters).

    Returns:
      ``(alpha, beta, losses)`` with the negative log marginal likelihood after every step.
    """
    check_alpha_beta(init_alpha, init_beta)

    def loss(p):
        return -student_t_log_marginal_likelihood(k_train_train, y_train, alpha=jnp.exp(p[0]),
                                                  beta=jnp.exp(p[1]), noise=noise, jitter=jitter)

    init = jnp.log(jnp.array([init_alpha, init_beta], dtype=jnp.asarray(k_train_train).dtype))
    res = fit_hyperparameters(loss, init, optimizer=optimizer, num_steps=num_steps)
    return jnp.exp(res.params[0]), jnp.exp(res.params[1]), res.losses


def scale_mixture_posterior(key: PRNGKey, k_train_train: ArrayLike, y_train: ArrayLike, k_test_train: ArrayLike,
                            k_test_test: ArrayLike, *, sample_scale: Callable[[PRNGKey, int], Array],
                            num_samples: int = 1000, noise: ArrayLike = 0.0, full_cov: bool = True,
                            jitter: float = 0.0) -> ScaleMixturePosterior:
    """Posterior of a GP scale mixture with any prior on ``sigma^2``, by importance sampling over the prior.

    Weights are ``w_i ∝ N(y; 0, sigma_i^2 (K + s I))``; ``E[sigma^2 | y] ≈ sum_i w_i sigma_i^2``.

    Args:
      key: PRNG key for ``sample_scale``.
      sample_scale: ``(key, num) -> (num,)`` positive draws of ``sigma^2`` from its prior.
      num_samples: number of prior draws.
      Other arguments as in :func:`student_t_posterior`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> draw = lambda k, n: jnp.exp(0.5 * jax.random.normal(k, (n,)))  # log-normal prior
      >>> p = scale_mixture_posterior(jax.random.key(0), jnp.eye(2), jnp.ones(2), jnp.eye(2), jnp.eye(2),
      ...                             sample_scale=draw, num_samples=500, noise=1.0)
      >>> [round(v, 4) for v in p.mean.tolist()]
      [0.5, 0.5]
    """
    num_samples = check_int_range("num_samples", num_samples, 1)
    check_positive("noise", noise, strict=False)
    k = check_square_matrix("k_train_train", k_train_train)
    y = check_targets(k, y_train)
    ch, quad, logdet, (n, n_out) = _quadratic(k, y, noise, jitter, 5)
    scales = sample_scale(key, num_samples)
    check_positive("sample_scale draws", scales)
    logw, w, ess = normalised_weights(-0.5 * quad / scales - 0.5 * n * n_out * jnp.log(scales))
    scale_mean = jnp.sum(w * scales)
    kx = jnp.asarray(k_test_train)
    kss = jnp.asarray(k_test_test)
    mean = kx @ jax.scipy.linalg.cho_solve((ch.chol, True), y)
    v = jax.scipy.linalg.solve_triangular(ch.chol, kx.T, lower=True)
    gauss = kss - v.T @ v if full_cov else kss - jnp.sum(v * v, axis=0)
    del logdet
    return ScaleMixturePosterior(mean, scale_mean * gauss, scale_mean, scales, logw, ess, ch.jitter)


__all__ = [
    "ScaleMixturePosterior", "StudentTPosterior", "fit_student_t", "scale_mixture_posterior",
    "student_t_joint_predictive_logpdf", "student_t_log_marginal_likelihood", "student_t_posterior",
    "student_t_predictive_logpdf",
]
