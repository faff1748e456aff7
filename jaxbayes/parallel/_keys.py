"""Per-sample random keys indexed by global sample position.

A sample's key is ``fold_in(key, global_index)``, so the random numbers a sample sees never depend on the
batch it was drawn in, on how the batch was split over devices, or on how many processes ran.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxbayes._checks import check_int_range
from jaxbayes.typing import ArrayLike, PRNGKey


def as_key(key, name: str = "key") -> PRNGKey:
    """A typed PRNG key from ``key``: typed keys pass through, legacy ``uint32[2]`` keys (``jax.random.PRNGKey``)
    are wrapped; anything else (an integer seed, a float array) is refused with a ``TypeError``.

    Example:
      >>> import jax
      >>> as_key(jax.random.PRNGKey(0)).dtype == jax.random.key(0).dtype
      True
    """
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    shape, dtype = jnp.shape(key), getattr(key, "dtype", None)
    if dtype == jnp.uint32 and shape[-1:] == (2,):
        return jax.random.wrap_key_data(key)
    raise TypeError(f"{name} must be a PRNG key from jax.random.key(seed) (or a legacy jax.random.PRNGKey), got "
                    f"{type(key).__name__}" + (f" of dtype {dtype} and shape {shape}" if dtype is not None else
                                               f" {key!r}"))


def sample_keys(key: PRNGKey, num: int, *, start: ArrayLike = 0) -> PRNGKey:
    """Keys for samples ``start, ..., start + num - 1``: ``fold_in(key, i)`` for each global index ``i``.

    Example:
      >>> import jax
      >>> k = jax.random.key(0)
      >>> a = sample_keys(k, 6)
      >>> b = sample_keys(k, 3, start=3)
      >>> bool((jax.random.key_data(a[3:]) == jax.random.key_data(b)).all())
      True
    """
    num = check_int_range("num", num, 0)
    key = as_key(key)
    indices = jnp.asarray(start, jnp.uint32) + jnp.arange(num, dtype=jnp.uint32)
    return index_keys(key, indices)


def index_keys(key: PRNGKey, indices: ArrayLike) -> PRNGKey:
    """Keys ``fold_in(key, i)`` for an array of global indices (any shape)."""
    key = as_key(key)
    indices = jnp.asarray(indices, jnp.uint32)
    flat = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices.reshape(-1))
    return flat.reshape(indices.shape)
