"""Exact log-densities through the probability-flow ODE, bits/dim and encode/decode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes.sde import (
    VESDE,
    VPSDE,
    SubVPSDE,
    analytic,
    bits_per_dim,
    decode,
    encode,
    gaussian_logpdf,
    gaussian_score,
    gmm_logpdf,
    gmm_score,
    log_likelihood,
)

MU = np.array([0.5, -1.0, 0.2])
COV = np.array([[0.6, 0.2, 0.0], [0.2, 0.4, 0.1], [0.0, 0.1, 0.3]])
X = np.array([0.1, -0.4, 0.5])


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(), SubVPSDE()], ids=["vp", "ve", "subvp"])
def test_exact_trace_matches_closed_form_logpdf(sde, x64):
    score = gaussian_score(sde, MU, COV)
    exact_prior = lambda z: gaussian_logpdf(sde, MU, COV, z, sde.T)
    out = log_likelihood(None, score, sde, X, trace="exact", rtol=1e-9, atol=1e-9, prior_logp_fn=exact_prior)
    want = gaussian_logpdf(sde, MU, COV, X, sde.eps)
    assert abs(float(out.logp - want)) < 1e-4 and bool(out.converged)
    np.testing.assert_allclose(out.z, analytic.gaussian_pf_trajectory(sde, MU, COV, X, sde.T, t_start=sde.eps),
                               rtol=1e-6, atol=1e-8)
    # With the SDE's own prior the only extra error is the prior mismatch log p_T - log prior at z.
    plain = log_likelihood(None, score, sde, X, trace="exact", rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(plain.logp - out.logp, sde.prior_logp(out.z) - exact_prior(out.z), atol=1e-8)


def test_rademacher_hutchinson_is_exact_for_diagonal_covariance(x64):
    sde = VPSDE()
    cov = np.diag([0.3, 1.5, 0.7])
    score = gaussian_score(sde, MU, cov)
    prior = lambda z: gaussian_logpdf(sde, MU, cov, z, sde.T)
    want = gaussian_logpdf(sde, MU, cov, X, sde.eps)
    for seed in range(3):
        out = log_likelihood(jax.random.key(seed), score, sde, X, rtol=1e-9, atol=1e-9, prior_logp_fn=prior)
        assert abs(float(out.logp - want)) < 1e-4


def test_gaussian_hutchinson_is_unbiased_and_fixed_step_solvers(x64):
    sde = VPSDE()
    score = gaussian_score(sde, MU, COV)
    prior = lambda z: gaussian_logpdf(sde, MU, COV, z, sde.T)
    want = float(gaussian_logpdf(sde, MU, COV, X, sde.eps))
    keys = jax.random.split(jax.random.key(0), 400)
    out = jax.jit(jax.vmap(lambda k: log_likelihood(k, score, sde, X, probe="gaussian", solver="rk4",
                                                    num_steps=64, prior_logp_fn=prior)))(keys)
    lp = np.asarray(out.logp)
    assert abs(lp.mean() - want) < 4 * lp.std() / np.sqrt(lp.size) + 1e-4
    assert lp.std() > 1e-3  # the Gaussian probe is random for a non-diagonal Jacobian
    assert int(out.nfe[0]) == 256
    heun = log_likelihood(None, score, sde, X, trace="exact", solver="heun", num_steps=400, prior_logp_fn=prior)
    assert abs(float(heun.logp) - want) < 1e-3


def test_gmm_likelihood(x64):
    sde = VESDE(sigma_max=30.0)
    w, means = np.array([0.4, 0.6]), np.array([[-1.0, 0.5], [1.5, -0.5]])
    covs = np.stack([0.3 * np.eye(2), np.array([[0.4, 0.1], [0.1, 0.2]])])
    score = gmm_score(sde, w, means, covs)
    prior = lambda z: gmm_logpdf(sde, w, means, covs, z, sde.T)
    for x in (np.array([0.0, 0.0]), np.array([1.4, -0.6])):
        out = log_likelihood(None, score, sde, x, trace="exact", rtol=1e-9, atol=1e-9, prior_logp_fn=prior)
        assert abs(float(out.logp - gmm_logpdf(sde, w, means, covs, x, sde.eps))) < 1e-4


def test_bits_per_dim_offsets_and_batched_jit():
    # A uniform density on [0, 1]^n has log p = 0: 8-bit data give exactly 8 bits/dim, [-1, 1] data 7.
    assert float(bits_per_dim(0.0, 5, num_levels=256)) == pytest.approx(8.0)
    assert float(bits_per_dim(5 * np.log(2.0), 5, num_levels=256, data_range=(-1.0, 1.0))) == pytest.approx(6.0)
    assert float(bits_per_dim(-10 * np.log(2.0), 10)) == pytest.approx(1.0)
    sde = VPSDE()
    score = gaussian_score(sde, np.zeros(3), np.eye(3))
    xs = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)
    out = jax.jit(jax.vmap(lambda k, x: log_likelihood(k, score, sde, x, num_levels=256)))(
        jax.random.split(jax.random.key(0), 4), xs)
    # N(0, I) data are invariant under the VP SDE: log p = log N(x; 0, I) (float32, adaptive solve).
    want = -0.5 * np.sum(np.asarray(xs) ** 2, 1) - 1.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(out.logp, want, atol=2e-3)
    np.testing.assert_allclose(out.bpd, (-want / 3 + np.log(256)) / np.log(2), atol=2e-3)


def test_encode_decode_round_trip(x64):
    sde = SubVPSDE()
    score = gaussian_score(sde, MU, COV)
    z = encode(score, sde, X, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(z.samples, analytic.gaussian_pf_trajectory(sde, MU, COV, X, sde.T, t_start=sde.eps),
                               rtol=1e-6)
    back = decode(score, sde, z.samples, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(back.samples, X, rtol=1e-6, atol=1e-8)
    assert int(z.nfe) > 0 and bool(back.converged)


def test_bad_input():
    sde = VPSDE()
    score = gaussian_score(sde, MU, COV)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="trace"):
        log_likelihood(key, score, sde, X, trace="skilling")
    with pytest.raises(ValueError, match="probe"):
        log_likelihood(key, score, sde, X, probe="sphere")
    with pytest.raises(ValueError, match="solver"):
        log_likelihood(key, score, sde, X, solver="rk45")
    with pytest.raises(ValueError, match="key is required"):
        log_likelihood(None, score, sde, X)
    with pytest.raises(ValueError, match="x must be finite"):
        log_likelihood(key, score, sde, np.array([np.inf, 0.0, 0.0]))
    with pytest.raises(ValueError, match="score_fn"):
        log_likelihood(key, lambda x, t: x[:2], sde, X)
    with pytest.raises(ValueError, match="num_levels"):
        bits_per_dim(0.0, 3, num_levels=1)
    with pytest.raises(ValueError, match="num_steps"):
        encode(score, sde, X, num_steps=0)
