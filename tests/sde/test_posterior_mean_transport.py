"""Transport after the posterior mean (Deep OT, PMRF) against the Gaussian restoration problem's closed forms.

The oracle problem: ``x ~ N(MEAN, COV)`` in d = 2, ``y = H x + noise`` with ``noise ~ N(0, s2 I)``. The posterior
mean ``x* = MEAN + K (y - H MEAN)``, ``K = COV H^T (H COV H^T + s2 I)^{-1}``, is ``N(MEAN, C*)`` with
``C* = K H COV``, and ``MMSE = tr(COV - C*)``. The MSE-optimal estimator whose outputs are distributed as ``x``
is ``T(x*)`` with ``T`` the W2 map from ``N(MEAN, C*)`` to ``N(MEAN, COV)``; since ``x - x*`` is orthogonal to
every function of ``y``, its MSE is ``D* = MMSE + W2^2`` (Freirich, Michaeli, Meir 2021).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg as sla
from scipy import integrate

from jaxbayes.base import fit
from jaxbayes.ot.analytic import w2_gaussians
from jaxbayes.sde import (
    GaussianTransport,
    deep_ot_map,
    gaussian_w2_map,
    nets,
    pmrf_loss,
    pmrf_sampler,
    pmrf_trainer,
)
from tests.sde.helpers import moments_ok

MEAN = np.array([1.0, -0.5])
COV = np.array([[2.0, 0.6], [0.6, 0.5]])
EYE = np.eye(2)
BLUR = np.array([[1.0, 0.8], [0.0, 0.4]])  # a non-commuting degradation for Deep OT: C* and COV do not commute


def restoration(h, s2):
    """``(K, C*)`` of the Gaussian restoration problem ``y = h x + N(0, s2 I)``."""
    k = COV @ h.T @ np.linalg.inv(h @ COV @ h.T + s2 * np.eye(h.shape[0]))
    c_star = k @ h @ COV
    return k, 0.5 * (c_star + c_star.T)


def draw(seed, n, h, s2):
    """``n`` pairs ``(x*, x)``: clean samples and the exact posterior means of their noisy observations."""
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal(MEAN, COV, n)
    y = x @ h.T + np.sqrt(s2) * rng.standard_normal((n, h.shape[0]))
    k, _ = restoration(h, s2)
    return MEAN + (y - h @ MEAN) @ k.T, x


def ot_matrix(c1, c2):
    """The W2 map's matrix by scipy (independent of jaxbayes)."""
    r = sla.sqrtm(c1).real
    r_inv = np.linalg.inv(r)
    return r_inv @ sla.sqrtm(r @ c2 @ r).real @ r_inv


def w2sq(c1, c2):
    r = sla.sqrtm(c1).real
    return float(np.trace(c1 + c2 - 2 * sla.sqrtm(r @ c2 @ r).real))


