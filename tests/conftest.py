"""Test harness: 8 simulated CPU devices, warnings as errors (see pyproject), x64 and key fixtures."""

import jax
import pytest

# Must run before any JAX computation initialises the backend.
jax.config.update("jax_num_cpu_devices", 8)


@pytest.fixture
def x64():
    """Run the test with 64-bit floats enabled (tight-tolerance oracle comparisons)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def key():
    """A fresh typed PRNG key."""
    return jax.random.key(0)


@pytest.fixture(scope="session")
def mesh8():
    """A 1-D data mesh over all 8 simulated devices."""
    from jaxbayes.parallel import data_mesh

    assert jax.device_count() == 8, "tests expect 8 simulated CPU devices"
    return data_mesh(8)
