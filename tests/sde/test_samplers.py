"""Samplers against exact oracles: PF trajectories, convergence orders, one-step exactness, moments, GMM modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxbayes.sde import (
    VESDE,
    VPSDE,
    Interpolant,
    SubVPSDE,
    analytic,
    ddim_sampler,
    denoiser_from_score,
    dpm_solver_pp_2m,
    edm_sampler,
    gaussian_score,
    gaussian_velocity,
    gmm_denoiser,
    gmm_score,
    interpolant_sampler,
    ode_sampler,
    pc_sampler,
    sample_batch,
)

MU = np.array([1.0, -0.5])
COV = np.array([[0.5, 0.2], [0.2, 0.3]])
SDES = [VPSDE(), VESDE(sigma_max=20.0), SubVPSDE()]
IDS = ["vp", "ve", "subvp"]


def _slope(errors, steps):
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_fixed_step_ode_orders_and_adaptive_accuracy(sde, x64):
    score = gaussian_score(sde, MU, COV)
    x_T = jnp.array([0.7, -1.1]) * sde.prior_std
    exact = analytic.gaussian_pf_trajectory(sde, MU, COV, x_T, sde.eps)
    steps = [64, 128]
    for solver, order in [("euler", 1), ("heun", 2), ("rk4", 4)]:
        ns = [n // 2 for n in steps] if solver == "rk4" else steps  # rk4 reaches float64 round-off sooner
        errs = [float(jnp.linalg.norm(ode_sampler(None, score, sde, (2,), solver=solver, num_steps=n,
                                                  x_init=x_T).samples - exact)) for n in ns]
        assert abs(_slope(errs, ns) - order) < 0.3, (solver, errs)
    errs = [float(jnp.linalg.norm(dpm_solver_pp_2m(None, score, sde, (2,), num_steps=n, x_init=x_T).samples
                                  - exact)) for n in steps]
    assert abs(_slope(errs, steps) - 2) < 0.3, errs
    # DDIM (eta = 0) is a first-order solver of the same flow, ending at t = 0.
    exact0 = analytic.gaussian_pf_trajectory(sde, MU, COV, x_T, 0.0)
    errs = [float(jnp.linalg.norm(ddim_sampler(None, score, sde, (2,), num_steps=n, x_init=x_T).samples
                                  - exact0)) for n in steps]
    assert abs(_slope(errs, steps) - 1) < 0.2, errs
    for solver in ("tsit5", "dopri5"):
        out = ode_sampler(None, score, sde, (2,), solver=solver, rtol=1e-9, atol=1e-9, x_init=x_T)
        assert bool(out.converged) and float(jnp.linalg.norm(out.samples - exact)) < 1e-6
        assert int(out.nfe) > 20


def test_edm_heun_order_and_nfe(x64):
    den = gmm_denoiser([1.0], MU[None], COV[None])
    lam, u = np.linalg.eigh(COV)
    x0 = jnp.array([50.0, -30.0])
    exact = MU + u @ (np.sqrt(lam / (lam + 80.0**2)) * (u.T @ (x0 - MU)))
    steps = [18, 36]
    for solver, order in [("euler", 1), ("heun", 2)]:
        outs = [edm_sampler(None, den, (2,), num_steps=n, solver=solver, x_init=x0) for n in steps]
        errs = [float(jnp.linalg.norm(o.samples - exact)) for o in outs]
        assert abs(_slope(errs, steps) - order) < 0.3, (solver, errs)
        assert [int(o.nfe) for o in outs] == [n if solver == "euler" else 2 * n - 1 for n in steps]


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_one_step_exact_for_single_point_data(sde, x64):
    point = jnp.array([2.0, -3.0])
    score = gaussian_score(sde, point, jnp.zeros((2, 2)))
    out = ddim_sampler(jax.random.key(0), score, sde, (2,), num_steps=1)
    np.testing.assert_allclose(out.samples, point, rtol=1e-10)
    assert int(out.nfe) == 1
    # EDM Euler with one step, on the denoiser built from this SDE's score.
    den = denoiser_from_score(score, sde)
    out = edm_sampler(jax.random.key(1), den, (2,), num_steps=1, solver="euler", sigma_max=float(sde.sigma(0.9)))
    np.testing.assert_allclose(out.samples, point, rtol=1e-8)


def _moments_ok(x, mean, cov, *, extra=0.0):
    """Sample mean within 4.5 standard errors; covariance entries within 4.5 of their standard errors (+ bias)."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    var = np.diag(np.asarray(cov))
    mean_z = np.abs(x.mean(0) - np.asarray(mean)) / np.sqrt(var / n)
    cov_se = np.sqrt((np.outer(var, var) + np.asarray(cov) ** 2) / n)
    cov_z = np.abs(np.cov(x.T) - np.asarray(cov)) / cov_se
    assert mean_z.max() < 4.5 + extra and cov_z.max() < 4.5 + extra, (mean_z, cov_z)


