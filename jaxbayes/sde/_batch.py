"""Many samples from a one-sample sampler, with per-sample keys (independent of batch split and devices)."""

from __future__ import annotations

from collections.abc import Callable

import jax

from jaxbayes.parallel import data_parallel, sample_keys
from jaxbayes.sde._sampling import SamplerOutput
from jaxbayes.typing import PRNGKey


def sample_batch(sampler: Callable[[PRNGKey], SamplerOutput], key: PRNGKey, num_samples: int, *,
                 mesh: jax.sharding.Mesh | None = None, start: int = 0) -> SamplerOutput:
    """Draw ``num_samples`` samples with per-sample keys ``fold_in(key, start + i)``.

    ``sampler(key)`` draws one sample (e.g. ``lambda k: pc_sampler(k, score_fn, sde, shape)``). With a
    ``mesh`` the batch is split over its devices (``jaxbayes.parallel.data_parallel``); the samples are the
    same for any batch split and device count.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbayes.sde import VPSDE, ddim_sampler, gaussian_score
      >>> sde = VPSDE()
      >>> score = gaussian_score(sde, jnp.zeros(2), jnp.eye(2))
      >>> out = sample_batch(lambda k: ddim_sampler(k, score, sde, (2,), num_steps=5), jax.random.key(0), 4)
      >>> out.samples.shape
      (4, 2)
    """
    keys = sample_keys(key, num_samples, start=start)
    if mesh is None:
        return jax.vmap(sampler)(keys)
    return data_parallel(sampler, mesh)(keys)


__all__ = ["sample_batch"]