def test_gaussian_w2_map_is_the_closed_form(x64):
    """Against scipy for random SPD covariances in d = 3: the matrix, A C1 A = C2, the cost (= W2^2 = E||T(u) - u||^2
    = tr((A - I) C1 (A - I))), the map applied to points; a singular source maps on its support; a map in a latent
    space reached by a rotation Q equals the rotated pixel-space map (W2 is rotation invariant)."""
    rng = np.random.default_rng(0)
    b1, b2 = rng.standard_normal((2, 3, 3))
    c1, c2 = b1 @ b1.T + 0.3 * np.eye(3), b2 @ b2.T + 0.3 * np.eye(3)
    m1, m2 = rng.standard_normal((2, 3))
    t = gaussian_w2_map(m1, c1, m2, c2)
    a = ot_matrix(c1, c2)
    np.testing.assert_allclose(t.matrix, a, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(t.matrix @ c1 @ t.matrix, c2, rtol=1e-8)
    want_cost = np.sum((m1 - m2) ** 2) + np.trace((a - np.eye(3)) @ c1 @ (a - np.eye(3)))
    np.testing.assert_allclose(float(t.cost), want_cost, rtol=1e-9)
    u = rng.standard_normal((5, 3))
    np.testing.assert_allclose(t(u), m2 + (u - m1) @ a, rtol=1e-9)
    np.testing.assert_allclose(t(u, alpha=0.25), 0.75 * u + 0.25 * (m2 + (u - m1) @ a), rtol=1e-9)
    # grad: diagonal covariances, cost(s) = sum_i (sqrt(s c_i) - sqrt(l_i))^2, so at s = 1 it is sum c_i - sqrt(c_i l_i)
    c_diag, l_diag = np.array([1.0, 3.0]), np.array([2.0, 0.5])
    cost = lambda s: gaussian_w2_map(np.zeros(2), s * np.diag(c_diag), np.zeros(2), np.diag(l_diag)).cost
    np.testing.assert_allclose(jax.grad(cost)(1.0), np.sum(c_diag - np.sqrt(c_diag * l_diag)), rtol=1e-8)
    singular = gaussian_w2_map(np.zeros(2), np.diag([1.0, 0.0]), np.zeros(2), np.diag([4.0, 1.0]))
    np.testing.assert_allclose(singular.matrix, np.diag([2.0, 0.0]), atol=1e-7)

    q = np.linalg.qr(rng.standard_normal((2, 2)))[0]
    x_hat, x = draw(1, 500, BLUR, 0.3)
    pixel = deep_ot_map(x_hat, x)
    latent = deep_ot_map(x_hat, x, encode=lambda v: v @ q, decode=lambda u: u @ q.T)
    np.testing.assert_allclose(q @ latent.matrix @ q.T, pixel.matrix, rtol=1e-8)
    np.testing.assert_allclose(latent(x_hat[:7]), pixel(x_hat[:7]), rtol=1e-8)


def _delta_method_se(c1, c2, n1, n2, h=1e-6):
    """Standard errors of the entries of ot_matrix(C1_hat, C2_hat) for unbiased sample covariances of n1 and n2
    independent Gaussian samples. First order (delta method): A_hat - A = sum_p J_p dC_p over the free entries
    p = (i <= j) of both covariances, and for Gaussian samples (Isserlis)
    Cov(C_hat_ij, C_hat_kl) = (C_ik C_jl + C_il C_jk) / (n - 1), the two covariances independent. J by central
    finite differences of the scipy oracle; the O(1/n) bias is far below the O(1/sqrt(n)) spread at n = 4000."""
    d = c1.shape[0]
    pairs = [(i, j) for i in range(d) for j in range(i, d)]
    var = np.zeros((d, d))
    for which, c, n in ((0, c1, n1), (1, c2, n2)):
        jac = []
        for i, j in pairs:
            e = np.zeros((d, d))
            e[i, j] = e[j, i] = h
            args_p, args_m = [c1, c2], [c1, c2]
            args_p[which], args_m[which] = c + e, c - e
            jac.append((ot_matrix(*args_p) - ot_matrix(*args_m)) / (2 * h))
        cov_entries = np.array([[c[i, k] * c[j, q] + c[i, q] * c[j, k] for k, q in pairs] for i, j in pairs]) / (n - 1)
        jac = np.stack(jac, -1)  # (d, d, p)
        var += np.einsum("abp,pq,abq->ab", jac, cov_entries, jac)
    return np.sqrt(var)


def test_deep_ot_recovers_the_optimal_perceptual_estimator(x64):
    """Deep OT fitted on N = 4000 unpaired posterior means and clean samples of the blur problem:
    * its matrix is within 4.5 delta-method standard errors (see _delta_method_se) of the closed-form map, and the
      non-optimal map COV^{1/2} C*^{-1/2} (also a pushforward to N(MEAN, COV)) is not (by > 8 SE);
    * it carries the fitted Gaussian of x* exactly onto that of x; the Gaussian it makes of N(MEAN, C*) is within
      the triangle bound ||A_hat|| W2(fit of x*, p_x*) + W2(fit of x, p_x) of p_x (T_hat is ||A_hat||-Lipschitz)
      and closer to p_x than a tenth of the posterior mean's W2^2;
    * its MSE on 20000 fresh pairs (y, x) equals D* = MMSE + W2^2 within 4.5 Monte-Carlo standard errors plus the
      first-order effect of the estimation error Delta = A_hat - A measured against the oracle, i.e.
      MSE(T_hat) - D* = 2 tr((A - I) C* Delta) + tr(Delta C* Delta) + ||T_hat(MEAN) - MEAN||^2;
    * alpha = 1/2 halves its distance from x*: its MSE is MMSE + (MSE - MMSE) / 4, within 4.5 SE."""
    n = 4000
    _, c_star = restoration(BLUR, 0.3)
    mmse = np.trace(COV - c_star)
    a = ot_matrix(c_star, COV)
    d_star = mmse + w2sq(c_star, COV)
    x_hat = draw(10, n, BLUR, 0.3)[0]
    x = draw(11, n, BLUR, 0.3)[1]  # unpaired: a second set of clean samples
    t = jax.jit(deep_ot_map)(x_hat, x)
    assert isinstance(t, GaussianTransport)

    se = _delta_method_se(c_star, COV, n, n)
    assert np.all(np.abs(t.matrix - a) < 4.5 * se), (np.abs(t.matrix - a) / se)  # measured: max 1.3 SE
    naive = sla.sqrtm(COV).real @ np.linalg.inv(sla.sqrtm(c_star).real)
    assert np.max(np.abs(naive - a) / se) > 8  # measured: 9.95
    np.testing.assert_allclose(t.source_mean, MEAN, atol=4.5 * np.sqrt(np.diag(c_star).max() / n))

    c1_hat, c2_hat = np.cov(x_hat.T), np.cov(x.T)
    np.testing.assert_allclose(t.matrix @ c1_hat @ t.matrix, c2_hat, rtol=1e-8)
    out_mean = np.asarray(t(MEAN))
    w2_out = float(w2_gaussians(out_mean, t.matrix @ c_star @ t.matrix, MEAN, COV))
    bound = (np.linalg.norm(t.matrix, 2) * np.sqrt(float(w2_gaussians(x_hat.mean(0), c1_hat, MEAN, c_star)))
             + np.sqrt(float(w2_gaussians(x.mean(0), c2_hat, MEAN, COV))))
    w2_mmse = w2sq(c_star, COV)
    assert w2_out <= bound**2 + 1e-12 and w2_out < 0.1 * w2_mmse, (w2_out, bound**2, w2_mmse)  # 0.0073, 0.025

    x_star, x_new = draw(12, 20_000, BLUR, 0.3)
    delta = t.matrix - a
    shift = (2 * np.trace((a - EYE) @ c_star @ delta) + np.trace(delta @ c_star @ delta)
             + np.sum((out_mean - MEAN) ** 2))
    err = np.sum((jax.vmap(t)(x_star) - x_new) ** 2, axis=1)
    mse, mse_se = err.mean(), err.std(ddof=1) / np.sqrt(err.size)
    assert abs(mse - (d_star + shift)) < 4.5 * mse_se, (mse, d_star, shift, mse_se)  # measured: 0.4 SE
    assert mse - mmse > 10 * mse_se  # the transport costs MSE: the test sees the W2^2 term
    half = np.sum((np.asarray(t(x_star, alpha=0.5)) - x_new) ** 2, axis=1)
    assert abs(half.mean() - (mmse + (d_star + shift - mmse) / 4)) < 4.5 * half.std(ddof=1) / np.sqrt(half.size)


SIGMA_S = 0.05
S2 = 1.0  # PMRF oracle problem: denoising (H = I), where C*, COV - C* and COV commute


def pmrf_velocity(c_star, sigma_s):
    """The exact PMRF velocity of the Gaussian problem. With x = x* + e (e ~ N(0, COV - C*) independent of x*),
    z_t = x* + t e + (1 - t) sigma_s eps has covariance S_t = C* + t^2 (COV - C*) + (1 - t)^2 sigma_s^2 I, the
    target u = e - sigma_s eps has Cov(u, z_t) = S_t' / 2, so E[u | z_t = z] = S_t' S_t^{-1} (z - MEAN) / 2."""
    cp = jnp.asarray(COV - c_star)
    c_star, eye, mean = jnp.asarray(c_star), jnp.eye(2), jnp.asarray(MEAN)

    def velocity(z, t):
        s = c_star + t**2 * cp + (1 - t) ** 2 * sigma_s**2 * eye
        ds = 2 * t * cp - 2 * (1 - t) * sigma_s**2 * eye
        return 0.5 * ds @ jnp.linalg.solve(s, z - mean)

    return velocity


def test_pmrf_loss_equals_its_closed_form_at_the_exact_velocity(x64):
    """At the exact velocity the expected loss is (1/d) int_0^1 tr(Cov(u) - S_t' S_t^{-1} S_t' / 4) dt with
    Cov(u) = COV - C* + sigma_s^2 I (scipy quadrature); at v = 0 it is tr(Cov(u)) / d. The estimates over
    40000 pairs (20 chunks of 2000, each with its own key) are within 4.5 standard errors of the chunk means."""
    _, c_star = restoration(EYE, S2)
    cu = COV - c_star + SIGMA_S**2 * EYE

    def per_t(t):
        s = c_star + t**2 * (COV - c_star) + (1 - t) ** 2 * SIGMA_S**2 * EYE
        ds = 2 * t * (COV - c_star) - 2 * (1 - t) * SIGMA_S**2 * EYE
        return np.trace(cu - 0.25 * ds @ np.linalg.solve(s, ds)) / 2

    want = integrate.quad(per_t, 0.0, 1.0, epsabs=1e-12, epsrel=1e-10)[0]
    x_hat, x = (a.reshape(20, 2000, 2) for a in draw(20, 40_000, EYE, S2))
    keys = jax.random.split(jax.random.key(3), 20)
    for v, expected in ((pmrf_velocity(c_star, SIGMA_S), want), (lambda z, t: jnp.zeros_like(z), np.trace(cu) / 2)):
        chunks = np.asarray(jax.jit(jax.vmap(lambda k, a, b, v=v: pmrf_loss(k, v, a, b, sigma_s=SIGMA_S)))(
            keys, x_hat, x))
        got, se = chunks.mean(), chunks.std(ddof=1) / np.sqrt(20)
        assert abs(got - expected) < 4.5 * se, (got, expected, se)
    assert abs(want - np.trace(cu) / 2) > 20 * se


def test_pmrf_sampler_is_euler_on_the_flow_and_reaches_the_ot_map(x64):
    """With sigma_s = 0 at sampling, pmrf_sampler is z <- z + dt v(z, t_k): for the exact (linear) velocity the
    result is MEAN + M_K (x_hat - MEAN) with M_K the product of the K Euler matrices (numpy). As K grows M_K tends
    to the W2 map from N(MEAN, C* + sigma_s^2 I) to N(MEAN, COV) (all matrices commute here). With sigma_s > 0
    the restorations of one x_hat over 2000 keys have mean MEAN + M_K (x_hat - MEAN) and covariance
    sigma_s^2 M_K M_K^T (4.5 standard errors)."""
    _, c_star = restoration(EYE, S2)
    v = pmrf_velocity(c_star, SIGMA_S)
    k_steps = 10

    def euler(num_steps):
        m, ts = EYE, np.linspace(0.0, 1.0, num_steps + 1)
        for t0, t1 in zip(ts[:-1], ts[1:], strict=True):
            s = c_star + t0**2 * (COV - c_star) + (1 - t0) ** 2 * SIGMA_S**2 * EYE
            ds = 2 * t0 * (COV - c_star) - 2 * (1 - t0) * SIGMA_S**2 * EYE
            m = (EYE + (t1 - t0) * 0.5 * ds @ np.linalg.inv(s)) @ m
        return m

    x_hat = np.array([0.3, 0.2])
    out = pmrf_sampler(jax.random.key(0), v, x_hat, num_steps=k_steps)
    np.testing.assert_allclose(out.samples, MEAN + euler(k_steps) @ (x_hat - MEAN), rtol=1e-10)
    assert int(out.nfe) == k_steps
    np.testing.assert_allclose(euler(2000), ot_matrix(c_star + SIGMA_S**2 * EYE, COV), atol=2e-3)
    many = jax.jit(jax.vmap(lambda k: pmrf_sampler(k, v, x_hat, sigma_s=SIGMA_S, num_steps=k_steps).samples))(
        jax.random.split(jax.random.key(1), 2000))
    m = euler(k_steps)
    moments_ok(many, MEAN + m @ (x_hat - MEAN), SIGMA_S**2 * m @ m.T)


def test_trained_pmrf_reaches_the_optimal_perceptual_estimator():
    """A ScoreMLP (2 x 32) trained 300 Adam steps (batch 256, 4000 pairs) on the denoising problem, sampled with 50
    Euler steps on 4000 fresh posterior means. Oracle: the ideal PMRF is the W2 map of N(MEAN, C* + sigma_s^2 I)
    to N(MEAN, COV) applied to x* + sigma_s eps (previous test), with MSE
    D*_s = MMSE + tr((I - A_s) C* (I - A_s)) + sigma_s^2 tr(A_s^2) (1.065; D* = 1.057, MMSE = 0.913) and output
    W2 = 0. The excess d_i = ||x_i - out_i||^2 - ||x_i - x*_i||^2 has mean D*_s - MMSE exactly; its estimate must be
    within 4.5 standard errors plus a stated training/discretisation tolerance of 0.03 (20% of the excess; the
    Euler bias at 50 steps is -0.007), and the outputs' Gaussian W2^2 to N(MEAN, COV) below a tenth of the posterior
    mean's (0.144). An estimator that does not transport (out = x*) misses the excess by 0.15."""
    _, c_star = restoration(EYE, S2)
    mmse = np.trace(COV - c_star)
    a_s = ot_matrix(c_star + SIGMA_S**2 * EYE, COV)
    d_s = mmse + np.trace((EYE - a_s) @ c_star @ (EYE - a_s)) + SIGMA_S**2 * np.trace(a_s @ a_s)
    w2_mmse = w2sq(c_star, COV)

    model = nets.ScoreMLP(hidden=(32, 32), embed_dim=16)
    params = model.init(jax.random.key(0), jnp.zeros(2), 0.5)
    steps = 300
    trainer = pmrf_trainer(model.apply, optax.adam(optax.cosine_decay_schedule(1e-2, steps)), sigma_s=SIGMA_S,
                           ema_decay=0.0)
    data = tuple(jnp.asarray(a, jnp.float32) for a in draw(30, 4000, EYE, S2))
    state, infos = jax.jit(lambda k, s: fit(k, trainer, s, steps, data=data, batch_size=256))(
        jax.random.key(1), trainer.init(jax.random.key(0), params))
    assert bool(jnp.all(infos.finite))

    x_star, x = draw(31, 4000, EYE, S2)
    restore = jax.jit(jax.vmap(lambda k, xh: pmrf_sampler(k, lambda z, t: model.apply(state.params, z, t), xh,
                                                          sigma_s=SIGMA_S, num_steps=50).samples))
    out = np.asarray(restore(jax.random.split(jax.random.key(2), 4000), jnp.asarray(x_star, jnp.float32)),
                     np.float64)
    excess = np.sum((out - x) ** 2, 1) - np.sum((x_star - x) ** 2, 1)
    se = excess.std(ddof=1) / np.sqrt(excess.size)
    assert abs(excess.mean() - (d_s - mmse)) < 4.5 * se + 0.03, (excess.mean(), d_s - mmse, se)
    w2_out = float(w2_gaussians(out.mean(0), np.cov(out.T), MEAN, COV))
    w2_in = float(w2_gaussians(x_star.mean(0), np.cov(x_star.T), MEAN, COV))
    assert w2_out < 0.1 * w2_mmse < w2_in, (w2_out, w2_mmse, w2_in)


def test_bad_inputs_name_the_argument():
    x = np.ones((10, 2))
    with pytest.raises(ValueError, match="x_hat and x"):
        deep_ot_map(x, np.ones((10, 3)))
    with pytest.raises(ValueError, match="x_hat"):
        deep_ot_map(np.ones(10), x)
    with pytest.raises(ValueError, match="jitter"):
        deep_ot_map(x, x, jitter=-1.0)
    with pytest.raises(TypeError, match="x_hat"):
        deep_ot_map(np.ones((10, 2), np.int32), x)
    with pytest.raises(ValueError, match="x_hat must be finite"):
        deep_ot_map(np.full((10, 2), np.nan), x)
    with pytest.raises(ValueError, match="cov2"):
        gaussian_w2_map(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))
    with pytest.raises(ValueError, match="x_hat must have last axis 2"):
        gaussian_w2_map(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2))(np.ones(3))
    v = lambda z, t: z
    with pytest.raises(ValueError, match="x_hat and x must have the same shape"):
        pmrf_loss(jax.random.key(0), v, x, np.ones((9, 2)))
    with pytest.raises(ValueError, match="sigma_s"):
        pmrf_loss(jax.random.key(0), v, x, x, sigma_s=-0.1)
    with pytest.raises(ValueError, match="sigma_s"):
        pmrf_trainer(lambda p, z, t: z, optax.sgd(0.1), sigma_s=-0.1)
    with pytest.raises(ValueError, match="num_steps"):
        pmrf_sampler(jax.random.key(0), v, np.ones(2), num_steps=0)
    with pytest.raises(ValueError, match="velocity_fn"):
        pmrf_sampler(jax.random.key(0), lambda z, t: z[:1], np.ones(2))
