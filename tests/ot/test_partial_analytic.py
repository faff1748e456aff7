"""Partial OT vs POT's exact partial Wasserstein; P^2OT pseudo-labels; Gaussian closed forms vs POT."""

import jax
import jax.numpy as jnp
import numpy as np
import ot as pot
import pytest

from jaxbayes import ot


@pytest.mark.parametrize("mass", [0.3, 0.7])
def test_partial_ot_matches_pot_exact(x64, mass):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(40, 2)) + 2.0
    c = ((x[:, None] - y[None]) ** 2).sum(-1)
    a, b = np.ones(30) / 30, np.ones(40) / 40
    exact = pot.partial.partial_wasserstein(a, b, c, m=mass)
    solve = jax.jit(lambda c: ot.partial_ot(c, a, b, mass=mass, epsilon=1e-3, tol=1e-6,
                                            max_iterations=20000, epsilon_scaling=0.95))
    out = solve(c)
    np.testing.assert_allclose(out.mass, mass, rtol=1e-4)
    np.testing.assert_allclose(out.transport_cost, (exact * c).sum(), rtol=5e-3)
    plan = np.asarray(out.plan())
    assert np.all(plan.sum(1) <= a * (1 + 1e-4)) and np.all(plan.sum(0) <= b * (1 + 1e-4))


def test_pseudo_labels_imbalanced_clusters(x64):
    """Three clusters with sizes 60/30/10; soft predictions that are confident on most points."""
    rng = np.random.default_rng(1)
    sizes = [60, 30, 10]
    truth = np.repeat(np.arange(3), sizes)
    logits = 3.0 * np.eye(3)[truth] + rng.normal(size=(100, 3))
    log_probs = jax.nn.log_softmax(jnp.asarray(logits))
    for mass in (0.3, 1.0):
        out = jax.jit(lambda lp: ot.pseudo_labels(lp, mass=mass, epsilon=0.1, reg_kl=0.1,
                                                  tol=1e-8, max_iterations=5000))(log_probs)
        assert bool(out.output.converged)
        np.testing.assert_allclose(jnp.sum(out.plan), mass, rtol=1e-6)
        np.testing.assert_allclose(out.plan.sum(1), out.weights / 100, rtol=1e-12)
        assert np.all(np.asarray(out.plan.sum(1)) <= 0.01 * (1 + 1e-6))  # each sample mass <= 1/N
        acc = np.mean(np.asarray(out.labels)[np.asarray(out.selected)] == truth[np.asarray(out.selected)])
        assert acc > 0.95
    # the KL pull is weak (reg_kl small): cluster sizes follow the data, not uniform
    assert float(out.cluster_mass[0]) > 0.45 and float(out.cluster_mass[2]) < 0.2
    # with a strong pull the clusters are pushed towards equal size
    strong = ot.pseudo_labels(log_probs, mass=1.0, epsilon=0.1, reg_kl=100.0, tol=1e-8)
    assert float(jnp.max(strong.cluster_mass) - jnp.min(strong.cluster_mass)) < 0.1


def test_mass_schedule():
    steps = jnp.arange(11)
    lin = ot.mass_schedule(steps, 10, start=0.2, end=0.9, kind="linear")
    np.testing.assert_allclose(lin, 0.2 + 0.07 * np.arange(11), atol=1e-6)
    sig = ot.mass_schedule(steps, 10, start=0.1)
    assert float(sig[0]) == pytest.approx(0.1 + 0.9 * np.exp(-5.0)) and float(sig[-1]) == pytest.approx(1.0)
    assert np.all(np.diff(np.asarray(sig)) > 0)


def test_w2_gaussians_matches_pot(x64):
    rng = np.random.default_rng(2)
    m1, m2 = rng.normal(size=3), rng.normal(size=3)
    l1, l2 = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    c1, c2 = l1 @ l1.T + 0.1 * np.eye(3), l2 @ l2.T + 0.1 * np.eye(3)
    ref = pot.gaussian.bures_wasserstein_distance(m1, m2, c1, c2) ** 2
    np.testing.assert_allclose(ot.analytic.w2_gaussians(m1, c1, m2, c2), ref, rtol=1e-9)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    np.testing.assert_allclose(ot.analytic.w2_gaussians([1.0], [[4.0]], [-1.0], [[9.0]]), 4.0 + 1.0, rtol=1e-12)


def test_entropic_gaussians_limits(x64):
    rng = np.random.default_rng(3)
    m1, m2 = rng.normal(size=2), rng.normal(size=2)
    c1, c2 = np.diag([1.0, 2.0]), np.array([[2.0, 0.3], [0.3, 0.5]])
    w2 = ot.analytic.w2_gaussians(m1, c1, m2, c2)
    # eps -> 0 recovers W2^2 (up to the O(eps log eps) entropy term)
    for eps, tol in ((1e-3, 2e-2), (1e-5, 3e-4)):
        assert abs(float(ot.analytic.entropic_ot_gaussians(m1, c1, m2, c2, epsilon=eps) - w2)) < tol
    # Monte-Carlo-free 2-D check on a tensor grid with diagonal covariances (factorises per coordinate)
    e2 = ot.analytic.entropic_ot_gaussians(np.zeros(2), [1.0, 2.0], np.ones(2), [3.0, 0.5], epsilon=0.4)
    e1 = (ot.analytic.entropic_ot_gaussians([0.0], [1.0], [1.0], [3.0], epsilon=0.4)
          + ot.analytic.entropic_ot_gaussians([0.0], [2.0], [1.0], [0.5], epsilon=0.4))
    np.testing.assert_allclose(e2, e1, rtol=1e-12)
