"""Root conftest: the doctests in jaxbayes/ run on the same 8 simulated CPU devices as tests/."""

import jax

jax.config.update("jax_num_cpu_devices", 8)
