"""Metrics for probabilistic classifiers: accuracy, NLL, ECE, Brier score, reliability diagrams, OOD AUROC.

All functions take predictive class probabilities ``probs`` of shape ``(n, C)`` (rows sum to one) and integer
``labels`` of shape ``(n,)``, are pure ``jnp`` code and work under ``jit``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxbayes._checks import check_int_range, check_ndim, concrete_value
from jaxbayes.typing import Array, ArrayLike


def _check(probs: ArrayLike, labels: ArrayLike) -> tuple[Array, Array]:
    check_ndim("probs", probs, 2)
    check_ndim("labels", labels, 1)
    if probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs and labels must have the same length, got {probs.shape[0]} and {labels.shape[0]}")
    _check_values(probs, labels)
    return jnp.asarray(probs), jnp.asarray(labels, jnp.int32)


def _check_values(probs: ArrayLike, labels: ArrayLike) -> None:
    """Concrete inputs only (skipped under ``jit``): probabilities in [0, 1] whose rows sum to one (to 1e-3,
    float32 softmax rounding is ~1e-6 per class), integer labels in ``[0, C)``."""
    p, y = concrete_value(probs), concrete_value(labels)
    if p is not None:
        if not np.all(np.isfinite(p)) or np.any(p < 0) or np.any(p > 1):
            raise ValueError("probs must be probabilities in [0, 1]; found entries outside (or NaN)")
        sums = p.sum(-1)
        if sums.size and np.max(np.abs(sums - 1)) > 1e-3:
            i = int(np.argmax(np.abs(sums - 1)))
            raise ValueError(f"probs rows must sum to one (predictive probabilities, not logits); row {i} sums "
                             f"to {sums[i]:.6g}")
    if y is not None:
        if y.dtype.kind not in "iu" and not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("labels must be integer class indices")
        num_classes = np.shape(probs)[1]
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"labels must be in [0, {num_classes}) for probs with {num_classes} classes, got "
                             f"values in [{y.min()}, {y.max()}]")


def accuracy(probs: ArrayLike, labels: ArrayLike) -> Array:
    """Fraction of examples whose most probable class is the label.

    Example:
      >>> import jax.numpy as jnp
      >>> float(accuracy(jnp.array([[0.9, 0.1], [0.4, 0.6]]), jnp.array([0, 0])))
      0.5
    """
    p, y = _check(probs, labels)
    return jnp.mean(jnp.argmax(p, axis=-1) == y)


def nll(probs: ArrayLike, labels: ArrayLike, *, eps: float = 1e-12) -> Array:
    """Mean negative log predictive probability of the labels, ``-mean_n log p_n[y_n]`` (clipped at ``eps``)."""
    p, y = _check(probs, labels)
    return -jnp.mean(jnp.log(jnp.clip(jnp.take_along_axis(p, y[:, None], axis=1)[:, 0], eps, 1.0)))


def brier(probs: ArrayLike, labels: ArrayLike) -> Array:
    """Brier score ``mean_n sum_c (p_nc - [y_n = c])^2`` (0 is perfect, 2 is worst)."""
    p, y = _check(probs, labels)
    onehot = (y[:, None] == jnp.arange(p.shape[1])).astype(p.dtype)
    return jnp.mean(jnp.sum((p - onehot) ** 2, axis=1))


class ReliabilityDiagram(NamedTuple):
    """Per-bin statistics of top-class confidence.

    Attributes:
      edges: ``(num_bins + 1,)`` bin edges on ``[0, 1]``.
      confidence: mean confidence in each bin (0 for empty bins).
      accuracy: accuracy in each bin (0 for empty bins).
      count: number of examples in each bin.
    """

    edges: Array
    confidence: Array
    accuracy: Array
    count: Array


def reliability_diagram(probs: ArrayLike, labels: ArrayLike, *, num_bins: int = 15) -> ReliabilityDiagram:
    """Bin examples by top-class confidence into ``num_bins`` equal-width bins ``(lo, hi]`` on ``[0, 1]``."""
    num_bins = check_int_range("num_bins", num_bins, 1)
    p, y = _check(probs, labels)
    conf = jnp.max(p, axis=1)
    correct = (jnp.argmax(p, axis=1) == y).astype(p.dtype)
    edges = jnp.linspace(0.0, 1.0, num_bins + 1, dtype=p.dtype)
    idx = jnp.clip(jnp.ceil(conf * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1)
    count = jnp.zeros(num_bins, p.dtype).at[idx].add(1.0)
    conf_sum = jnp.zeros(num_bins, p.dtype).at[idx].add(conf)
    acc_sum = jnp.zeros(num_bins, p.dtype).at[idx].add(correct)
    safe = jnp.maximum(count, 1.0)
    return ReliabilityDiagram(edges, conf_sum / safe, acc_sum / safe, count)


def ece(probs: ArrayLike, labels: ArrayLike, *, num_bins: int = 15) -> Array:
    """Expected calibration error ``sum_b (n_b / n) |acc_b - conf_b|`` over ``num_bins`` confidence bins.

    Guo et al. (2017), "On Calibration of Modern Neural Networks".

    Example:
      >>> import jax.numpy as jnp
      >>> p = jnp.array([[0.8, 0.2]] * 5)          # 80% confident, right 4 times out of 5
      >>> round(float(ece(p, jnp.array([0, 0, 0, 0, 1]))), 6)
      0.0
    """
    d = reliability_diagram(probs, labels, num_bins=num_bins)
    n = jnp.sum(d.count)
    return jnp.sum(d.count / n * jnp.abs(d.accuracy - d.confidence))


def predictive_entropy(probs: ArrayLike) -> Array:
    """Entropy ``-sum_c p_c log p_c`` of each row of ``probs`` (an OOD / uncertainty score)."""
    p = jnp.asarray(probs)
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)


def auroc(scores_negative: ArrayLike, scores_positive: ArrayLike) -> Array:
    """Area under the ROC curve: ``P(s_pos > s_neg) + 0.5 P(s_pos = s_neg)`` (Mann-Whitney U / (n_pos n_neg)).

    Example:
      >>> import jax.numpy as jnp
      >>> float(auroc(jnp.array([0.1, 0.4]), jnp.array([0.35, 0.8])))
      0.75
    """
    check_ndim("scores_negative", scores_negative, 1)
    check_ndim("scores_positive", scores_positive, 1)
    neg = jnp.asarray(scores_negative)
    pos = jnp.asarray(scores_positive)
    allv = jnp.sort(jnp.concatenate([neg, pos]))
    lo = jnp.searchsorted(allv, pos, side="left")
    hi = jnp.searchsorted(allv, pos, side="right")
    ranks = lo + (hi - lo + 1) / 2.0  # average 1-based rank, ties shared
    n_pos, n_neg = pos.shape[0], neg.shape[0]
    return (jnp.sum(ranks) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def ood_auroc(probs_in: ArrayLike, probs_out: ArrayLike) -> Array:
    """AUROC of predictive entropy for telling out-of-distribution inputs (positives) from in-distribution ones."""
    return auroc(predictive_entropy(probs_in), predictive_entropy(probs_out))


__all__ = [
    "ReliabilityDiagram",
    "accuracy",
    "auroc",
    "brier",
    "ece",
    "nll",
    "ood_auroc",
    "predictive_entropy",
    "reliability_diagram",
]
