"""The PFGM++ perturbation kernel is a multivariate t; D -> infinity is Gaussian."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from jaxbayes.sde import (
    VESDE,
    VPSDE,
    PFGMpp,
    SubVPSDE,
)

W = np.array([0.2, 0.5, 0.3])
MU = np.array([[-2.0, 0.0], [1.0, 2.0], [2.0, -1.5]])
COV = np.array([[[0.5, 0.1], [0.1, 0.3]], [[0.2, 0.0], [0.0, 0.6]], [[0.4, -0.2], [-0.2, 0.4]]])
SDES = [VESDE(), VPSDE(), SubVPSDE()]


def test_pfgmpp_kernel_is_multivariate_t(x64):
    pf = PFGMpp(D=7.0)
    x, y = np.array([0.3, -1.0, 2.0]), np.array([0.0, 0.5, 1.0])
    want = stats.multivariate_t(loc=y, shape=0.8**2 * np.eye(3), df=7.0).logpdf(x)
    np.testing.assert_allclose(pf.kernel_logp(x, y, 0.8), want, rtol=1e-10)
    keys = jax.random.split(jax.random.key(0), 5000)
    draws = jax.vmap(lambda k: pf.perturb(k, jnp.asarray(y), 0.8))(keys)
    r2 = jnp.sum((draws - y) ** 2, axis=1) / (3 * 0.8**2)
    # E r2 = D / (D - 2); the t_7 squared radius has finite variance, so a 5-sigma MC band is safe.
    assert abs(float(r2.mean()) - 7 / 5) < 5 * float(r2.std()) / np.sqrt(5000)
    # D -> infinity recovers the Gaussian kernel.
    gauss = stats.multivariate_normal(y, 0.8**2 * np.eye(3)).logpdf(x)
    assert abs(float(PFGMpp(D=1e7).kernel_logp(x, y, 0.8)) - gauss) < 1e-5
    assert PFGMpp(D=9.0, sigma_max=3.0).prior_sample(jax.random.key(1), (4,)).shape == (4,)


def test_radius_std_ratio_matches_the_perturbation_kernel():
    """``E||x - y||^2 / (n sigma^2) = E[1 / (chi^2_D / D)] = D / (D - 2)`` for any data dimension ``n``:
    20000 draws of ``perturb`` agree within 5 standard errors (the SE estimated from the same draws)."""
    for D, n in ((6.0, 4), (40.0, 2)):
        pf = PFGMpp(D=D)
        y, sigma, num = jnp.full(n, 0.3), 1.7, 20_000
        keys = jax.random.split(jax.random.key(int(D)), num)
        x = jax.vmap(lambda k: pf.perturb(k, y, sigma))(keys)
        r = np.asarray(jnp.sum((x - y) ** 2, -1) / (n * sigma**2), np.float64)
        assert abs(r.mean() - float(pf.radius_std_ratio(n))) < 5 * r.std(ddof=1) / np.sqrt(num)
        np.testing.assert_allclose(pf.radius_std_ratio(n), D / (D - 2), rtol=1e-6)  # float32
