"""SDE coefficients against the moment ODEs of a linear SDE, inverses, discretisations and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxbayes.sde import VESDE, VPSDE, PFGMpp, SubVPSDE, get_sde

SDES = [VESDE(), VPSDE(), SubVPSDE(), VESDE(sigma_min=0.1, sigma_max=5.0, T=2.0), VPSDE(beta_max=10.0, T=0.5)]


@pytest.mark.parametrize("sde", SDES, ids=lambda s: f"{type(s).__name__}-T{s.T}")
def test_kernel_solves_moment_odes(sde, x64):
    # For dx = f(t) x dt + g(t) dW: dm/dt = f m and d(s^2)/dt = 2 f s^2 + g^2.
    for t in np.linspace(0.05, 0.95, 7) * sde.T:
        dm = jax.grad(lambda u: sde.mean_coeff(u))(t)
        ds2 = jax.grad(lambda u: sde.std(u) ** 2)(t)
        f, g = sde.drift_coeff(t), sde.diffusion(t)
        np.testing.assert_allclose(dm, f * sde.mean_coeff(t), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ds2, 2 * f * sde.std(t) ** 2 + g**2, rtol=1e-8)
        np.testing.assert_allclose(sde.drift(jnp.ones(3), t), f * jnp.ones(3))


@pytest.mark.parametrize("sde", SDES, ids=lambda s: f"{type(s).__name__}-T{s.T}")
def test_t_from_sigma_inverts_sigma(sde, x64):
    t = jnp.linspace(0.01, 1.0, 9) * sde.T
    np.testing.assert_allclose(sde.t_from_sigma(sde.sigma(t)), t, rtol=1e-9)


@pytest.mark.parametrize("sde", [VESDE(), VPSDE()], ids=["ve", "vp"])
def test_discretize_is_exact_kernel_transition(sde, x64):
    # x_t = x_s + f_i + G_i z must have mean (m_t/m_s) x_s and variance s_t^2 - (m_t/m_s)^2 s_s^2.
    x = jnp.array([0.3, -1.2])
    t, dt = 0.6, 0.05
    f, g = sde.discretize(x, t, dt)
    ratio = sde.mean_coeff(t) / sde.mean_coeff(t - dt)
    np.testing.assert_allclose(x + f, ratio * x, rtol=1e-12)
    np.testing.assert_allclose(g**2, sde.std(t) ** 2 - ratio**2 * sde.std(t - dt) ** 2, rtol=1e-9)


def test_subvp_default_discretize_is_euler(x64):
    sde = SubVPSDE()
    f, g = sde.discretize(jnp.ones(2), 0.5, 0.01)
    np.testing.assert_allclose(f, sde.drift(jnp.ones(2), 0.5) * 0.01)
    np.testing.assert_allclose(g, sde.diffusion(0.5) * 0.1)


@pytest.mark.parametrize("sde", [VESDE(), VPSDE(), SubVPSDE()], ids=["ve", "vp", "subvp"])
def test_prior_sample_and_logp(sde, x64):
    z = sde.prior_sample(jax.random.key(0), (4000, 2))
    assert abs(float(z.std()) / sde.prior_std - 1) < 0.05
    pt = jnp.array([0.3, -0.7])
    np.testing.assert_allclose(sde.prior_logp(pt),
                               stats.multivariate_normal(np.zeros(2), sde.prior_std**2 * np.eye(2)).logpdf(pt))


def test_song_defaults_and_registration():
    assert (VESDE().sigma_min, VESDE().sigma_max, VPSDE().beta_min, VPSDE().beta_max) == (0.01, 50.0, 0.1, 20.0)
    assert (VPSDE().T, VPSDE().eps, VESDE().eps) == (1.0, 1e-5, 1e-5)
    # pytree: hyper-parameters are leaves (traced, vmapped), T / eps / N static.
    leaves, treedef = jax.tree.flatten(VPSDE(beta_max=10.0, N=50))
    assert len(leaves) == 2 and jax.tree.unflatten(treedef, leaves).N == 50
    stds = jax.vmap(lambda b: VPSDE(beta_max=b).std(0.5))(jnp.array([5.0, 10.0, 20.0]))
    assert bool(jnp.all(jnp.diff(stds) > 0))
    assert float(jax.jit(lambda s: s.mean_coeff(1.0))(VPSDE())) == pytest.approx(float(VPSDE().mean_coeff(1.0)))
    assert get_sde("subvp", beta_max=5.0) == SubVPSDE(beta_max=5.0)


def test_bad_input():
    with pytest.raises(ValueError, match="sde name"):
        get_sde("vpp")
    with pytest.raises(ValueError, match="beta_max"):
        VPSDE(beta_max=-1.0)
    with pytest.raises(ValueError, match="sigma_min"):
        VESDE(sigma_min=0.0)
    with pytest.raises(ValueError, match="eps"):
        VPSDE(eps=2.0)
    with pytest.raises(ValueError, match="T must"):
        VESDE(T=0.0)
    with pytest.raises(ValueError, match=r"t must be in \[0, T"):
        VPSDE().std(1.5)
    with pytest.raises(ValueError, match=r"t must be in \[0, T"):
        VESDE().drift(jnp.ones(2), -0.1)
    with pytest.raises(ValueError, match=r"t must be in \[0, T"):
        SubVPSDE().marginal(jnp.ones(2), jnp.array([0.5, 2.0]))
    with pytest.raises(ValueError, match="D must"):
        PFGMpp(D=1.0)
