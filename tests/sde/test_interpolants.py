"""Stochastic interpolants against the Gaussian closed forms: velocity <-> score, loss, ODE and SDE samplers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes.sde import Interpolant, gaussian_velocity, interpolant_loss, interpolant_sampler, sample_batch
from tests.sde.helpers import COV, MU, N, moments_ok


@pytest.mark.parametrize("kind", ["linear", "trig"])
def test_interpolant_velocity_score_and_loss(kind, x64):
    it = Interpolant(kind)
    v = gaussian_velocity(it, MU, COV)
    x = np.array([0.3, -0.2])
    for t in (0.0, 0.3, 0.8):
        a, b, _, _ = it.coeffs(t)
        c = a**2 * np.eye(2) + b**2 * COV
        exact_score = -np.linalg.solve(c, x - b * MU)
        np.testing.assert_allclose(it.score_from_velocity(v(x, t), x, t), exact_score, rtol=1e-9)
        if t > 0:
            np.testing.assert_allclose(it.velocity_from_score(exact_score, x, t), v(x, t), rtol=1e-9)
    # The ODE (noise = 0) with the exact velocity carries N(0, I) to the data distribution.
    out = jax.jit(jax.vmap(lambda k: interpolant_sampler(k, v, it, (2,), num_steps=200).samples))(
        jax.random.split(jax.random.key(0), 2000))
    assert np.all(np.abs(np.asarray(out).mean(0) - MU) < 4.5 * np.sqrt(np.diag(COV) / 2000) + 5e-3)
    x1 = jax.random.multivariate_normal(jax.random.key(1), jnp.asarray(MU), jnp.asarray(COV), (4000,))
    zero = lambda x, t: jnp.zeros_like(x)
    assert float(interpolant_loss(jax.random.key(2), v, it, x1)) < float(interpolant_loss(jax.random.key(2), zero,
                                                                                            it, x1))
    with pytest.raises(ValueError, match="kind"):
        Interpolant("cubic")


def test_sde_sampler_matches_the_gaussian():
    for kind in ("linear", "trig"):
        it = Interpolant(kind)
        v = gaussian_velocity(it, MU, COV)
        out = jax.jit(lambda k, it=it, v=v: sample_batch(
            lambda kk: interpolant_sampler(kk, v, it, (2,), noise=1.0, num_steps=200), k, N))(jax.random.key(4))
        moments_ok(out.samples, MU, COV)


def _expected_interpolant_loss(kind, cov):
    """E||b(t, x_t) - (alpha' z + beta' x_1)||^2 / d at the exact velocity for N(mu, cov) data, t ~ U(0, 1):
    the mean of tr Cov[target | x_t] / d, which per eigenvalue l of cov is l (alpha' beta - alpha beta')^2 /
    (alpha^2 + beta^2 l), integrated over t by scipy quadrature (independent of jaxbayes)."""
    from scipy import integrate

    lam = np.linalg.eigvalsh(cov)
    if kind == "linear":
        coeffs = lambda t: (1 - t, t, -1.0, 1.0)
    else:
        h = np.pi / 2
        coeffs = lambda t: (np.cos(h * t), np.sin(h * t), -h * np.sin(h * t), h * np.cos(h * t))

    def per_t(t):
        a, b, da, db = coeffs(t)
        return np.mean(lam * (da * b - a * db) ** 2 / (a**2 + b**2 * lam))

    return integrate.quad(per_t, 0.0, 1.0, epsabs=1e-12, epsrel=1e-10)[0]


@pytest.mark.parametrize("kind", ["linear", "trig"])
def test_interpolant_loss_equals_its_closed_form_at_the_exact_velocity(kind, x64):
    """N(MU, COV) data in d = 2, the exact velocity: interpolant_loss over 40000 points (20 disjoint chunks of
    2000, each with its own key) is within 4.5 standard errors (from the spread of the chunk means) of the
    quadrature of the expected loss; with 2 x COV in the oracle it is not."""
    from tests.sde.test_losses import _chunked_mean_and_se

    it = Interpolant(kind)
    v = gaussian_velocity(it, MU, COV)
    x1 = np.random.default_rng(7).multivariate_normal(MU, COV, 40_000)
    got, se = _chunked_mean_and_se(lambda k, c: interpolant_loss(k, v, it, c), x1)
    want = _expected_interpolant_loss(kind, COV)
    assert abs(got - want) < 4.5 * se, (got, want, se)  # measured: 0.13 (linear), 0.37 (trig) standard errors
    assert abs(got - _expected_interpolant_loss(kind, 2 * COV)) > 4.5 * se  # measured: 53, 54
