"""Small flax score networks: an MLP with a time embedding for vectors and a small U-Net for images.

Both predict the noise ``eps`` of ``x_t = m x_0 + s z`` from ``(x_t, t)``; turn them into a score with
``jaxbayes.sde.convert_fn(lambda x, t: model.apply(params, x, t), sde, source="eps")``. Both accept one
point (``(d,)`` or ``(H, W, C)`` with a scalar ``t``) or a batch (``(B, d)``/``(B, H, W, C)`` with ``t`` of
shape ``(B,)``), so they work inside the per-point samplers and under ``jax.vmap``.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxbayes.typing import Array


def time_embedding(t: Array, dim: int, *, max_period: float = 1000.0) -> Array:
    """Sinusoidal embedding ``[sin(w_k t), cos(w_k t)]`` with ``w_k`` log-spaced in ``[1, max_period]``.

    Example:
      >>> time_embedding(jnp.zeros(()), 4).tolist()
      [0.0, 0.0, 1.0, 1.0]
    """
    half = dim // 2
    freqs = jnp.exp(jnp.linspace(0.0, jnp.log(max_period), half))
    args = jnp.asarray(t)[..., None] * freqs
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class ScoreMLP(nn.Module):
    """MLP ``eps(x, t)`` for vector data: ``[x, embed(t)] -> hidden layers (SiLU) -> d``.

    Example:
      >>> import jax
      >>> model = ScoreMLP(hidden=(16, 16))
      >>> params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(3), 0.5)
      >>> jax.eval_shape(model.apply, params, jnp.ones((5, 3)), jnp.ones(5)).shape
      (5, 3)
    """

    hidden: Sequence[int] = (128, 128, 128)
    embed_dim: int = 32

    @nn.compact
    def __call__(self, x: Array, t: Array) -> Array:
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:-1])
        emb = nn.Dense(self.embed_dim)(time_embedding(t, self.embed_dim))
        h = jnp.concatenate([x, nn.silu(emb)], axis=-1)
        for width in self.hidden:
            h = nn.silu(nn.Dense(width)(h))
        return nn.Dense(x.shape[-1])(h)


class _ResBlock(nn.Module):
    channels: int
    groups: int

    @nn.compact
    def __call__(self, x, emb):
        h = nn.silu(nn.GroupNorm(num_groups=min(self.groups, x.shape[-1]))(x))
        h = nn.Conv(self.channels, (3, 3))(h)
        h = h + nn.Dense(self.channels)(emb)[:, None, None, :]
        h = nn.silu(nn.GroupNorm(num_groups=min(self.groups, self.channels))(h))
        h = nn.Conv(self.channels, (3, 3))(h)
        if x.shape[-1] != self.channels:
            x = nn.Conv(self.channels, (1, 1))(x)
        return x + h


class SmallUNet(nn.Module):
    """A small U-Net ``eps(x, t)`` for images ``(H, W, C)`` (e.g. 8x8 digits, 28x28 MNIST).

    Two resolution levels below the input (``channels`` per level), residual blocks with GroupNorm and a
    time embedding, nearest-neighbour upsampling to the skip's size (so odd sizes such as 7 work).

    Example:
      >>> import jax
      >>> model = SmallUNet(channels=(8, 16, 16))
      >>> params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((8, 8, 1)), 0.5)
      >>> jax.eval_shape(model.apply, params, jnp.ones((2, 8, 8, 1)), jnp.ones(2)).shape
      (2, 8, 8, 1)
    """

    channels: Sequence[int] = (32, 64, 64)
    embed_dim: int = 64
    groups: int = 8

    @nn.compact
    def __call__(self, x: Array, t: Array) -> Array:
        single = x.ndim == 3
        if single:
            x = x[None]
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype).reshape(-1), (x.shape[0],))
        emb = nn.silu(nn.Dense(self.embed_dim)(time_embedding(t, self.embed_dim)))
        h = nn.Conv(self.channels[0], (3, 3))(x)
        skips = []
        for i, ch in enumerate(self.channels):
            h = _ResBlock(ch, self.groups)(h, emb)
            skips.append(h)
            if i < len(self.channels) - 1:
                h = nn.Conv(self.channels[i + 1], (3, 3), strides=(2, 2))(h)
        for i in reversed(range(len(self.channels) - 1)):
            skip = skips[i]
            h = jax.image.resize(h, (h.shape[0], *skip.shape[1:3], h.shape[-1]), "nearest")
            h = _ResBlock(self.channels[i], self.groups)(jnp.concatenate([h, skip], axis=-1), emb)
        h = nn.silu(nn.GroupNorm(num_groups=min(self.groups, h.shape[-1]))(h))
        out = nn.Conv(x.shape[-1], (3, 3), kernel_init=nn.initializers.zeros)(h)
        return out[0] if single else out


__all__ = ["ScoreMLP", "SmallUNet", "time_embedding"]
