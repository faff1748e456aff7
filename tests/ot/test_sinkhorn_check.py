"""sinkhorn(check=True): an unconverged solve warns, outside and inside jit/vmap; a converged one is silent."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbayes import ot


def _points(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(n, 2)), jnp.float32), jnp.asarray(rng.normal(size=(n, 2)) + 1.0, jnp.float32)


def _hard(x, y):
    return ot.sinkhorn(ot.pointcloud(x, y), epsilon=1e-3, max_iterations=20, check=True)


def test_unconverged_warns_outside_jit():
    x, y = _points()
    with pytest.warns(ot.SinkhornNotConverged, match=r"did not converge in 20 of 20 iterations.*epsilon_scaling"):
        out = _hard(x, y)
        jax.effects_barrier()
    assert not bool(out.converged)


def test_unconverged_warns_under_jit_and_vmap():
    x, y = _points()
    with pytest.warns(ot.SinkhornNotConverged, match="marginal error"):
        jax.block_until_ready(jax.jit(_hard)(x, y))
        jax.effects_barrier()
    with pytest.warns(ot.SinkhornNotConverged, match="did not converge"):  # once per problem (or per batch)
        jax.block_until_ready(jax.vmap(_hard)(jnp.stack([x, x]), jnp.stack([y, y])))
        jax.effects_barrier()


def test_converged_is_silent_and_default_is_off():
    x, y = _points()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ot.sinkhorn(ot.pointcloud(x, y), epsilon=0.1, check=True)
        jax.effects_barrier()
        assert bool(out.converged)
        ot.sinkhorn(ot.pointcloud(x, y), epsilon=1e-3, max_iterations=20)  # check=False: no warning
        jax.effects_barrier()
