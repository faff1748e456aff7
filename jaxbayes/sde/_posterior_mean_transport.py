r"""Restoration by the posterior mean, then transport to the data distribution.

The MSE-optimal estimator under a perfect-perception constraint (its outputs distributed as the data ``p_x``)
is the W2-optimal transport ``T`` of the posterior mean ``x* = E[x | y]`` to ``p_x``, and its MSE is
``E||x - T(x*)||^2 = MMSE + W2^2(p_{x*}, p_x)`` (Freirich, Michaeli, Meir, "A Theory of the Distortion-Perception
Tradeoff in Wasserstein Space", NeurIPS 2021): ``x - x*`` is orthogonal to every function of ``y``. Given the
outputs ``x_hat`` of a user's MMSE estimator, two ways to build ``T``:

* **Deep OT** (Adrai, Ohayon, Michaeli, Elad, "Deep Optimal Transport: A Practical Algorithm for
  Photo-realistic Image Restoration", NeurIPS 2023): fit a Gaussian to ``x_hat`` and one to clean ``x``
  (unpaired; optionally in the latent space of an auto-encoder) and use the closed-form W2 map between them,
  ``T(u) = m_2 + A (u - m_1)``, ``A = C_1^{-1/2} (C_1^{1/2} C_2 C_1^{1/2})^{1/2} C_1^{-1/2}``
  (:func:`gaussian_w2_map`, :func:`deep_ot_map`).
* **Posterior-Mean Rectified Flow** (Ohayon, Michaeli, Elad, "Posterior-Mean Rectified Flow: Towards Minimum
  MSE Photo-Realistic Image Restoration", arXiv:2410.00418, 2024): regress a velocity on the straight line from
  ``z_0 = x_hat + sigma_s eps`` to its paired clean ``x``, ``z_t = (1 - t) z_0 + t x``, with the loss
  ``E||v(z_t, t) - (x - z_0)||^2`` (:func:`pmrf_loss`, :func:`pmrf_trainer`), and integrate
  ``dz = v(z, t) dt`` from ``z_0`` (:func:`pmrf_sampler`, the rectified-flow ODE of
  :func:`jaxbayes.sde.interpolant_sampler`). The flow carries ``p_{z_0}`` to ``p_x``; the small noise
  ``sigma_s`` keeps ``p_{z_0}`` from being degenerate. Its map need not be the W2 map: for Gaussian ``x``
  it is when ``Cov(x*)`` and ``Cov(x - x*)`` commute (e.g. denoising, as ``sigma_s -> 0``); for a blur,
  where they do not, its MSE stays above ``MMSE + W2^2`` even with the exact velocity.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from jaxbayes._checks import check_finite, check_floating, check_int_range, check_positive, check_same_shape
from jaxbayes.base import Algorithm
from jaxbayes.ot.analytic import sqrtm_psd, w2_gaussians
from jaxbayes.parallel import shard_rows_like
from jaxbayes.sde._interpolants import Interpolant, interpolant_sampler
from jaxbayes.sde._sampling import SamplerOutput
from jaxbayes.sde._trainer import score_trainer
from jaxbayes.typing import Array, ArrayLike, PRNGKey, PyTree

_RECTIFIED_FLOW = Interpolant("linear")


@dataclasses.dataclass(frozen=True)
class GaussianTransport:
    r"""The affine map ``T(u) = target_mean + matrix (u - source_mean)``, optionally between latent spaces.

    Called on a restoration ``x_hat`` (one point or a batch along leading axes), it returns
    ``(1 - alpha) x_hat + alpha decode(T(encode(x_hat)))``: ``alpha = 1`` is the transport, smaller ``alpha``
    trades perceptual quality for MSE (Adrai et al. 2023; for Gaussians the interpolation traces the
    distortion-perception tradeoff exactly, Freirich et al. 2021). A pytree (the arrays are its leaves,
    ``encode``/``decode`` static), so it passes through ``jit`` and ``vmap``.

    Attributes:
      source_mean: ``m_1``, ``(d,)``. target_mean: ``m_2``, ``(d,)``.
      matrix: the symmetric PSD ``A``, ``(d, d)``.
      cost: ``W2^2`` between the two Gaussians, ``E||T(u) - u||^2`` for ``u ~ N(m_1, C_1)``: the MSE the
        transport adds to the MMSE when the restorations are the posterior mean and everything is Gaussian.
      encode, decode: maps into and out of the space where ``T`` acts (``None``: identity).
    """

    source_mean: Array
    target_mean: Array
    matrix: Array
    cost: Array
    encode: Callable[[Array], Array] | None = None
    decode: Callable[[Array], Array] | None = None

    def __call__(self, x_hat: ArrayLike, *, alpha: ArrayLike = 1.0) -> Array:
        x_hat = jnp.asarray(x_hat)
        u = x_hat if self.encode is None else self.encode(x_hat)
        if jnp.shape(u)[-1:] != self.source_mean.shape:
            raise ValueError(f"x_hat must have last axis {self.source_mean.shape[0]} (after encode), "
                             f"got shape {jnp.shape(u)}")
        u = self.target_mean + (u - self.source_mean) @ self.matrix.T
        out = u if self.decode is None else self.decode(u)
        return (1 - alpha) * x_hat + alpha * out


jax.tree_util.register_dataclass(GaussianTransport, data_fields=["source_mean", "target_mean", "matrix", "cost"],
                                 meta_fields=["encode", "decode"])


def gaussian_w2_map(mean1: ArrayLike, cov1: ArrayLike, mean2: ArrayLike, cov2: ArrayLike, *,
                    encode: Callable[[Array], Array] | None = None,
                    decode: Callable[[Array], Array] | None = None) -> GaussianTransport:
    r"""The W2-optimal map from ``N(mean1, cov1)`` to ``N(mean2, cov2)`` (Knott & Smith 1984).

    ``A = C_1^{-1/2} (C_1^{1/2} C_2 C_1^{1/2})^{1/2} C_1^{-1/2}``, symmetric PSD with ``A C_1 A = C_2``; the
    inverse square root is a pseudo-inverse, so a singular ``cov1`` gives the optimal map on its support.
    Differentiable in all inputs, except that gradients are NaN where a covariance has repeated eigenvalues
    (the derivative of the eigendecomposition in :func:`jaxbayes.ot.analytic.sqrtm_psd`); sample covariances
    practically never do.

    Args:
      mean1, mean2: means ``(d,)``. cov1, cov2: covariances ``(d, d)``.
      encode, decode: stored on the result (see :class:`GaussianTransport`).

    Example:
      >>> import jax.numpy as jnp
      >>> t = gaussian_w2_map(jnp.zeros(2), jnp.eye(2), jnp.ones(2), 4.0 * jnp.eye(2))
      >>> t.matrix.tolist(), t(jnp.array([1.0, -1.0])).tolist(), float(t.cost)
      ([[2.0, 0.0], [0.0, 2.0]], [3.0, -1.0], 4.0)
    """
    m1, c1, m2, c2 = (jnp.asarray(v) for v in (mean1, cov1, mean2, cov2))
    dtype = jnp.result_type(m1, c1, m2, c2, float)
    m1, c1, m2, c2 = (v.astype(dtype) for v in (m1, c1, m2, c2))
    d = m1.shape[0] if m1.ndim == 1 else -1
    for name, value, shape in (("mean1", m1, (d,)), ("mean2", m2, (d,)), ("cov1", c1, (d, d)),
                               ("cov2", c2, (d, d))):
        if value.shape != shape or d < 1:
            raise ValueError(f"{name} must have shape {shape if d >= 1 else '(d,) with d >= 1'}, got {value.shape}")
    r1 = sqrtm_psd(c1)
    r1_inv = jnp.linalg.pinv(r1, hermitian=True)
    a = r1_inv @ sqrtm_psd(r1 @ c2 @ r1) @ r1_inv
    return GaussianTransport(m1, m2, 0.5 * (a + a.T), w2_gaussians(m1, c1, m2, c2), encode, decode)


def _moments(name: str, u: Array, jitter: ArrayLike) -> tuple[Array, Array]:
    if u.ndim != 2 or u.shape[0] < 2:
        raise ValueError(f"{name} must be a batch of vectors (N, d) with N >= 2 (after encode), got shape {u.shape}")
    mean = jnp.mean(u, axis=0)
    centred = u - mean
    cov = centred.T @ centred / (u.shape[0] - 1)
    return mean, cov + jitter * jnp.eye(u.shape[1], dtype=u.dtype)


def deep_ot_map(x_hat: ArrayLike, x: ArrayLike, *, encode: Callable[[Array], Array] | None = None,
                decode: Callable[[Array], Array] | None = None, jitter: ArrayLike = 0.0) -> GaussianTransport:
    r"""Deep OT (Adrai et al. 2023): the W2 map between Gaussians fitted to restorations and to clean data.

    Means and (unbiased) covariances of ``encode(x_hat)`` and ``encode(x)``, then :func:`gaussian_w2_map`.
    The two sets need not be paired or of one size. For Gaussian data and ``x_hat`` the posterior mean this
    converges, as the sample sizes grow, to the MSE-optimal perfect-perception estimator (module docstring).

    Args:
      x_hat: restorations ``(N_1, ...)`` from the user's (ideally MMSE) estimator.
      x: clean samples ``(N_2, ...)``.
      encode: batch map into a latent space of vectors ``(N, d)`` (the paper: a VAE encoder over latent
        patches); ``None`` for vector data ``(N, d)`` used as they are.
      decode: the way back, applied to transported latents; ``None``: identity.
      jitter: added to both covariances' diagonals (``>= 0``), for latents that span fewer than ``d``
        directions in few samples.

    Returns:
      A :class:`GaussianTransport`; ``transport(x_hat_new)`` restores new points.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jax.random.normal(jax.random.key(0), (4000, 2)) * jnp.array([2.0, 1.0])
      >>> t = deep_ot_map(0.5 * x[:2000], x[2000:])  # restorations that shrink the data by 2
      >>> bool(jnp.abs(t.matrix - 2.0 * jnp.eye(2)).max() < 0.2)
      True
    """
    check_positive("jitter", jitter, strict=False)
    x_hat, x = jnp.asarray(x_hat), jnp.asarray(x)
    check_floating("x_hat", x_hat)
    check_floating("x", x)
    check_finite("x_hat", x_hat)
    check_finite("x", x)
    u_hat, u = (v if encode is None else encode(v) for v in (x_hat, x))
    m1, c1 = _moments("x_hat", jnp.asarray(u_hat), jitter)
    m2, c2 = _moments("x", jnp.asarray(u), jitter)
    if m1.shape != m2.shape:
        raise ValueError(f"x_hat and x must have one dimension d (after encode), got {m1.shape[0]} and {m2.shape[0]}")
    return gaussian_w2_map(m1, c1, m2, c2, encode=encode, decode=decode)


def pmrf_loss(key: PRNGKey, velocity_fn: Callable[[Array, Array], Array], x_hat: ArrayLike, x: ArrayLike, *,
              sigma_s: ArrayLike = 0.0) -> Array:
    r"""PMRF's rectified-flow loss from posterior means to their clean images (Ohayon et al. 2024).

    ``E_{t ~ U(0,1), eps} ||v(z_t, t) - (x - z_0)||^2`` with ``z_0 = x_hat + sigma_s eps`` and
    ``z_t = (1 - t) z_0 + t x``, averaged over the data dimensions and the batch; its minimiser is
    ``v(z, t) = E[x - z_0 | z_t = z]``.

    Args:
      key: PRNG key for ``t`` and ``eps``.
      velocity_fn: per-point ``v(z, t)``.
      x_hat: posterior-mean predictions ``(B, ...)``; x: the paired clean samples, same shape.
      sigma_s: the standard deviation of the noise added to ``x_hat`` (``>= 0``, small against the data's scale).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x_hat, x = jnp.zeros((8, 2)), jnp.ones((8, 2))
      >>> float(pmrf_loss(jax.random.key(0), lambda z, t: jnp.ones_like(z), x_hat, x))  # the exact velocity
      0.0
    """
    check_positive("sigma_s", sigma_s, strict=False)
    x_hat, x = jnp.asarray(x_hat), jnp.asarray(x)
    check_same_shape("x_hat", x_hat, "x", x)
    if x.ndim < 2:
        raise ValueError(f"x_hat and x must be batches of shape (B, ...), got shape {x.shape}")
    kt, ke = jax.random.split(key)
    t = jax.random.uniform(kt, (x.shape[0],), x.dtype)
    eps = jax.random.normal(ke, x.shape, x.dtype)

    def one(xh, x1, e, ti):
        z0 = xh + sigma_s * e
        a, b, da, db = _RECTIFIED_FLOW.coeffs(ti)
        return jnp.mean((velocity_fn(a * z0 + b * x1, ti) - (da * z0 + db * x1)) ** 2)

    return jnp.mean(jax.vmap(one)(*shard_rows_like((x_hat, x, eps, t), x)))


def pmrf_trainer(velocity_apply: Callable[[PyTree, Array, Array], Array], optimizer: optax.GradientTransformation,
                 *, sigma_s: ArrayLike = 0.0, ema_decay: ArrayLike = 0.999, nan_policy: str = "skip") -> Algorithm:
    r"""Train PMRF's velocity ``velocity_apply(params, z, t)`` on batches ``(x_hat, x)`` of :func:`pmrf_loss`.

    :func:`jaxbayes.sde.score_trainer` on the PMRF loss: ``state = trainer.init(key, params)``,
    ``state, info = trainer.step(key, state, (x_hat, x))``; sample with ``state.ema_params``. Run it with
    :func:`jaxbayes.base.fit` and ``data=(x_hat, x)``.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from jaxbayes.base import fit
      >>> x_hat = jnp.zeros((64, 1)); x = jnp.full((64, 1), 2.0)
      >>> trainer = pmrf_trainer(lambda p, z, t: p + 0 * z, optax.adam(0.1), ema_decay=0.0)
      >>> state, infos = fit(jax.random.key(0), trainer, trainer.init(jax.random.key(1), jnp.zeros(1)), 100,
      ...                    data=(x_hat, x), batch_size=16)
      >>> round(float(state.params[0]), 1)  # the constant velocity x - x_hat
      2.0
    """
    check_positive("sigma_s", sigma_s, strict=False)

    def loss_fn(params, key, batch):
        x_hat, x = batch
        return pmrf_loss(key, lambda z, t: velocity_apply(params, z, t), x_hat, x, sigma_s=sigma_s)

    return score_trainer(loss_fn, optimizer, ema_decay=ema_decay, nan_policy=nan_policy)


def pmrf_sampler(key: PRNGKey, velocity_fn: Callable[[Array, Array], Array], x_hat: ArrayLike, *,
                 sigma_s: ArrayLike = 0.0, num_steps: int = 100) -> SamplerOutput:
    r"""PMRF restoration of one posterior mean: Euler on ``dz = v(z, t) dt`` from ``z_0 = x_hat + sigma_s eps``.

    ``num_steps`` uniform steps of ``[0, 1]`` (:func:`jaxbayes.sde.interpolant_sampler` with no noise);
    ``sigma_s`` as in training. ``nfe = num_steps``. Batch with ``jax.vmap`` over keys and ``x_hat``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> v = lambda z, t: jnp.ones_like(z)  # every restoration moves by (1, 1)
      >>> pmrf_sampler(jax.random.key(0), v, jnp.zeros(2), num_steps=4).samples.tolist()
      [1.0, 1.0]
    """
    check_positive("sigma_s", sigma_s, strict=False)
    num_steps = check_int_range("num_steps", num_steps, 1)
    x_hat = jnp.asarray(x_hat)
    check_floating("x_hat", x_hat)
    check_finite("x_hat", x_hat)
    k_noise, k_flow = jax.random.split(key)
    z0 = x_hat + sigma_s * jax.random.normal(k_noise, x_hat.shape, x_hat.dtype)
    return interpolant_sampler(k_flow, velocity_fn, _RECTIFIED_FLOW, x_hat.shape, x_init=z0, num_steps=num_steps,
                               dtype=x_hat.dtype)


__all__ = ["GaussianTransport", "deep_ot_map", "gaussian_w2_map", "pmrf_loss", "pmrf_sampler", "pmrf_trainer"]
