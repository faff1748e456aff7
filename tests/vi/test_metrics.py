"""Classifier metrics on hand-made inputs, against hand-computed values and scikit-learn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sklearn.metrics

from jaxbayes.vi import metrics


def test_ece_zero_for_perfectly_calibrated_bins_and_hand_value():
    # bin (0.6, 0.667]: confidence 0.65, right 13/20 times; bin (0.933, 1]: 0.95, right 19/20 times
    p1 = np.tile([0.65, 0.35], (20, 1))
    p2 = np.tile([0.05, 0.95], (20, 1))
    y1 = np.array([0] * 13 + [1] * 7)
    y2 = np.array([1] * 19 + [0])
    probs, labels = np.concatenate([p1, p2]), np.concatenate([y1, y2])
    assert float(metrics.ece(probs, labels)) == pytest.approx(0.0, abs=1e-6)
    # all right at confidence 0.65 -> |1 - 0.65| in half of the data
    labels_bad = np.concatenate([np.zeros(20, int), y2])
    assert float(metrics.ece(probs, labels_bad)) == pytest.approx(0.5 * 0.35, abs=1e-6)
    d = metrics.reliability_diagram(probs, labels, num_bins=15)
    assert d.count.sum() == 40 and d.count[9] == 20 and d.count[14] == 20
    np.testing.assert_allclose(d.accuracy[9], 0.65, atol=1e-6)


def test_accuracy_nll_brier_hand_values():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25]])
    labels = np.array([0, 1, 1])
    assert float(metrics.accuracy(probs, labels)) == pytest.approx(2 / 3)
    assert float(metrics.nll(probs, labels)) == pytest.approx(-np.mean(np.log([0.7, 0.3, 0.5])), rel=1e-6)
    brier = np.mean([0.3**2 + 0.2**2 + 0.1**2, 0.1**2 + 0.7**2 + 0.6**2, 0.25**2 + 0.5**2 + 0.25**2])
    assert float(metrics.brier(probs, labels)) == pytest.approx(brier, rel=1e-6)
    np.testing.assert_allclose(metrics.predictive_entropy(np.array([[0.5, 0.5], [1.0, 0.0]])), [np.log(2), 0.0],
                               rtol=1e-6)
    # three examples in three bins (confidences 0.7 right, 0.6 wrong, 0.5 right): (0.3 + 0.6 + 0.5) / 3
    assert float(jax.jit(metrics.ece)(probs, labels)) == pytest.approx(1.4 / 3, rel=1e-6)


def test_auroc_matches_sklearn_with_ties(key):
    k1, k2 = jax.random.split(key)
    neg = np.round(np.asarray(jax.random.normal(k1, (300,))), 1)  # rounding makes ties
    pos = np.round(np.asarray(jax.random.normal(k2, (200,))) + 0.7, 1)
    ref = sklearn.metrics.roc_auc_score(np.r_[np.zeros(300), np.ones(200)], np.r_[neg, pos])
    assert float(metrics.auroc(jnp.asarray(neg), jnp.asarray(pos))) == pytest.approx(ref, abs=1e-6)
    p_in = np.array([[0.99, 0.01], [0.9, 0.1]])
    p_out = np.array([[0.5, 0.5], [0.6, 0.4]])
    assert float(metrics.ood_auroc(p_in, p_out)) == 1.0


def test_metric_bad_inputs():
    with pytest.raises(ValueError, match="same length"):
        metrics.accuracy(np.ones((3, 2)) / 2, np.zeros(2, int))
    with pytest.raises(ValueError, match="probs must have ndim 2"):
        metrics.ece(np.ones(3), np.zeros(3, int))
    with pytest.raises(ValueError, match="num_bins"):
        metrics.ece(np.ones((3, 2)) / 2, np.zeros(3, int), num_bins=0)


def test_probabilities_and_labels_are_checked_outside_jit():
    """Unnormalised rows (logits passed by mistake), entries outside [0, 1] and labels outside [0, C) raise
    naming the argument (they used to give silent numbers or NaN); under jit the checks are skipped."""
    good = jnp.array([[0.9, 0.1], [0.2, 0.8]])
    for fn in (metrics.nll, metrics.ece, metrics.accuracy, metrics.brier):
        with pytest.raises(ValueError, match="rows must sum to one"):
            fn(jnp.array([[0.9, 0.9], [0.2, 0.1]]), jnp.array([0, 1]))
        with pytest.raises(ValueError, match="labels must be in"):
            fn(good, jnp.array([0, 2]))
        with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
            fn(jnp.array([[1.5, -0.5], [0.2, 0.8]]), jnp.array([0, 1]))
    np.testing.assert_allclose(jax.jit(metrics.nll)(good, jnp.array([0, 1])),
                               -(np.log(0.9) + np.log(0.8)) / 2, rtol=1e-6)
