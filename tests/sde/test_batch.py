"""Determinism and scale: batch-size and device-count invariance, pmap, jit/vmap/grad through samplers."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxbayes.parallel import data_parallel, sample_keys
from jaxbayes.sde import (
    VPSDE,
    analytic,
    edm_sampler,
    gaussian_score,
    gmm_denoiser,
    log_likelihood,
    ode_sampler,
    pc_sampler,
    sample_batch,
)

MU = np.array([1.0, -0.5])
COV = np.array([[0.5, 0.2], [0.2, 0.3]])
SDE = VPSDE()
SCORE = gaussian_score(SDE, MU, COV)


def _pc(k):
    return pc_sampler(k, SCORE, SDE, (2,), num_steps=20)


def test_samples_do_not_depend_on_batch_size():
    key = jax.random.key(42)
    full = jax.jit(lambda k: sample_batch(_pc, k, 6))(key).samples
    single = jax.jit(lambda k, i: sample_batch(_pc, k, 1, start=i))
    one_by_one = [single(key, i).samples[0] for i in range(6)]
    np.testing.assert_allclose(full, np.stack(one_by_one), rtol=1e-6, atol=1e-6)


def test_samples_identical_on_one_and_eight_devices(mesh8):
    key = jax.random.key(7)
    den = gmm_denoiser([1.0], MU[None], COV[None])
    edm = lambda k: edm_sampler(k, den, (2,), num_steps=10, s_churn=5.0)
    for sampler in (edm,):
        single = jax.jit(lambda k, s=sampler: sample_batch(s, k, 13))(key)  # 13: padded to 16 on 8 devices
        sharded = jax.jit(lambda k, s=sampler: sample_batch(s, k, 13, mesh=mesh8))(key)
        assert sharded.samples.shape == (13, 2)
        # Same random numbers; XLA may round float32 differently for other per-device batch widths.
        np.testing.assert_allclose(sharded.samples, single.samples, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(sharded.nfe, single.nfe)
    # Adaptive solves (data-dependent loop lengths) run per device under shard_map.
    lik = data_parallel(lambda k, x: log_likelihood(k, SCORE, SDE, x).logp, mesh8)
    xs = jnp.asarray(np.random.default_rng(0).normal(size=(8, 2)), jnp.float32)
    keys = sample_keys(key, 8)
    np.testing.assert_allclose(jax.jit(lik)(keys, xs), jax.vmap(lambda k, x: log_likelihood(k, SCORE, SDE, x).logp)(
        keys, xs), rtol=1e-4)  # float32 adaptive solves: rounding differs between batchings


def test_pmap():
    keys = sample_keys(jax.random.key(3), 16).reshape(8, 2)
    out = jax.pmap(jax.vmap(_pc))(keys)
    ref = sample_batch(_pc, jax.random.key(3), 16)
    # Same random numbers; pmap and vmap fuse the float32 updates differently (20 steps: a few ulps each).
    np.testing.assert_allclose(out.samples.reshape(16, 2), ref.samples, rtol=1e-5, atol=1e-5)


def test_grad_through_probability_flow_sampler(x64):
    # x_eps(mu) = m_eps mu + A (x_T - m_T mu) for Gaussian data: d sum(x_eps) / d mu in closed form.
    x_T = jnp.array([0.3, -0.8])

    def sample(mu):
        return ode_sampler(None, gaussian_score(SDE, mu, COV), SDE, (2,), solver="rk4", num_steps=64,
                           x_init=x_T).samples.sum()

    exact = jax.grad(lambda mu: analytic.gaussian_pf_trajectory(SDE, mu, COV, x_T, SDE.eps).sum())(jnp.asarray(MU))
    np.testing.assert_allclose(jax.jit(jax.grad(sample))(jnp.asarray(MU)), exact, rtol=1e-6)
