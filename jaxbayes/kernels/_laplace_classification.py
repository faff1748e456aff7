"""GP classification by Laplace approximation, and its scale mixtures (Student-t process classifiers).

Binary classification (:func:`student_t_classify`): for each of ``num_scales`` draws ``sigma_i^2`` from the
inverse-gamma prior, a Laplace approximation of the logistic-likelihood GP with kernel ``sigma_i^2 K``
(Rasmussen & Williams, 2006, Alg. 3.1/3.2, a fixed number of Newton steps) gives an approximate evidence
``q(y | sigma_i^2)`` and predictive probabilities (probit approximation of the logistic-Gaussian integral);
the draws are then importance-weighted by the evidence. Multi-class classification
(:func:`student_t_classify_multiclass`) does the same with the softmax-likelihood Laplace approximation of
:func:`laplace_multiclass` (Rasmussen & Williams, Alg. 3.3/3.4) and Monte-Carlo predictive probabilities;
the deep kernel machine's categorical likelihood (:mod:`jaxbayes.kernels._dkm`) is the alternative.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_int_range, check_positive
from jaxbayes.kernels._common import (
    check_alpha_beta,
    check_square_matrix,
    inverse_gamma_scales,
    normalised_weights,
)
from jaxbayes.typing import Array, ArrayLike, PRNGKey


class StudentTClassification(NamedTuple):
    """Scale-mixture Laplace classifier output.

    Attributes:
      probs: ``(m,)`` predictive probabilities of class 1.
      scales: the prior draws of ``sigma^2``.
      log_weights: normalised log weights (Laplace evidence).
      ess: effective sample size of the weights.
      log_evidence: per-draw Laplace log evidence ``log q(y | sigma_i^2)``.
    """

    probs: Array
    scales: Array
    log_weights: Array
    ess: Array
    log_evidence: Array


def laplace_binary(k_train_train: ArrayLike, y_train: ArrayLike, k_test_train: ArrayLike, k_test_diag: ArrayLike,
                   *, num_newton: int = 30, jitter: float = 1e-8) -> tuple[Array, Array, Array]:
    """Laplace approximation of GP binary classification with a logistic likelihood (R&W Alg. 3.1, 3.2).

    Args:
      k_train_train: ``(n, n)`` prior covariance.
      y_train: ``(n,)`` labels in ``{0, 1}``.
      k_test_train: ``(m, n)``; k_test_diag: ``(m,)`` prior variances of the test points.
      num_newton: Newton steps (``lax.scan``; the mode is typically reached in < 10).
      jitter: added to ``B = I + W^1/2 K W^1/2`` relative to its mean diagonal.

    Returns:
      ``(probs, log_evidence, mode)``: test probabilities of class 1, the Laplace log evidence and the
      posterior mode ``f_hat`` at the training points (which satisfies ``f = K (y - sigmoid(f))``).
    """
    k = check_square_matrix("k_train_train", k_train_train)
    y = jnp.asarray(y_train, k.dtype)
    if y.shape != (k.shape[0],):
        raise ValueError(f"y_train must have shape ({k.shape[0]},) with labels in {{0, 1}}, got {y.shape}")
    eye = jnp.eye(k.shape[0], dtype=k.dtype)

    def parts(f):
        pi = jax.nn.sigmoid(f)
        w = pi * (1 - pi)
        sw = jnp.sqrt(w)
        b = eye + sw[:, None] * k * sw[None, :]
        lb = jnp.linalg.cholesky(b + jitter * eye)
        return pi, w, sw, lb

    def newton(f, _):
        pi, w, sw, lb = parts(f)
        bvec = w * f + (y - pi)
        t = jax.scipy.linalg.cho_solve((lb, True), sw * (k @ bvec))
        a = bvec - sw * t
        return k @ a, None

    f, _ = jax.lax.scan(newton, jnp.zeros_like(y), length=check_int_range("num_newton", num_newton, 1))
    pi, w, sw, lb = parts(f)
    a = y - pi  # at the mode, f = K a
    loglik = jnp.sum(y * f - jnp.logaddexp(0.0, f))
    log_evidence = -0.5 * jnp.dot(a, f) + loglik - jnp.sum(jnp.log(jnp.diagonal(lb)))
    kx = jnp.asarray(k_test_train)
    mean = kx @ a
    v = jax.scipy.linalg.solve_triangular(lb, sw[:, None] * kx.T, lower=True)
    var = jnp.maximum(jnp.asarray(k_test_diag) - jnp.sum(v * v, 0), 0.0)
    probs = jax.nn.sigmoid(mean / jnp.sqrt(1 + jnp.pi * var / 8))
    return probs, log_evidence, f


class LaplaceMulticlass(NamedTuple):
    """Laplace approximation of a multi-class GP classifier (softmax likelihood, independent latent functions).

    Attributes:
      mean: ``(m, C)`` predictive means of the latent functions at the test points.
      cov: ``(m, C, C)`` predictive covariances between the classes' latents at each test point.
      log_evidence: the Laplace approximation of ``log p(y)``.
      mode: ``(n, C)`` posterior mode ``f_hat`` at the training points (``f_hat = K (y - softmax(f_hat))``).
    """

    mean: Array
    cov: Array
    log_evidence: Array
    mode: Array


def _onehot_labels(y_train: ArrayLike, n: int, num_classes: int, dtype) -> Array:
    y = jnp.asarray(y_train)
    if y.shape != (n,) or not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(f"y_train must be ({n},) integer labels in [0, num_classes), got {y.shape} {y.dtype}")
    return jax.nn.one_hot(y, num_classes, dtype=dtype)


def laplace_multiclass(k_train_train: ArrayLike, y_train: ArrayLike, k_test_train: ArrayLike,
                       k_test_diag: ArrayLike, *, num_classes: int, num_newton: int = 30,
                       jitter: float = 1e-8) -> LaplaceMulticlass:
    """Laplace approximation of multi-class GP classification (Rasmussen & Williams, 2006, Alg. 3.3, 3.4).

    ``C`` independent latent functions share the prior covariance ``K``; ``p(y_i = c | f_i) = softmax(f_i)_c``.
    Newton's method uses the block structure of the Hessian ``W = D - Pi Pi^T`` (``D = diag(pi)``): per class
    ``B_c = I + D_c^1/2 K D_c^1/2 = L_c L_c^T`` and ``E_c = D_c^1/2 B_c^-1 D_c^1/2``, and
    ``sum_c E_c = M M^T``, so each step costs ``C + 1`` Cholesky factorisations of ``(n, n)`` matrices.
    The log evidence is ``-1/2 a^T f + y^T f - sum_i log sum_c exp f_ic - 1/2 log|I + K W|`` with
    ``log|I + K W| = 2 sum_c log|L_c| + 2 log|M|`` (determinant lemma, using ``sum_c D_c = I``). The predictive
    latent ``f_*`` is Gaussian with mean ``k_*^T (y_c - pi_c)`` and covariance
    ``delta_cc' (k_** - k_*^T E_c k_*) + (E_c k_*)^T (M M^T)^-1 (E_c' k_*)``.

    Args:
      k_train_train: ``(n, n)`` prior covariance (shared by the classes).
      y_train: ``(n,)`` integer labels in ``[0, num_classes)``.
      k_test_train: ``(m, n)``; k_test_diag: ``(m,)`` prior variances of the test points.
      num_classes: ``C >= 2``.
      num_newton: Newton steps (``lax.scan``).
      jitter: added to ``B_c`` and ``M M^T`` relative to their mean diagonal.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.linspace(-2, 2, 9)[:, None]; y = jnp.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
      >>> k = jnp.exp(-0.5 * (x - x.T) ** 2)
      >>> out = laplace_multiclass(k, y, k[:1], jnp.ones(1), num_classes=3)
      >>> int(jnp.argmax(out.mean[0]))
      0
    """
    k = check_square_matrix("k_train_train", k_train_train)
    num_classes = check_int_range("num_classes", num_classes, 2)
    n = k.shape[0]
    y = _onehot_labels(y_train, n, num_classes, k.dtype)
    kx = jnp.asarray(k_test_train, k.dtype)
    kd = jnp.asarray(k_test_diag, k.dtype)
    if kx.ndim != 2 or kx.shape[1] != n:
        raise ValueError(f"k_test_train must have shape (m, {n}), got {kx.shape}")
    if kd.shape != (kx.shape[0],):
        raise ValueError(f"k_test_diag must have shape ({kx.shape[0]},), got {kd.shape}")
    check_positive("jitter", jitter, strict=False)
    eye = jnp.eye(n, dtype=k.dtype)

    def chol(a):
        return jnp.linalg.cholesky(a + jitter * jnp.mean(jnp.diagonal(a, axis1=-2, axis2=-1), -1)[..., None, None]
                                   * eye)

    def parts(f):
        pi = jax.nn.softmax(f, axis=1)  # (n, C)
        sd = jnp.sqrt(pi).T  # (C, n)
        lc = chol(eye + sd[:, :, None] * k * sd[:, None, :])  # (C, n, n)
        # E_c = D^1/2 B_c^-1 D^1/2
        e = sd[:, :, None] * jax.vmap(lambda lo, d: jax.scipy.linalg.cho_solve((lo, True), jnp.diag(d)))(lc, sd)
        m = chol(jnp.sum(e, 0))
        return pi, lc, e, m

    def newton(f, _):
        pi, lc, e, m = parts(f)
        b = pi * f - pi * jnp.sum(pi * f, 1, keepdims=True) + y - pi  # (D - Pi Pi^T) f + y - pi
        c = jnp.einsum("cij,jc->ic", e, k @ b)  # E K b
        u = jax.scipy.linalg.cho_solve((m, True), jnp.sum(c, 1))  # (M M^T)^-1 R^T c
        a = b - c + jnp.einsum("cij,j->ic", e, u)
        return k @ a, None

    f, _ = jax.lax.scan(newton, jnp.zeros_like(y), length=check_int_range("num_newton", num_newton, 1))
    pi, lc, e, m = parts(f)
    a = y - pi  # at the mode f = K a
    log_lik = jnp.sum(y * f) - jnp.sum(jax.scipy.special.logsumexp(f, axis=1))
    half_logdet = (jnp.sum(jnp.log(jnp.diagonal(lc, axis1=1, axis2=2)))
                   + jnp.sum(jnp.log(jnp.diagonal(m))))
    log_evidence = -0.5 * jnp.sum(a * f) + log_lik - half_logdet
    mean = kx @ a  # (m, C)
    eb = jnp.einsum("cij,mj->cim", e, kx)  # E_c k_*: (C, n, m)
    g = jax.vmap(lambda v: jax.scipy.linalg.solve_triangular(m, v, lower=True))(eb)  # M^-1 E_c k_*
    cov = jnp.einsum("cim,dim->mcd", g, g)
    own = kd[:, None] - jnp.einsum("mi,cim->mc", kx, eb)  # k_** - k_*^T E_c k_*
    cov = cov + own[:, :, None] * jnp.eye(num_classes, dtype=k.dtype)
    return LaplaceMulticlass(mean, cov, log_evidence, f)


def _softmax_probs(key: PRNGKey, mean: Array, cov: Array, num_mc: int) -> Array:
    """``E[softmax(f)]`` for ``f ~ N(mean, cov)`` per test point, by Monte Carlo with ``num_mc`` draws."""
    num_classes = mean.shape[-1]
    lo = jnp.linalg.cholesky(cov + 1e-12 * jnp.eye(num_classes, dtype=cov.dtype))
    z = jax.random.normal(key, (num_mc, *mean.shape), mean.dtype)
    draws = mean + jnp.einsum("mcd,smd->smc", lo, z)
    return jnp.mean(jax.nn.softmax(draws, axis=-1), 0)


def student_t_classify_multiclass(key: PRNGKey, k_train_train: ArrayLike, y_train: ArrayLike,
                                  k_test_train: ArrayLike, k_test_diag: ArrayLike, *, num_classes: int,
                                  alpha: ArrayLike, beta: ArrayLike, num_scales: int = 32, num_newton: int = 30,
                                  num_mc: int = 256) -> StudentTClassification:
    """Multi-class classification with a scale mixture of NNGPs: :func:`laplace_multiclass` per prior draw of
    ``sigma^2 ~ InvGamma(alpha, beta)``, importance-weighted by the Laplace evidence; each draw's predictive
    probabilities ``E[softmax(f_*)]`` are estimated with ``num_mc`` Gaussian draws.

    Returns a :class:`StudentTClassification` whose ``probs`` are ``(m, num_classes)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.linspace(-2, 2, 9)[:, None]; y = jnp.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
      >>> k = jnp.exp(-0.5 * (x - x.T) ** 2)
      >>> out = student_t_classify_multiclass(jax.random.key(0), k, y, k[-1:], jnp.ones(1), num_classes=3,
      ...                                     alpha=2.0, beta=2.0, num_scales=4)
      >>> int(jnp.argmax(out.probs[0]))
      2
    """
    check_alpha_beta(alpha, beta)
    num_scales = check_int_range("num_scales", num_scales, 1)
    num_mc = check_int_range("num_mc", num_mc, 1)
    k = check_square_matrix("k_train_train", k_train_train)
    key_scale, key_mc = jax.random.split(key)
    scales = inverse_gamma_scales(key_scale, alpha, beta, num_scales, k.dtype)
    kx = jnp.asarray(k_test_train)
    kd = jnp.asarray(k_test_diag)

    def one(args):
        i, s2 = args
        out = laplace_multiclass(s2 * k, y_train, s2 * kx, s2 * kd, num_classes=num_classes,
                                 num_newton=num_newton)
        return _softmax_probs(jax.random.fold_in(key_mc, i), out.mean, out.cov, num_mc), out.log_evidence

    probs, evidence = jax.lax.map(one, (jnp.arange(num_scales), scales))
    logw, w, ess = normalised_weights(evidence)
    return StudentTClassification(jnp.einsum("s,smc->mc", w, probs), scales, logw, ess, evidence)


def student_t_classify(key: PRNGKey, k_train_train: ArrayLike, y_train: ArrayLike, k_test_train: ArrayLike,
                       k_test_diag: ArrayLike, *, alpha: ArrayLike, beta: ArrayLike, num_scales: int = 32,
                       num_newton: int = 30) -> StudentTClassification:
    """Binary classification with a scale mixture of NNGPs (module docstring): Laplace per prior draw of
    ``sigma^2 ~ InvGamma(alpha, beta)``, importance-weighted by the Laplace evidence.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.linspace(-2, 2, 8)[:, None]; y = (x[:, 0] > 0).astype(jnp.int32)
      >>> k = jnp.exp(-0.5 * (x - x.T) ** 2)
      >>> out = student_t_classify(jax.random.key(0), k, y, k[:2], jnp.ones(2), alpha=2.0, beta=2.0)
      >>> bool(out.probs[0] < 0.5)
      True
    """
    check_alpha_beta(alpha, beta)
    num_scales = check_int_range("num_scales", num_scales, 1)
    k = check_square_matrix("k_train_train", k_train_train)
    scales = inverse_gamma_scales(key, alpha, beta, num_scales, k.dtype)
    kx = jnp.asarray(k_test_train)
    kd = jnp.asarray(k_test_diag)

    def one(s2):
        p, ev, _ = laplace_binary(s2 * k, y_train, s2 * kx, s2 * kd, num_newton=num_newton)
        return p, ev

    probs, evidence = jax.lax.map(one, scales)
    logw, w, ess = normalised_weights(evidence)
    return StudentTClassification(w @ probs, scales, logw, ess, evidence)


__all__ = [
    "LaplaceMulticlass", "StudentTClassification", "laplace_binary", "laplace_multiclass", "student_t_classify",
    "student_t_classify_multiclass",
]
