"""Normal-Inverse-Wishart (NIW) class-conditional Gaussians for Bayesian few-shot classification: conjugate
posteriors, Student-t predictives, marginal likelihoods and an empirical-Bayes prior, after Kim & Hospedales,
"A Hierarchical Bayesian Model for Deep Few-Shot Meta Learning" (2023; ICLR 2024). There a global NIW governs
episode-wise variables of a deep network and the local posteriors are approximately closed form; here it governs
class-conditional Gaussians over fixed features, where everything is exactly conjugate.

Each class ``c`` has features ``x ~ N(mu_c, Sigma_c)`` with a shared NIW prior (the global variable of the
paper's hierarchy): ``Sigma_c ~ IW(nu_0, Psi_0)`` and ``mu_c | Sigma_c ~ N(mu_0, Sigma_c / kappa_0)``, with
``kappa_0 > 0``, ``nu_0 > d - 1`` and ``Psi_0`` positive definite. For ``n`` points with mean ``xbar`` and
scatter ``S = sum_i (x_i - xbar)(x_i - xbar)^T`` the posterior is NIW again:

* ``kappa_n = kappa_0 + n``, ``nu_n = nu_0 + n``, ``mu_n = (kappa_0 mu_0 + n xbar) / kappa_n``;
* ``Psi_n = Psi_0 + S + (kappa_0 n / kappa_n) (xbar - mu_0)(xbar - mu_0)^T``;
* ``log p(D) = -n d/2 log pi + log Gamma_d(nu_n/2) - log Gamma_d(nu_0/2) + nu_0/2 log|Psi_0|
  - nu_n/2 log|Psi_n| + d/2 log(kappa_0 / kappa_n)``;
* ``p(x | D) = t_{nu_n - d + 1}(x; mu_n, Psi_n (kappa_n + 1) / (kappa_n (nu_n - d + 1)))``.

A few-shot episode scores a query by the class posterior ``log p(y = c | x, D) = log softmax_c(log p(x | D_c)
+ log pi_c)`` (:func:`niw_few_shot_log_probs`). :func:`fit_niw_prior` picks ``(mu_0, kappa_0, nu_0, Psi_0)``
from base classes by maximising ``sum_c log p(D_c)`` (type-II maximum likelihood) with L-BFGS, started from a
moment match. Points enter through 0/1 ``mask`` weights, so classes of any size batch under ``vmap``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbayes._checks import check_floating, check_int_range, check_ndim, check_positive, concrete_value
from jaxbayes.typing import Array, ArrayLike
from jaxbayes.vi._laplace_map import find_map


class NIW(NamedTuple):
    """A Normal-Inverse-Wishart distribution over ``(mu, Sigma)``: the prior ``(mu_0, kappa_0, nu_0, Psi_0)``
    or a posterior ``(mu_n, kappa_n, nu_n, Psi_n)`` (module docstring).

    Attributes:
      mu: ``(d,)`` location of the mean.
      kappa: pseudo-count of the mean (> 0).
      nu: degrees of freedom of the inverse Wishart (> d - 1).
      psi: ``(d, d)`` positive-definite scale matrix of the inverse Wishart.
    """

    mu: Array
    kappa: Array
    nu: Array
    psi: Array

    @property
    def mean_cov(self) -> Array:
        """``E[Sigma] = Psi / (nu - d - 1)`` (finite for ``nu > d + 1``)."""
        return self.psi / (self.nu - self.mu.shape[-1] - 1)


class NIWPredictive(NamedTuple):
    """The posterior predictive of a new point, a multivariate Student t.

    Attributes:
      loc: ``(d,)`` location ``mu_n``.
      scale: ``(d, d)`` scale matrix ``Psi_n (kappa_n + 1) / (kappa_n df)``.
      df: degrees of freedom ``nu_n - d + 1``.
    """

    loc: Array
    scale: Array
    df: Array

    @property
    def cov(self) -> Array:
        """The predictive covariance ``scale df / (df - 2)`` (finite for ``df > 2``)."""
        return self.scale * self.df / (self.df - 2)

    def log_prob(self, x: ArrayLike) -> Array:
        """``log t_df(x; loc, scale)`` of points ``x`` of shape ``(..., d)``; returns shape ``(...)``."""
        x = jnp.asarray(x)
        d = self.loc.shape[-1]
        chol = jnp.linalg.cholesky(self.scale)
        z = jax.scipy.linalg.solve_triangular(chol, (x - self.loc).reshape(-1, d).T, lower=True)
        quad = jnp.sum(z * z, axis=0).reshape(x.shape[:-1])
        logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(chol)))
        df = self.df
        return (jax.scipy.special.gammaln((df + d) / 2) - jax.scipy.special.gammaln(df / 2)
                - d / 2 * jnp.log(df * jnp.pi) - logdet / 2 - (df + d) / 2 * jnp.log1p(quad / df))


class NIWFit(NamedTuple):
    """Result of :func:`fit_niw_prior`.

    Attributes:
      prior: the fitted prior.
      log_marginal_likelihood: ``sum_c log p(D_c)`` at ``prior``.
      converged: the L-BFGS gradient tolerance was reached.
      n_iters: L-BFGS iterations.
      error: gradient norm of the per-point objective at the fit.
    """

    prior: NIW
    log_marginal_likelihood: Array
    converged: Array
    n_iters: Array
    error: Array


def check_niw(niw: NIW, name: str = "prior") -> int:
    """Check shapes (trace time) and, when concrete, ``kappa > 0`` and ``nu > d - 1``; return ``d``."""
    if not isinstance(niw, NIW):
        raise TypeError(f"{name} must be a NIW(mu, kappa, nu, psi), got {type(niw).__name__}")
    check_ndim(f"{name}.mu", niw.mu, 1)
    d = np.shape(niw.mu)[0]
    if np.shape(niw.psi) != (d, d):
        raise ValueError(f"{name}.psi must have shape ({d}, {d}) to match {name}.mu, got {np.shape(niw.psi)}")
    check_ndim(f"{name}.kappa", niw.kappa, 0)
    check_ndim(f"{name}.nu", niw.nu, 0)
    check_positive(f"{name}.kappa", niw.kappa)
    nu = concrete_value(niw.nu)
    if nu is not None and not nu > d - 1:
        raise ValueError(f"{name}.nu must be > d - 1 = {d - 1}, got {nu.item()}")
    return d


def _check_points(name: str, x: ArrayLike, d: int) -> Array:
    check_ndim(name, x, 2)
    check_floating(name, x)
    if np.shape(x)[1] != d:
        raise ValueError(f"{name} must have shape (n, {d}) to match the prior, got {np.shape(x)}")
    return jnp.asarray(x)


def _weights(x: Array, mask: ArrayLike | None) -> Array:
    if mask is None:
        return jnp.ones(x.shape[0], x.dtype)
    if np.shape(mask) != x.shape[:1]:
        raise ValueError(f"mask must have shape ({x.shape[0]},) to match x, got {np.shape(mask)}")
    return jnp.asarray(mask, x.dtype)


def _class_statistics(x: Array, mask: ArrayLike | None = None) -> tuple[Array, Array, Array]:
    """``(n, xbar, S)``: the weighted count, mean and scatter ``sum_i w_i (x_i - xbar)(x_i - xbar)^T`` of ``x``
    (``xbar = 0`` when nothing is selected)."""
    w = _weights(x, mask)
    n = jnp.sum(w)
    xbar = (w @ x) / jnp.maximum(n, jnp.finfo(x.dtype).tiny)
    r = x - xbar
    return n, xbar, (w[:, None] * r).T @ r


def _posterior_from_statistics(prior: NIW, n: Array, xbar: Array, scatter: Array) -> NIW:
    """The conjugate update of :func:`niw_posterior` from :func:`_class_statistics` (no checks)."""
    kappa_n = prior.kappa + n
    delta = xbar - prior.mu
    psi = prior.psi + scatter + (prior.kappa * n / kappa_n) * jnp.outer(delta, delta)
    return NIW(prior.mu + (n / kappa_n) * delta, kappa_n, prior.nu + n, (psi + psi.T) / 2)


def _log_ml_from_statistics(prior: NIW, n: Array, xbar: Array, scatter: Array) -> Array:
    """:func:`niw_log_marginal_likelihood` from :func:`_class_statistics` (no checks)."""
    post = _posterior_from_statistics(prior, n, xbar, scatter)
    d = prior.mu.shape[0]
    mgl = jax.scipy.special.multigammaln
    return (-n * d / 2 * jnp.log(jnp.pi) + mgl(post.nu / 2, d) - mgl(prior.nu / 2, d)
            + prior.nu / 2 * _logdet(prior.psi) - post.nu / 2 * _logdet(post.psi)
            + d / 2 * (jnp.log(prior.kappa) - jnp.log(post.kappa)))


def niw_posterior(prior: NIW, x: ArrayLike, *, mask: ArrayLike | None = None) -> NIW:
    """The conjugate NIW posterior of one class from its points ``x`` (module docstring).

    Args:
      prior: the NIW prior.
      x: ``(n, d)`` features of the class.
      mask: ``(n,)`` 0/1 weights selecting the class's points (``None``: all of them); vmap over masks to
        update every class of an episode at once.

    Returns:
      The posterior ``NIW(mu_n, kappa_n, nu_n, Psi_n)``; the prior itself when the mask selects nothing.

    Example:
      >>> import jax.numpy as jnp
      >>> prior = NIW(jnp.zeros(2), 1.0, 3.0, jnp.eye(2))
      >>> post = niw_posterior(prior, jnp.array([[2.0, 0.0]]))
      >>> post.mu.tolist(), float(post.kappa), float(post.nu), post.psi.tolist()
      ([1.0, 0.0], 2.0, 4.0, [[3.0, 0.0], [0.0, 1.0]])
    """
    d = check_niw(prior)
    x = _check_points("x", x, d)
    return _posterior_from_statistics(prior, *_class_statistics(x, mask))


def _logdet(a: Array) -> Array:
    return 2 * jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(a))))


def niw_log_marginal_likelihood(prior: NIW, x: ArrayLike, *, mask: ArrayLike | None = None) -> Array:
    """``log p(D) = log int prod_i N(x_i; mu, Sigma) dNIW(mu, Sigma)`` of one class (module docstring).

    Args:
      prior: the NIW prior.
      x: ``(n, d)`` features.
      mask: ``(n,)`` 0/1 weights (``None``: all points).

    Example:
      >>> import jax.numpy as jnp
      >>> prior = NIW(jnp.zeros(1), 1.0, 2.0, jnp.eye(1))
      >>> round(float(niw_log_marginal_likelihood(prior, jnp.zeros((1, 1)))), 4)  # t_2(0; 0, 2) = 1/(2 sqrt 2)
      -1.0397
    """
    d = check_niw(prior)
    x = _check_points("x", x, d)
    return _log_ml_from_statistics(prior, *_class_statistics(x, mask))


def niw_predictive(posterior: NIW) -> NIWPredictive:
    """The Student-t predictive ``p(x | D)`` of a new point under the NIW ``posterior`` (or a prior).

    Example:
      >>> import jax.numpy as jnp
      >>> p = niw_predictive(NIW(jnp.zeros(2), 1.0, 4.0, jnp.eye(2)))
      >>> float(p.df), round(float(p.scale[0, 0]), 4)  # df = nu - d + 1; scale = Psi (kappa + 1) / (kappa df)
      (3.0, 0.6667)
    """
    d = check_niw(posterior, "posterior")
    df = posterior.nu - d + 1
    return NIWPredictive(posterior.mu, posterior.psi * ((posterior.kappa + 1) / (posterior.kappa * df)), df)


def _class_masks(labels: ArrayLike, n: int, num_classes: int, name: str) -> Array:
    check_ndim(name, labels, 1)
    if np.shape(labels)[0] != n:
        raise ValueError(f"{name} must have one label per row of the features ({n}), got {np.shape(labels)}")
    y = concrete_value(labels)
    if y is not None and y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name} must be in [0, {num_classes}), got values in [{y.min()}, {y.max()}]")
    return jnp.asarray(labels)[None, :] == jnp.arange(num_classes)[:, None]


def niw_few_shot_log_probs(prior: NIW, support_x: ArrayLike, support_labels: ArrayLike, query_x: ArrayLike, *,
                           num_classes: int, log_class_prior: ArrayLike | None = None) -> Array:
    """Class log-probabilities of query features given the support set of an episode.

    ``log p(y = c | x, D) = log softmax_c(log p(x | D_c) + log pi_c)`` with ``D_c`` the support points of class
    ``c`` and ``p(x | D_c)`` their NIW Student-t predictive; the class posteriors are one vmapped masked update.

    Args:
      prior: the shared NIW prior (e.g. from :func:`fit_niw_prior` on base classes).
      support_x: ``(n_s, d)`` support features.
      support_labels: ``(n_s,)`` integer labels in ``[0, num_classes)`` (any number of shots per class).
      query_x: ``(m, d)`` query features.
      num_classes: the number of ways (static).
      log_class_prior: ``(num_classes,)`` ``log pi_c`` (``None``: uniform).

    Returns:
      ``(m, num_classes)`` normalised log-probabilities.

    Example:
      >>> import jax.numpy as jnp
      >>> prior = NIW(jnp.zeros(2), 1.0, 4.0, jnp.eye(2))
      >>> support = jnp.array([[-3.0, 0.0], [3.0, 0.0]])
      >>> lp = niw_few_shot_log_probs(prior, support, jnp.array([0, 1]), jnp.array([[2.5, 0.5]]), num_classes=2)
      >>> lp.argmax(-1).tolist(), round(float(jnp.exp(lp).sum()), 6)
      ([1], 1.0)
    """
    d = check_niw(prior)
    num_classes = check_int_range("num_classes", num_classes, 1)
    support_x = _check_points("support_x", support_x, d)
    query_x = _check_points("query_x", query_x, d)
    masks = _class_masks(support_labels, support_x.shape[0], num_classes, "support_labels")
    if log_class_prior is None:
        log_class_prior = jnp.zeros(num_classes, support_x.dtype)
    elif np.shape(log_class_prior) != (num_classes,):
        raise ValueError(f"log_class_prior must have shape ({num_classes},), got {np.shape(log_class_prior)}")
    posts = jax.vmap(lambda m: niw_posterior(prior, support_x, mask=m))(masks)
    logits = jax.vmap(lambda p: niw_predictive(p).log_prob(query_x))(posts).T + jnp.asarray(log_class_prior)
    return jax.nn.log_softmax(logits, axis=-1)


def moment_matched_prior(x: ArrayLike, labels: ArrayLike, *, num_classes: int, nu_offset: float = 2.0) -> NIW:
    """A moment-matched NIW prior from labelled base-class features (the start of :func:`fit_niw_prior`).

    ``mu_0`` is the mean of the class means, ``E[Sigma] = Psi_0 / (nu_0 - d - 1)`` the count-weighted mean of the
    class covariances ``Sbar``, and ``kappa_0 = tr(Sbar) / tr(Cov of the class means)`` (from ``Cov[mu_c] =
    E[Sigma] / kappa_0``); ``nu_0 = d + 1 + nu_offset`` (a weak default). Every class needs at least one point.

    Example:
      >>> import jax.numpy as jnp
      >>> cross = jnp.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])  # mean 0, covariance I / 2
      >>> x = jnp.concatenate([cross, cross + jnp.array([2.0, 0.0])])
      >>> p = moment_matched_prior(x, jnp.repeat(jnp.arange(2), 4), num_classes=2)
      >>> p.mu.tolist(), float(p.kappa), float(p.nu), p.psi.tolist()
      ([1.0, 0.0], 1.0, 5.0, [[1.0, 0.0], [0.0, 1.0]])
    """
    x = jnp.asarray(x)
    check_ndim("x", x, 2)
    check_floating("x", x)
    num_classes = check_int_range("num_classes", num_classes, 1)
    check_positive("nu_offset", nu_offset)
    d = x.shape[1]
    masks = _class_masks(labels, x.shape[0], num_classes, "labels")
    counts, means, scatters = jax.vmap(lambda m: _class_statistics(x, m))(masks)
    sbar = scatters.sum(0) / counts.sum()
    spread = jnp.trace(jnp.cov(means.T, bias=True).reshape(d, d))
    kappa = jnp.trace(sbar) / jnp.maximum(spread, jnp.finfo(x.dtype).tiny)
    nu = jnp.asarray(d + 1 + nu_offset, x.dtype)
    return NIW(jnp.mean(means, axis=0), kappa, nu, sbar * nu_offset)


def fit_niw_prior(x: ArrayLike, labels: ArrayLike, *, num_classes: int, init: NIW | None = None,
                  tol: float = 1e-6, max_iterations: int = 500) -> NIWFit:
    """Empirical Bayes: the NIW prior maximising ``sum_c log p(D_c)`` over labelled base-class features.

    Type-II maximum likelihood with L-BFGS (:func:`jaxbayes.vi.find_map`) over the unconstrained ``mu_0``,
    ``log kappa_0``, ``log(nu_0 - d + 1)`` and the Cholesky factor of ``Psi_0`` (log diagonal), started from
    :func:`moment_matched_prior` (or ``init``). The objective is divided by the number of points, so ``tol``
    is a per-point gradient norm. In float32 L-BFGS can stall at the objective's round-off floor above ``tol``
    (``converged`` is then ``False`` although the prior is optimal to round-off); enable x64 for tight fits.

    Args:
      x: ``(N, d)`` base-class features.
      labels: ``(N,)`` integer labels in ``[0, num_classes)``; every class needs at least one point.
      num_classes: number of base classes (static).
      init: starting prior (``None``: the moment match).
      tol, max_iterations: the stopping rule of :func:`jaxbayes.vi.find_map`.

    When the class covariances agree more closely than an inverse Wishart of any finite ``nu_0`` predicts, the
    maximum lies at ``nu_0 -> infinity`` (one shared, known covariance): ``nu_0`` then grows until
    ``max_iterations`` and ``converged`` may stay ``False``.

    Example:
      >>> import functools, jax, jax.numpy as jnp
      >>> labels = jnp.repeat(jnp.arange(6), 40)
      >>> x = jax.random.normal(jax.random.key(0), (240, 2)) * (1.0 + labels[:, None] % 3) + labels[:, None]
      >>> fit = jax.jit(functools.partial(fit_niw_prior, num_classes=6, tol=1e-4))(x, labels)
      >>> bool(fit.converged), round(float(fit.prior.nu))
      (True, 5)
    """
    x = jnp.asarray(x)
    check_ndim("x", x, 2)
    check_floating("x", x)
    num_classes = check_int_range("num_classes", num_classes, 1)
    d = x.shape[1]
    if init is not None:
        check_niw(init, "init")
    masks = _class_masks(labels, x.shape[0], num_classes, "labels")
    start = moment_matched_prior(x, labels, num_classes=num_classes) if init is None else init
    # sufficient statistics once: each objective evaluation is then O(C d^3), not O(C N d^2)
    stats = jax.vmap(lambda m: _class_statistics(x, m))(masks)

    def to_prior(theta):
        mu, log_kappa, log_df, chol = theta
        chol = jnp.tril(chol, -1) + jnp.diag(jnp.exp(jnp.diagonal(chol)))
        return NIW(mu, jnp.exp(log_kappa), d - 1 + jnp.exp(log_df), chol @ chol.T)

    def total(prior):
        return jnp.sum(jax.vmap(lambda *s: _log_ml_from_statistics(prior, *s))(*stats))

    c = jnp.linalg.cholesky(start.psi)
    theta0 = (jnp.asarray(start.mu, x.dtype), jnp.log(jnp.asarray(start.kappa, x.dtype)),
              jnp.log(jnp.asarray(start.nu, x.dtype) - d + 1), jnp.tril(c, -1) + jnp.diag(jnp.log(jnp.diagonal(c))))
    r = find_map(lambda t: -total(to_prior(t)) / x.shape[0], theta0, tol=tol, max_iterations=max_iterations)
    prior = to_prior(r.params)
    return NIWFit(prior, total(prior), r.converged, r.n_iters, r.error)


__all__ = [
    "NIW",
    "NIWFit",
    "NIWPredictive",
    "fit_niw_prior",
    "moment_matched_prior",
    "niw_few_shot_log_probs",
    "niw_log_marginal_likelihood",
    "niw_posterior",
    "niw_predictive",
]