N = 3000


@pytest.mark.parametrize(("sde", "predictor"), [(VPSDE(), "euler_maruyama"), (VESDE(sigma_max=20.0), "ancestral"),
                                                 (SubVPSDE(), "reverse_diffusion"), (VPSDE(), "ancestral")],
                         ids=["vp-em", "ve-ancestral", "subvp-reverse", "vp-ancestral"])
def test_stochastic_predictors_match_gaussian_marginal(sde, predictor):
    score = gaussian_score(sde, MU, COV)
    out = jax.jit(lambda k: sample_batch(lambda kk: pc_sampler(kk, score, sde, (2,), predictor=predictor,
                                                               corrector="none", num_steps=500, denoise=False),
                                         k, N))(jax.random.key(1))
    assert int(out.nfe[0]) == 500
    mean, cov = analytic.gaussian_pushforward(sde, MU, COV, sde.eps)
    _moments_ok(out.samples, mean, cov)


def test_pc_langevin_and_annealed_langevin_in_16d():
    d = 16
    a = jax.random.normal(jax.random.key(3), (d, d)) / np.sqrt(d)
    cov, mu = 0.3 * jnp.eye(d) + 0.2 * a @ a.T, jnp.linspace(-1, 1, d)
    for sde, predictor, corrector, snr, n_corr, extra in [(VPSDE(), "reverse_diffusion", "langevin", 0.05, 1, 1.0),
                                                          (VESDE(sigma_max=20.0), "none", "annealed_langevin", 0.3,
                                                           10, 0.5)]:
        score = gaussian_score(sde, mu, cov)
        out = jax.jit(lambda k, sde=sde, score=score, p=predictor, c=corrector, s=snr, nc=n_corr: sample_batch(
            lambda kk: pc_sampler(kk, score, sde, (d,), predictor=p, corrector=c, snr=s, n_corrector=nc,
                                  num_steps=100 if p == "none" else 200, denoise=False), k, 2000))(jax.random.key(1))
        mean, c = analytic.gaussian_pushforward(sde, mu, cov, sde.eps)
        # 152 mean/covariance entries are checked at once, and Langevin steps add an O(snr^2) bias.
        _moments_ok(out.samples, mean, c, extra=extra)


def test_ddim_eta1_edm_churn_and_interpolant_sde_moments():
    sde = SubVPSDE()
    score = gaussian_score(sde, MU, COV)
    out = jax.jit(lambda k: sample_batch(lambda kk: ddim_sampler(kk, score, sde, (2,), num_steps=500, eta=1.0),
                                         k, N))(jax.random.key(2))
    _moments_ok(out.samples, MU, COV)
    den = gmm_denoiser([1.0], MU[None], COV[None])
    out = jax.jit(lambda k: sample_batch(lambda kk: edm_sampler(kk, den, (2,), num_steps=64, s_churn=30.0), k, N))(
        jax.random.key(3))
    assert int(out.nfe[0]) == 127
    _moments_ok(out.samples, MU, COV)
    for kind in ("linear", "trig"):
        it = Interpolant(kind)
        v = gaussian_velocity(it, MU, COV)
        out = jax.jit(lambda k, it=it, v=v: sample_batch(
            lambda kk: interpolant_sampler(kk, v, it, (2,), noise=1.0, num_steps=200), k, N))(jax.random.key(4))
        _moments_ok(out.samples, MU, COV)


def test_gmm_mode_weights_chi_square():
    w = jnp.array([0.2, 0.5, 0.3])
    means = jnp.array([[-4.0, 0.0], [3.0, 3.0], [3.0, -3.0]])
    covs = jnp.tile(0.3 * jnp.eye(2), (3, 1, 1))
    sde = VPSDE()
    score = gmm_score(sde, w, means, covs)
    den = gmm_denoiser(w, means, covs)
    samplers = {
        "pc": lambda k: pc_sampler(k, score, sde, (2,), num_steps=300, corrector="none"),
        "edm": lambda k: edm_sampler(k, den, (2,), num_steps=18),
        "dpm": lambda k: dpm_solver_pp_2m(k, score, sde, (2,), num_steps=20),
    }
    n = 3000
    for name, fn in samplers.items():
        x = jax.jit(lambda k, fn=fn: sample_batch(fn, k, n))(jax.random.key(5)).samples
        comp = np.argmin(np.linalg.norm(np.asarray(x)[:, None] - np.asarray(means)[None], axis=-1), axis=1)
        counts = np.bincount(comp, minlength=3)
        chi2 = np.sum((counts - n * np.asarray(w)) ** 2 / (n * np.asarray(w)))
        assert chi2 < stats.chi2(2).ppf(0.999), (name, counts)


