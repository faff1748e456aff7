"""Sparse subspace variational inference (SSVI) for Bayesian neural networks.

Li et al. (2024), "Training Bayesian Neural Networks with Sparse Subspace Variational Inference". The posterior
is mean-field Gaussian on a sparse subspace: each masked layer (by default every parameter with ``ndim >= 2``,
i.e. kernels) keeps exactly ``round(density * size)`` active weights; the others are exactly zero. Training
alternates

1. ``update_every`` optimiser steps of the masked ELBO (gradients and optimiser state live on the subspace), and
2. a subspace update: in every masked layer remove the ``k = floor(zeta_t * n_active)`` active weights with the
   lowest *removal score* and add the ``k`` previously inactive weights with the largest ELBO-gradient magnitude
   ``|dL/dmu|`` (computed densely), re-initialising their mean to 0 and std to ``init_scale``, and zeroing their
   optimiser state. ``zeta_t = drop_fraction * (1 + cos(pi t / T)) / 2`` is cosine-annealed over
   ``anneal_steps``; after that the subspace is fixed.

Removal scores (higher = keep): ``"abs_mean"`` ``|mu|``; ``"snr"`` ``|mu| / sigma``; ``"abs_expectation"``
``E|theta|`` of the folded normal; ``"folded_snr"`` ``E|theta| / sd|theta|``; ``"second_moment"``
``E[theta^2] = mu^2 + sigma^2``.

Honest cost note: the masks are applied to dense kernels (``W * mask``), so on CPUs, GPUs and TPUs a step costs
the same wall-clock time as dense VI; the FLOP count of a sparse kernel (reported by :func:`sparsity_report`)
only turns into speed with sparse kernels, which this module does not provide. What SSVI saves here is the
number of variational parameters that carry information (memory of a sparse export, and the model's size).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbayes._checks import check_choice, check_int_range, check_positive, concrete_value
from jaxbayes.base import guarded_update
from jaxbayes.typing import Array, ArrayLike, PRNGKey, PyTree
from jaxbayes.vi._bnn import bnn_init, bnn_objective, predict
from jaxbayes.vi._meanfield import MeanFieldNormal
from jaxbayes.vi._state import kl_weight_schedule

CRITERIA = ("abs_mean", "snr", "abs_expectation", "folded_snr", "second_moment")


def folded_normal_moments(mu: ArrayLike, sigma: ArrayLike) -> tuple[Array, Array]:
    """Mean and standard deviation of ``|theta|`` for ``theta ~ N(mu, sigma^2)`` (the folded normal).

    ``E|theta| = sigma sqrt(2/pi) exp(-mu^2 / 2 sigma^2) + mu (1 - 2 Phi(-mu / sigma))``,
    ``Var|theta| = mu^2 + sigma^2 - (E|theta|)^2``.
    """
    mu, sigma = jnp.asarray(mu), jnp.asarray(sigma)
    mean = (sigma * math.sqrt(2 / math.pi) * jnp.exp(-0.5 * (mu / sigma) ** 2)
            + mu * (1.0 - 2.0 * jax.scipy.stats.norm.cdf(-mu / sigma)))
    var = jnp.maximum(mu**2 + sigma**2 - mean**2, 0.0)
    return mean, jnp.sqrt(var)


def removal_score(mu: ArrayLike, sigma: ArrayLike, criterion: str = "folded_snr") -> Array:
    """Score of each weight under a removal criterion (higher = more worth keeping); see module docstring."""
    check_choice("criterion", criterion, CRITERIA)
    mu, sigma = jnp.asarray(mu), jnp.asarray(sigma)
    if criterion == "abs_mean":
        return jnp.abs(mu)
    if criterion == "snr":
        return jnp.abs(mu) / sigma
    if criterion == "second_moment":
        return mu**2 + sigma**2
    mean, sd = folded_normal_moments(mu, sigma)
    return mean if criterion == "abs_expectation" else mean / jnp.maximum(sd, jnp.finfo(sd.dtype).tiny)


def default_sparse_filter(path: tuple, leaf: Array) -> bool:
    """Mask kernels (parameters with ``ndim >= 2``); keep biases and scales dense."""
    return jnp.ndim(leaf) >= 2


def random_mask(key: PRNGKey, params: PyTree, density: ArrayLike, *,
                sparse_filter: Callable = default_sparse_filter) -> PyTree:
    """A 0/1 mask pytree: exactly ``max(1, round(density * size))`` random ones in each filtered leaf, all
    ones elsewhere.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> m = random_mask(jax.random.key(0), {"kernel": jnp.zeros((10, 10)), "bias": jnp.zeros(10)}, 0.1)
      >>> int(m["kernel"].sum()), int(m["bias"].sum())
      (10, 10)
    """
    d = _check_density(density)
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    treedef = jax.tree.structure(params)
    keys = jax.random.split(key, len(leaves))
    out = []
    for (path, leaf), k in zip(leaves, keys, strict=True):
        if not sparse_filter(path, leaf):
            out.append(jnp.ones(leaf.shape, leaf.dtype))
            continue
        n_active = max(1, int(round(d * leaf.size)))
        rank = jnp.argsort(jax.random.permutation(k, leaf.size))
        out.append((rank < n_active).astype(leaf.dtype).reshape(leaf.shape))
    return jax.tree.unflatten(treedef, out)


def _check_density(density: ArrayLike) -> float:
    d = concrete_value(density)
    if d is None:
        raise TypeError("density must be a concrete number (it fixes the number of active weights)")
    d = float(d)
    if not (0.0 < d <= 1.0) or not np.isfinite(d):
        raise ValueError(f"density must be in (0, 1], got {d}")
    return d


def _rank(values: Array) -> Array:
    """0-based rank of each entry in ascending order (ties broken by position)."""
    order = jnp.argsort(values, stable=True)
    return jnp.zeros(values.shape, jnp.int32).at[order].set(jnp.arange(values.size, dtype=jnp.int32))


def swap_weights(mask: Array, score: Array, grad_abs: Array, drop_fraction: ArrayLike) -> tuple[Array, Array]:
    """One layer's subspace update: drop the ``k`` active entries with the lowest ``score`` and add the ``k``
    inactive entries with the largest ``grad_abs``, ``k = min(floor(drop_fraction * n_active), n_inactive)``.

    Returns ``(new_mask, added)`` (0/1 arrays of the layer's shape); the number of active entries is unchanged.

    Example:
      >>> import jax.numpy as jnp
      >>> new, added = swap_weights(jnp.array([1., 1., 0., 0.]), jnp.array([5., 1., 0., 0.]),
      ...                           jnp.array([0., 0., 3., 9.]), 0.5)
      >>> new.tolist(), added.tolist()
      ([1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0])
    """
    shape, dtype = mask.shape, mask.dtype
    m = mask.reshape(-1) > 0
    n_active = jnp.sum(m)
    k = jnp.minimum(jnp.floor(drop_fraction * n_active).astype(jnp.int32), m.size - n_active)
    inf = jnp.asarray(jnp.inf, score.dtype)
    remove = (_rank(jnp.where(m, score.reshape(-1), inf)) < k) & m
    g = jnp.where(m, -jnp.inf, grad_abs.reshape(-1).astype(score.dtype))
    add = (_rank(-g) < k) & ~m
    new = (m & ~remove) | add
    return new.astype(dtype).reshape(shape), add.astype(dtype).reshape(shape)


def drop_fraction_schedule(step: ArrayLike, *, drop_fraction: ArrayLike, anneal_steps: int) -> Array:
    """Cosine-annealed drop fraction ``zeta_t = drop_fraction (1 + cos(pi min(t, T) / T)) / 2``."""
    t = jnp.minimum(jnp.asarray(step, jnp.result_type(float)), anneal_steps)
    return drop_fraction * 0.5 * (1.0 + jnp.cos(jnp.pi * t / anneal_steps))


class SSVIState(NamedTuple):
    """State of :func:`ssvi`.

    Attributes:
      q: :class:`MeanFieldNormal` over the module's parameters (masked entries hold mean 0).
      mask: 0/1 pytree shaped like the parameters.
      opt_state: optax state (zero on inactive coordinates).
      step, num_skipped, nonfinite_step: as in :class:`jaxbayes.vi.VIState`.
      num_mask_updates: number of subspace updates done.
    """

    q: MeanFieldNormal
    mask: PyTree
    opt_state: PyTree
    step: Array
    num_skipped: Array
    nonfinite_step: Array
    num_mask_updates: Array


class SSVIInfo(NamedTuple):
    """Per-step diagnostics: objective, expected_loglik, kl (active coordinates), kl_weight, grad_norm,
    finite, mask_updated (a subspace update happened after this step), drop_fraction (``zeta_t``)."""

    objective: Array
    expected_loglik: Array
    kl: Array
    kl_weight: Array
    grad_norm: Array
    finite: Array
    mask_updated: Array
    drop_fraction: Array


class SSVIAlgorithm(NamedTuple):
    """``init(key, x_example) -> SSVIState``; ``step(key, state, (x, y)) -> (SSVIState, SSVIInfo)``;
    ``predict(key, state, x, *, num_samples, chunk_size)``; ``nan_policy``."""

    init: Callable
    step: Callable
    predict: Callable
    nan_policy: str = "skip"


def ssvi(
    module: nn.Module,
    optimizer: optax.GradientTransformation,
    *,
    density: float,
    num_data: int,
    update_every: int = 100,
    anneal_steps: int = 1000,
    drop_fraction: ArrayLike = 0.5,
    criterion: str = "folded_snr",
    sparse_filter: Callable = default_sparse_filter,
    method: str = "local",
    likelihood: str = "categorical",
    noise_scale: ArrayLike = 1.0,
    prior_scale: ArrayLike = 1.0,
    init_scale: ArrayLike = 1e-3,
    kl_weight: ArrayLike = 1.0,
    warmup_steps: int = 0,
    temperature: ArrayLike = 1.0,
    nan_policy: str = "skip",
) -> SSVIAlgorithm:
    """Sparse subspace VI for a flax module (see the module docstring for the algorithm).

    Args:
      module, optimizer, num_data, method, likelihood, noise_scale, prior_scale, init_scale, kl_weight,
        warmup_steps, temperature, nan_policy: as in :func:`jaxbayes.vi.bnn_vi`.
      density: fraction of active weights per masked layer, in ``(0, 1]``.
      update_every: optimiser steps between subspace updates.
      anneal_steps: steps over which the drop fraction is cosine-annealed to 0 (no updates afterwards).
      drop_fraction: initial fraction of active weights swapped per update.
      criterion: removal score, one of ``"abs_mean"``, ``"snr"``, ``"abs_expectation"``, ``"folded_snr"``,
        ``"second_moment"``.
      sparse_filter: ``(path, leaf) -> bool`` choosing the parameters to sparsify.

    Example:
      >>> import jax, jax.numpy as jnp, optax, flax.linen as nn
      >>> alg = ssvi(nn.Dense(4), optax.adam(1e-2), density=0.25, num_data=8, update_every=1)
      >>> x, y = jnp.ones((8, 8)), jnp.zeros(8, jnp.int32)
      >>> state = alg.init(jax.random.key(0), x)
      >>> state, info = alg.step(jax.random.key(1), state, (x, y))
      >>> int(state.mask["kernel"].sum()), bool(info.mask_updated)
      (8, True)
    """
    density = _check_density(density)
    check_choice("criterion", criterion, CRITERIA)
    check_choice("nan_policy", nan_policy, ("skip", "raise"))
    num_data = check_int_range("num_data", num_data, 1)
    update_every = check_int_range("update_every", update_every, 1)
    anneal_steps = check_int_range("anneal_steps", anneal_steps, 1)
    warmup_steps = check_int_range("warmup_steps", warmup_steps, 0)
    check_positive("drop_fraction", drop_fraction, strict=False)
    dv = concrete_value(drop_fraction)
    if dv is not None and float(dv) > 1.0:
        raise ValueError(f"drop_fraction must be in [0, 1], got {float(dv)}")
    check_positive("init_scale", init_scale)
    opts = dict(num_data=num_data, method=method, likelihood=likelihood, noise_scale=noise_scale,
                prior_scale=prior_scale, temperature=temperature)

    def init(key: PRNGKey, x_example: ArrayLike) -> SSVIState:
        k_init, k_mask = jax.random.split(key)
        q = bnn_init(k_init, module, x_example, init_scale=init_scale)
        mask = random_mask(k_mask, q.mean, density, sparse_filter=sparse_filter)
        q = q._replace(mean=jax.tree.map(jnp.multiply, q.mean, mask))
        zero = jnp.zeros((), jnp.int32)
        return SSVIState(q, mask, optimizer.init(q), zero, zero, jnp.full((), -1, jnp.int32), zero)

    def step(key: PRNGKey, state: SSVIState, batch) -> tuple[SSVIState, SSVIInfo]:
        expected = jax.tree.structure(jax.eval_shape(optimizer.init, state.q))
        if expected != jax.tree.structure(state.opt_state) or (
                jax.tree.structure(state.mask) != jax.tree.structure(state.q.mean)):
            raise ValueError("the parameter pytree structure changed since init; call init again")
        beta = kl_weight_schedule(kl_weight, warmup_steps, state.step)

        def loss(q):
            value, ll, kl = bnn_objective(key, module, q, batch, mask=state.mask, kl_weight=beta, **opts)
            return -value, (value, ll, kl)

        # Gradient with respect to the *effective* parameters; inactive entries of dL/dmu are what the
        # addition criterion needs, the masked gradient is what the optimiser sees.
        (_, (value, ll, kl)), dense = jax.value_and_grad(loss, has_aux=True)(state.q)
        grads = MeanFieldNormal(jax.tree.map(jnp.multiply, dense.mean, state.mask),
                          jax.tree.map(jnp.multiply, dense.log_scale, state.mask))
        new, finite = guarded_update(optimizer, state, grads, value, nan_policy)
        new = new._replace(q=new.q._replace(mean=jax.tree.map(jnp.multiply, new.q.mean, state.mask)))
        zeta = drop_fraction_schedule(state.step, drop_fraction=drop_fraction, anneal_steps=anneal_steps)
        do_update = ((state.step + 1) % update_every == 0) & (state.step < anneal_steps) & finite

        def update(st):
            return _update_subspace(st, dense.mean, zeta)

        new = jax.lax.cond(do_update, update, lambda st: st, new)
        info = SSVIInfo(value, ll, kl, beta, optax.tree.norm(grads), finite, do_update, zeta)
        return new, info

    def _update_subspace(st: SSVIState, grad_mean: PyTree, zeta: Array) -> SSVIState:
        paths = jax.tree_util.tree_flatten_with_path(st.q.mean)[0]
        treedef = jax.tree.structure(st.q.mean)
        means, log_scales = jax.tree.leaves(st.q.mean), jax.tree.leaves(st.q.log_scale)
        masks, g = jax.tree.leaves(st.mask), jax.tree.leaves(grad_mean)
        new_masks, new_means, new_ls, keep = [], [], [], []
        for (path, leaf), m, ls, k, gl in zip(paths, means, log_scales, masks, g, strict=True):
            if not sparse_filter(path, leaf):
                new_masks.append(k)
                new_means.append(m)
                new_ls.append(ls)
                keep.append(jnp.ones_like(k))
                continue
            score = removal_score(m, jnp.exp(ls), criterion)
            new_k, added = swap_weights(k, score, jnp.abs(gl), zeta)
            changed = new_k != k
            new_masks.append(new_k)
            new_means.append(jnp.where(added > 0, 0.0, m) * new_k)
            new_ls.append(jnp.where(added > 0, jnp.log(jnp.asarray(init_scale, ls.dtype)), ls))
            keep.append((~changed).astype(k.dtype))
        unflat = lambda xs: jax.tree.unflatten(treedef, xs)
        keep_q = MeanFieldNormal(unflat(keep), unflat(keep))
        opt_state = optax.tree_utils.tree_map_params(optimizer, lambda p, kk: p * kk, st.opt_state, keep_q,
                                                     transform_non_params=lambda p: p)
        q = MeanFieldNormal(unflat(new_means), unflat(new_ls))
        return st._replace(q=q, mask=unflat(new_masks), opt_state=opt_state,
                           num_mask_updates=st.num_mask_updates + 1)

    def predict_fn(key: PRNGKey, state: SSVIState, x: ArrayLike, *, num_samples: int = 32,
                   chunk_size: int = 8) -> Array:
        return predict(key, module, state.q, x, num_samples=num_samples, chunk_size=chunk_size, method=method,
                       mask=state.mask, likelihood=likelihood)

    return SSVIAlgorithm(init, step, predict_fn, nan_policy)


def sparsity_report(mask: PyTree, *, sparse_filter: Callable = default_sparse_filter) -> dict:
    """Density per masked layer, overall density and a FLOP estimate (needs a concrete mask).

    FLOPs are per example and per output position for the masked kernels under local reparameterisation:
    ``4 * nnz`` (a mean and a variance product, multiply and add each) against ``4 * size`` dense. Dense
    masked kernels execute the full ``4 * size`` regardless; the sparse figure is what a sparse kernel would do.
    """
    layers, nnz_total, size_total = {}, 0, 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(mask)[0]:
        if not sparse_filter(path, leaf):
            continue
        nnz, size = int(np.asarray(leaf).sum()), int(np.size(leaf))
        layers[jax.tree_util.keystr(path)] = nnz / size
        nnz_total += nnz
        size_total += size
    return {"density_per_layer": layers, "density": nnz_total / max(size_total, 1), "nnz": nnz_total,
            "size": size_total, "flops_sparse_estimate": 4 * nnz_total, "flops_dense": 4 * size_total}


__all__ = [
    "CRITERIA",
    "SSVIAlgorithm",
    "SSVIInfo",
    "SSVIState",
    "drop_fraction_schedule",
    "folded_normal_moments",
    "random_mask",
    "removal_score",
    "sparsity_report",
    "ssvi",
    "swap_weights",
]
