"""GP and Student-t hyper-parameters on a fixed Gram matrix from one eigendecomposition, and class probabilities.

With ``K = U diag(s) U^T``, ``Z = U^T Y`` (``n x C`` targets, ``q_i = sum_k Z_ik^2``) and ``lambda_i = s_i + r``:

* GP with covariance ``c (K + r I)`` on each of the ``C`` columns:
  ``log p(Y) = -1/2 [sum_i q_i / (c lambda_i) + nC log c + C sum_i log lambda_i + nC log 2 pi]``; the scale has the
  closed-form optimum ``c*(r) = sum_i q_i / lambda_i / (nC)``, leaving a 1-D search over the noise ratio ``r``.
* Student-t process (the last-layer variance ``sigma^2 ~ InvGamma(alpha, beta)`` shared by all columns; Lee et
  al., 2022): with ``N = nC`` and ``Q = sum_i q_i / lambda_i``,
  ``log p(Y) = lgamma(alpha + N/2) - lgamma(alpha) - N/2 log(2 pi beta) - C/2 sum_i log lambda_i
  - (alpha + N/2) log(1 + Q / (2 beta))``; ``beta*(alpha, r) = alpha Q / N`` in closed form, leaving ``(alpha, r)``.

Each evaluation is ``O(n)``, so the searches (a log grid, then golden-section refinement) are exact to the grid's
refinement at no cost next to the ``O(n^3)`` eigendecomposition. The searches are in numpy float64 on the host:
they run once, at the end of a job, on a matrix that is already on the host.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.special import log_ndtr  # scipy comes with jax

_GOLDEN = (math.sqrt(5) - 1) / 2


class Fit(NamedTuple):
    """Fitted hyper-parameters: ``noise_ratio`` ``r``; GP ``scale`` ``c``; Student-t ``alpha``, ``beta`` (``0`` for the
    GP); and the log marginal likelihood per target entry."""

    noise_ratio: float
    scale: float
    alpha: float
    beta: float
    log_marginal_likelihood_per_entry: float


def _golden(f, lo: float, hi: float, iterations: int = 60) -> float:
    """The maximiser of a unimodal ``f`` on ``[lo, hi]``."""
    a, b = lo, hi
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iterations):
        if fc > fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = f(d)
    return (a + b) / 2


def _bracket_max(f, grid: np.ndarray) -> float:
    values = np.array([f(g) for g in grid])
    best = int(np.argmax(values))
    return _golden(f, grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)])


def gp_lml(eig: np.ndarray, q: np.ndarray, num_outputs: int, scale: float, ratio: float) -> float:
    """``log p(Y)`` of the GP ``c (K + r I)`` from the eigenvalues ``eig`` and ``q = rowsum((U^T Y)^2)``."""
    lam = eig + ratio
    n = eig.shape[0] * num_outputs
    return float(-0.5 * (np.sum(q / lam) / scale + n * math.log(scale) + num_outputs * np.sum(np.log(lam))
                         + n * math.log(2 * math.pi)))


def student_t_lml(eig: np.ndarray, q: np.ndarray, num_outputs: int, alpha: float, beta: float, ratio: float) -> float:
    """``log p(Y)`` of the Student-t process with ``sigma^2 ~ InvGamma(alpha, beta)`` and covariance
    ``sigma^2 (K + r I)``."""
    lam = eig + ratio
    n = eig.shape[0] * num_outputs
    quad = float(np.sum(q / lam))
    return (math.lgamma(alpha + n / 2) - math.lgamma(alpha) - n / 2 * math.log(2 * math.pi * beta)
            - num_outputs / 2 * float(np.sum(np.log(lam))) - (alpha + n / 2) * math.log1p(quad / (2 * beta)))


def _ratio_grid(eig: np.ndarray) -> np.ndarray:
    # the noise ratio is relative to the kernel's scale, the mean eigenvalue (trace / n)
    return np.log(max(float(np.mean(eig)), 1e-300)) + np.linspace(np.log(1e-7), np.log(1e2), 91)


def fit_gp(eig: np.ndarray, q: np.ndarray, num_outputs: int) -> Fit:
    """Maximise the GP marginal likelihood over ``(c, r)`` (``c`` profiled out in closed form)."""
    n = eig.shape[0] * num_outputs

    def scale(log_r):
        return float(np.sum(q / (eig + math.exp(log_r)))) / n

    def profile(log_r):
        return gp_lml(eig, q, num_outputs, scale(log_r), math.exp(log_r))

    log_r = _bracket_max(profile, _ratio_grid(eig))
    return Fit(math.exp(log_r), scale(log_r), 0.0, 0.0, profile(log_r) / n)


def fit_student_t(eig: np.ndarray, q: np.ndarray, num_outputs: int) -> Fit:
    """Maximise the Student-t marginal likelihood over ``(alpha, beta, r)`` (``beta`` profiled out), by
    alternating golden-section searches in ``log alpha`` and ``log r`` from the best point of a grid."""
    n = eig.shape[0] * num_outputs

    def beta(log_a, log_r):
        return math.exp(log_a) * float(np.sum(q / (eig + math.exp(log_r)))) / n

    def profile(log_a, log_r):
        return student_t_lml(eig, q, num_outputs, math.exp(log_a), beta(log_a, log_r), math.exp(log_r))

    alphas, ratios = np.log(np.geomspace(0.05, 1e8, 61)), _ratio_grid(eig)  # large alpha: the GP limit
    values = np.array([[profile(a, r) for r in ratios] for a in alphas])
    ia, ir = np.unravel_index(int(np.argmax(values)), values.shape)
    log_a, log_r = alphas[ia], ratios[ir]
    da, dr = alphas[1] - alphas[0], ratios[1] - ratios[0]
    for _ in range(4):
        log_r = _golden(lambda r: profile(log_a, r), log_r - dr, log_r + dr)
        log_a = _golden(lambda a: profile(a, log_r), max(log_a - da, alphas[0]), min(log_a + da, alphas[-1]))
    return Fit(math.exp(log_r), 0.0, math.exp(log_a), beta(log_a, log_r), profile(log_a, log_r) / n)


def class_probabilities(mean: np.ndarray, sd: np.ndarray, scale_draws: np.ndarray | None = None,
                        nodes: int = 48) -> np.ndarray:
    """``P(argmax_k f_k = c)`` for independent ``f_k ~ N(mean_k, sd^2)`` sharing one ``sd`` per point.

    ``P(c) = E_u[prod_{k != c} Phi((mean_c - mean_k) / sd + u)]``, ``u ~ N(0, 1)``, by Gauss-Hermite quadrature
    with ``nodes`` points. ``scale_draws`` (Student-t: draws of ``sigma / E-scale``, the shared scale of every
    class) averages that over ``sd * draw``.
    """
    u, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / w.sum()
    draws = np.ones(1) if scale_draws is None else np.asarray(scale_draws)
    num_classes = mean.shape[1]
    probs = np.zeros_like(mean, dtype=np.float64)
    for s in draws:
        z = (mean[:, :, None] - mean[:, None, :]) / (s * sd)[:, None, None]  # (t, c, k) standardised gaps
        log_phi = log_ndtr(z[..., None] + u)  # (t, c, k, nodes): log Phi, accurate in the lower tail
        own = np.eye(num_classes, dtype=bool)[None, :, :, None]
        total = np.sum(np.where(own, 0.0, log_phi), axis=2)  # (t, c, nodes)
        probs += np.exp(total) @ w
    probs /= len(draws)
    return probs / probs.sum(axis=1, keepdims=True)


__all__ = ["Fit", "class_probabilities", "fit_gp", "fit_student_t", "gp_lml", "student_t_lml"]