def test_sliced_wasserstein_against_null_distribution():
    from jaxbayes.datasets import GaussianMixture, gaussian_mixture

    w = np.array([0.3, 0.7])
    means = np.array([[-2.0, 1.0], [2.0, -1.0]])
    covs = np.stack([0.4 * np.eye(2), np.array([[0.5, 0.3], [0.3, 0.5]])])
    mix = GaussianMixture(w, means, covs)
    n = 2000
    dirs = np.array(jax.random.normal(jax.random.key(9), (64, 2)))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)

    def sw(a, b):
        pa, pb = np.sort(np.asarray(a) @ dirs.T, axis=0), np.sort(np.asarray(b) @ dirs.T, axis=0)
        return float(np.sqrt(np.mean((pa - pb) ** 2)))

    ref = np.asarray(gaussian_mixture(jax.random.key(100), n, mix)[0])
    null = [sw(ref, gaussian_mixture(jax.random.key(200 + i), n, mix)[0]) for i in range(40)]
    sde = VESDE(sigma_max=20.0)
    den = gmm_denoiser(w, means, covs)
    x = jax.jit(lambda k: sample_batch(lambda kk: edm_sampler(kk, den, (2,), num_steps=18), k, n))(
        jax.random.key(6)).samples
    assert sw(ref, x) < np.quantile(null, 0.99), (sw(ref, x), np.quantile(null, [0.5, 0.99]))
    # A sampler with far too few steps is caught by the same test (the test has power).
    score = gmm_score(sde, w, means, covs)
    bad = jax.jit(lambda k: sample_batch(lambda kk: ode_sampler(kk, score, sde, (2,), solver="euler",
                                                                num_steps=3), k, n))(jax.random.key(6)).samples
    assert sw(ref, bad) > np.quantile(null, 0.99)


def test_bad_input():
    sde = VPSDE()
    score = gaussian_score(sde, MU, COV)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="predictor"):
        pc_sampler(key, score, sde, (2,), predictor="heun")
    with pytest.raises(ValueError, match="corrector"):
        pc_sampler(key, score, sde, (2,), corrector="mala")
    with pytest.raises(ValueError, match="solver"):
        ode_sampler(key, score, sde, (2,), solver="rk45")
    with pytest.raises(ValueError, match="num_steps"):
        ode_sampler(key, score, sde, (2,), num_steps=0)
    with pytest.raises(ValueError, match="num_steps"):
        ddim_sampler(key, score, sde, (2,), num_steps=0)
    with pytest.raises(ValueError, match="num_steps"):
        edm_sampler(key, gmm_denoiser([1.0], MU[None], COV[None]), (2,), num_steps=0)
    with pytest.raises(ValueError, match="score_fn"):
        pc_sampler(key, lambda x, t: jnp.zeros(3), sde, (2,), num_steps=5)
    with pytest.raises(ValueError, match="score_fn"):
        dpm_solver_pp_2m(key, lambda x, t: x.sum(), sde, (2,))
    with pytest.raises(ValueError, match="denoise_fn"):
        edm_sampler(key, lambda x, s: x[:1], (2,))
    with pytest.raises(ValueError, match="x_init must be finite"):
        ode_sampler(key, score, sde, (2,), x_init=jnp.array([1.0, jnp.nan]))
    with pytest.raises(ValueError, match="x_init must have shape"):
        pc_sampler(key, score, sde, (2,), x_init=jnp.ones(3))
    with pytest.raises(ValueError, match="SubVPSDE"):
        pc_sampler(key, gaussian_score(SubVPSDE(), MU, COV), SubVPSDE(), (2,), predictor="ancestral")
    with pytest.raises(ValueError, match="grid"):
        dpm_solver_pp_2m(key, score, sde, (2,), grid="karras")
    with pytest.raises(ValueError, match="snr"):
        pc_sampler(key, score, sde, (2,), snr=-1.0)


def test_chunked_step_noise_is_iid_normal_and_per_step():
    from jaxbayes.sde._samplers import NOISE_CHUNK, scan_with_noise

    steps, dim = 2 * NOISE_CHUNK + 5, 3  # two full chunks and a remainder

    def collect(key):
        def body(carry, i, z):
            return carry.at[i].set(z[0] + 10.0 * z[1])  # z[1] must be independent of z[0]

        return scan_with_noise(body, jnp.zeros((steps, dim)), key, steps, 2, jnp.zeros(dim))

    zs = np.asarray(jax.jit(jax.vmap(collect))(jax.random.split(jax.random.key(0), 2000)))  # (2000, steps, dim)
    flat = zs.reshape(2000, -1)
    n = flat.shape[0]
    # Each entry is N(0, 101); every pair of (step, coordinate) entries uncorrelated: 5-sigma bounds for n draws.
    np.testing.assert_allclose(flat.var(0) / 101.0, 1.0, atol=5 * np.sqrt(2 / n))
    corr = np.corrcoef(flat.T)[np.triu_indices(flat.shape[1], 1)]
    assert np.max(np.abs(corr)) < 5.5 / np.sqrt(n)
