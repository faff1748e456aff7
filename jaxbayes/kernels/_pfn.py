r"""Prior-data fitted networks (Müller et al., "Transformers Can Do Bayesian Inference", ICLR 2022).

A PFN is a transformer trained once, on data sets drawn from a prior, to output the posterior predictive
distribution: for a prior ``p(D) = int p(D | phi) p(phi) dphi`` over data sets, minimising the prior-data
negative log-likelihood

``L(theta) = E_{D ~ p(D), (D_c, D_q) split} [ - sum_{(x, y) in D_q} log q_theta(y | x, D_c) ]``

makes ``q_theta(y | x, D_c)`` approximate the Bayesian posterior predictive ``p(y | x, D_c)`` (the loss is
the expected KL divergence to it plus a constant). Prediction for a new data set is then one forward pass.

The pieces here:

* :class:`GPPrior`: ``x ~ U[-1, 1]^d``, lengthscale ``l ~ LogUniform(l_min, l_max)``, ``f ~ GP(0, k_l)`` with
  the RBF kernel :func:`~jaxbayes.kernels.rbf` and ``y = f(x) + eps``, ``eps ~ N(0, noise)``; ``y`` is drawn
  exactly as ``N(0, K_l + noise I)`` through :func:`~jaxbayes.kernels.jittered_cholesky`. Its
  :meth:`GPPrior.predictive_logpdf` is the exact posterior predictive marginalised over the lengthscale (a
  midpoint rule in ``log l``), the Bayes-optimal answer a PFN trained on this prior approaches.
* :class:`PFNTransformer`: a flax transformer without positional encodings (the data set is a set). A
  context token embeds ``(x, y)``, a query token embeds ``x`` only; every position attends to the context
  positions only (context to context, query to context: queries never see each other), as in the paper.
* :class:`BarDistribution`: the "Riemann" output: logits over ``B`` buckets with borders ``b_0 < ... < b_B``
  (quantiles of the prior's ``y``, :func:`bar_borders`), density ``p_i / (b_{i+1} - b_i)`` on bucket ``i``.
  With ``tails=True`` (as in the paper, for full support) the two outer buckets are replaced by half-normals
  on ``(-inf, b_1]`` and ``[b_{B-1}, inf)`` holding the same mass, with the scale that puts half of it
  inside the original bucket.
* :func:`pfn`: training as an :class:`~jaxbayes.base.Algorithm`; every step draws a fresh batch of data
  sets from the prior, each with its own random number of context points in ``[min_context, num_points)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.scipy.special import ndtri

from jaxbayes._checks import check_choice, check_int_range, check_ndim, check_positive
from jaxbayes.base import NAN_POLICIES, guarded_update, zero_counters
from jaxbayes.kernels._bar_distribution import BarDistribution, bar_borders
from jaxbayes.kernels._gp import gp_posterior, log_marginal_likelihood
from jaxbayes.kernels._linalg import jittered_cholesky
from jaxbayes.kernels._operator import rbf
from jaxbayes.parallel import sample_keys
from jaxbayes.typing import Array, ArrayLike, PRNGKey, PyTree


# ----------------------------------------------------------------------------------------------- the prior
class GPPriorDraw(NamedTuple):
    """One data set from :class:`GPPrior` (or a stack of them): inputs ``x`` ``(..., n, d)``, targets ``y``
    ``(..., n)`` and the ``lengthscale`` it was drawn with."""

    x: Array
    y: Array
    lengthscale: Array


class DataPrior(Protocol):
    """A prior over data sets: ``sample(key, num_points)`` returns one data set with fields ``x`` ``(n, d)``
    and ``y`` ``(n,)``; ``num_features`` is ``d``."""

    num_features: int

    def sample(self, key: PRNGKey, num_points: int) -> GPPriorDraw: ...


@dataclasses.dataclass(frozen=True)
class GPPrior:
    """GP prior over regression data sets on ``[-1, 1]^d`` with a log-uniform lengthscale.

    Attributes:
      num_features: input dimension ``d``.
      lengthscale_min, lengthscale_max: support of the log-uniform lengthscale prior (equal: a fixed one).
      variance: RBF signal variance.
      noise: observation-noise variance.

    Example:
      >>> import jax
      >>> draw = GPPrior(lengthscale_min=0.2, lengthscale_max=0.2).sample(jax.random.key(0), 5)
      >>> draw.x.shape, draw.y.shape, round(float(draw.lengthscale), 3)
      ((5, 1), (5,), 0.2)
    """

    num_features: int = 1
    lengthscale_min: float = 0.1
    lengthscale_max: float = 1.0
    variance: float = 1.0
    noise: float = 0.01

    def __post_init__(self):
        check_int_range("num_features", self.num_features, 1)
        for name in ("lengthscale_min", "lengthscale_max", "variance", "noise"):
            check_positive(name, getattr(self, name))
        if self.lengthscale_min > self.lengthscale_max:
            raise ValueError(f"lengthscale_min must be <= lengthscale_max, got {self.lengthscale_min} > "
                             f"{self.lengthscale_max}")

    def _kernel_params(self, lengthscale: ArrayLike) -> dict:
        return {"lengthscale": lengthscale, "variance": self.variance}

    def sample(self, key: PRNGKey, num_points: int) -> GPPriorDraw:
        """One data set of ``num_points`` points: ``y ~ N(0, K_l + noise I)`` drawn exactly (Cholesky).

        ``noise > 0`` keeps ``K_l + noise I`` positive definite (condition number at most
        ``1 + n variance / noise``), so the factorisation takes no jitter (one try): a jitter would silently
        change the prior; a failed factorisation gives NaN instead (a training step on it is skipped).
        """
        num_points = check_int_range("num_points", num_points, 1)
        n, d = num_points, self.num_features
        dtype = jnp.result_type(float)
        # one uniform vector per data set, pushed through inverse CDFs (log l, x, and ndtri for the normals):
        # it compiles to about half the code of three separate random calls, and every step compiles it
        u = jax.random.uniform(key, (1 + n * d + n,), dtype, minval=jnp.finfo(dtype).tiny)
        lo, hi = math.log(self.lengthscale_min), math.log(self.lengthscale_max)
        lengthscale = jnp.exp(lo + (hi - lo) * u[0])
        x = (2 * u[1:1 + n * d] - 1).reshape(n, d)
        k = rbf(x, x, self._kernel_params(lengthscale))
        chol = jittered_cholesky(k, shift=self.noise, max_tries=1, name="K").chol
        return GPPriorDraw(x, chol @ ndtri(u[1 + n * d:]), lengthscale)

    def predictive_logpdf(self, x_context: ArrayLike, y_context: ArrayLike, x_query: ArrayLike,
                          y_query: ArrayLike, *, num_lengthscales: int = 64) -> Array:
        r"""Exact posterior predictive ``log p(y_q | x_q, D_c)`` per query point, marginalised over the
        lengthscale: ``p(y_q | D_c) = sum_j w_j N(y_q; mu_j, s2_j + noise)`` with ``mu_j, s2_j`` the GP
        posterior at lengthscale ``l_j`` and ``w_j ∝ p(y_c | x_c, l_j)``, ``log l_j`` the midpoints of
        ``num_lengthscales`` equal cells of ``[log l_min, log l_max]`` (the prior is uniform in ``log l``).

        Example:
          >>> import jax.numpy as jnp
          >>> prior = GPPrior(lengthscale_min=0.5, lengthscale_max=0.5, noise=0.1)
          >>> lp = prior.predictive_logpdf(jnp.zeros((1, 1)), jnp.ones(1), jnp.zeros((1, 1)), jnp.ones(1))
          >>> round(float(lp[0]), 4)  # N(1; 1/1.1, 0.1/1.1 + 0.1)
          -0.1126
        """
        num_lengthscales = check_int_range("num_lengthscales", num_lengthscales, 1)
        xc, yc, xq = _check_task(x_context, y_context, x_query, self.num_features)
        yq = jnp.asarray(y_query, xq.dtype)
        if yq.shape != (xq.shape[0],):
            raise ValueError(f"y_query must have shape ({xq.shape[0]},), got {yq.shape}")
        lo, hi = math.log(self.lengthscale_min), math.log(self.lengthscale_max)
        log_ls = lo + (jnp.arange(num_lengthscales, dtype=xq.dtype) + 0.5) / num_lengthscales * (hi - lo)

        def at(log_l):
            p = self._kernel_params(jnp.exp(log_l))
            kcc = rbf(xc, xc, p)
            lml = log_marginal_likelihood(kcc, yc, noise=self.noise)
            post = gp_posterior(kcc, yc, rbf(xq, xc, p), jnp.full(xq.shape[0], self.variance, xq.dtype),
                                noise=self.noise, full_cov=False)
            return lml, jax.scipy.stats.norm.logpdf(yq, post.mean, jnp.sqrt(post.var + self.noise))

        lml, logp = jax.vmap(at)(log_ls)
        return jax.nn.logsumexp(jax.nn.log_softmax(lml)[:, None] + logp, axis=0)


def sample_datasets(key: PRNGKey, prior: DataPrior, num_datasets: int, num_points: int) -> GPPriorDraw:
    """``num_datasets`` data sets from ``prior``, stacked; data set ``i`` uses ``fold_in(key, i)``.

    Example:
      >>> import jax
      >>> sample_datasets(jax.random.key(0), GPPrior(), 4, 10).y.shape
      (4, 10)
    """
    num_datasets = check_int_range("num_datasets", num_datasets, 1)
    num_points = check_int_range("num_points", num_points, 1)
    return jax.vmap(lambda k: prior.sample(k, num_points))(sample_keys(key, num_datasets))


# -------------------------------------------------------------------------------------------- the network
class PFNTransformer(nn.Module):
    """Transformer ``(x, y, is_context) -> logits`` over the bar buckets, one row per point.

    ``x`` ``(..., N, d)``, ``y`` ``(..., N)``, ``is_context`` ``(..., N)`` booleans. Context tokens embed
    ``(x, y)``, query tokens ``x`` alone (their ``y`` is never read); pre-LayerNorm blocks of multi-head
    attention and a GELU MLP, and a zero-initialised linear head (uniform logits at first); the attention
    mask lets every position attend to the context positions only.
    No positional encoding: the output is equivariant to permutations of the points.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> net = PFNTransformer(num_buckets=8, d_model=16, num_heads=2, num_layers=1)
      >>> args = jnp.zeros((5, 1)), jnp.zeros(5), jnp.arange(5) < 3
      >>> params = net.init(jax.random.key(0), *args)
      >>> net.apply(params, *args).shape
      (5, 8)
    """

    num_buckets: int = 100
    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 4
    mlp_dim: int = 128

    @nn.compact
    def __call__(self, x: Array, y: Array, is_context: Array) -> Array:
        ctx = jnp.asarray(is_context, bool)
        y_in = jnp.where(ctx, y, 0.0)[..., None]
        h = nn.Dense(self.d_model, name="embed_x")(x)
        h = h + ctx[..., None] * nn.Dense(self.d_model, name="embed_y")(y_in)
        mask = ctx[..., None, None, :]  # (..., heads, query, key): attend to context keys only
        for _ in range(self.num_layers):
            a = nn.LayerNorm()(h)
            h = h + nn.MultiHeadDotProductAttention(num_heads=self.num_heads, qkv_features=self.d_model)(
                a, a, mask=mask)
            a = nn.LayerNorm()(h)
            h = h + nn.Dense(self.d_model)(nn.gelu(nn.Dense(self.mlp_dim)(a)))
        # a zero head starts at uniform logits: the prior's marginal of y (the borders are its quantiles)
        head = nn.Dense(self.num_buckets, kernel_init=nn.initializers.zeros, name="head")
        return head(nn.LayerNorm()(h))


# ----------------------------------------------------------------------------------------- the algorithm
class PFNState(NamedTuple):
    """State of :func:`pfn`.

    Attributes:
      params: the transformer's flax variables.
      borders: ``(B + 1,)`` bucket borders (estimated from prior samples at ``init``; fixed).
      opt_state: the optax state.
      step: steps taken (int32).
      num_skipped: steps whose update was dropped because the gradient was non-finite.
      nonfinite_step: first such step, ``-1`` if none.
    """

    params: PyTree
    borders: Array
    opt_state: optax.OptState
    step: Array
    num_skipped: Array
    nonfinite_step: Array


class PFNInfo(NamedTuple):
    """Per-step diagnostics: the prior-data NLL ``loss`` per query point of the step's batch (before the
    update), the gradient's global norm ``grad_norm``, and whether it was ``finite``."""

    loss: Array
    grad_norm: Array
    finite: Array


class PFN(NamedTuple):
    """A prior-data fitted network as an :class:`~jaxbayes.base.Algorithm` (see :func:`pfn`) with ``predict``
    and ``loss``."""

    init: Callable
    step: Callable
    nan_policy: str
    predict: Callable
    loss: Callable


def _check_task(x_context, y_context, x_query, num_features: int | None = None):
    xc, xq = jnp.asarray(x_context), jnp.asarray(x_query)
    check_ndim("x_context", xc, 2)
    check_ndim("x_query", xq, 2)
    yc = jnp.asarray(y_context, xc.dtype)
    if xc.shape[0] < 1 or yc.shape != (xc.shape[0],):
        raise ValueError(f"y_context must have shape ({xc.shape[0]},) and x_context at least one row, got "
                         f"x_context {xc.shape} and y_context {yc.shape}")
    d = xc.shape[1] if num_features is None else num_features
    if xc.shape[1] != d or xq.shape[1] != d:
        raise ValueError(f"x_context and x_query must have {d} features, got {xc.shape} and {xq.shape}")
    return xc, yc, xq


def prior_batch(key: PRNGKey, prior: DataPrior, batch_size: int, num_points: int,
                min_context: int) -> tuple[Array, Array, Array]:
    """``(x, y, is_context)`` for one training step: ``batch_size`` prior data sets of ``num_points``
    points; data set ``i`` (key ``fold_in(key, i)``) has its first ``n_i ~ U{min_context, ..., num_points - 1}``
    points as context (the points are exchangeable, so that is a uniformly random split)."""

    def one(k):
        k_data, k_split = jax.random.split(k)
        draw = prior.sample(k_data, num_points)
        u = jax.random.uniform(k_split, (), draw.y.dtype)
        n_context = min_context + jnp.floor(u * (num_points - min_context)).astype(jnp.int32)
        return draw.x, draw.y, jnp.arange(num_points) < n_context

    return jax.vmap(one)(sample_keys(key, batch_size))


def pfn_loss(model: nn.Module, params: PyTree, borders: Array, x: Array, y: Array, is_context: Array, *,
             tails: bool = True) -> Array:
    """Mean ``-log q(y | x, context)`` over the query points (``~is_context``) of a batch of data sets."""
    bar = BarDistribution(model.apply(params, x, y, is_context), borders, tails)
    query = ~jnp.asarray(is_context, bool)
    return -jnp.sum(jnp.where(query, bar.log_prob(y), 0.0)) / jnp.maximum(jnp.sum(query), 1)


def pfn_predict(model: nn.Module, params: PyTree, borders: Array, x_context: ArrayLike, y_context: ArrayLike,
                x_query: ArrayLike, *, tails: bool = True) -> BarDistribution:
    """The predictive :class:`BarDistribution` at ``x_query`` ``(m, d)`` given one context data set ``(x_context
    (n, d), y_context (n,))``: one forward pass over the ``n + m`` tokens."""
    xc, yc, xq = _check_task(x_context, y_context, x_query)
    n = xc.shape[0]
    x = jnp.concatenate([xc, xq.astype(xc.dtype)], axis=0)
    y = jnp.concatenate([yc, jnp.zeros(xq.shape[0], yc.dtype)])
    logits = model.apply(params, x, y, jnp.arange(x.shape[0]) < n)
    return BarDistribution(logits[n:], borders, tails)


def pfn(prior: DataPrior, *, model: PFNTransformer | None = None,
        optimizer: optax.GradientTransformation | None = None, batch_size: int = 32, num_points: int = 32,
        min_context: int = 1, num_border_samples: int = 1000, tails: bool = True,
        nan_policy: str = "skip") -> PFN:
    """Train a prior-data fitted network on ``prior`` (see the module docstring for the maths).

    Args:
      prior: a prior over data sets (:class:`GPPrior` or any object with ``num_features`` and
        ``sample(key, num_points) -> (x, y, ...)`` fields ``x``, ``y``).
      model: the transformer (default ``PFNTransformer()``: 4 layers, ``d_model`` 64, 100 buckets).
      optimizer: optax optimiser (default ``adam(1e-3)``).
      batch_size: data sets per step.
      num_points: points per data set (context plus queries).
      min_context: fewest context points of a training data set (``1 <= min_context < num_points``).
      num_border_samples: prior data sets whose pooled ``y`` give the bucket borders (quantiles).
      tails: half-normal outer buckets (full support).
      nan_policy: ``"skip"`` or ``"raise"``, as for every :class:`~jaxbayes.base.Algorithm`.

    Returns:
      :class:`PFN`: ``init(key) -> PFNState`` (borders from prior samples, network initialised),
      ``step(key, state, batch=None) -> (PFNState, PFNInfo)`` (one optimiser step on a fresh prior batch;
      ``batch=(x, y, is_context)`` trains on a given one instead), run by :func:`jaxbayes.base.fit`;
      ``predict(state, x_context, y_context, x_query) -> BarDistribution`` and
      ``loss(params, borders, x, y, is_context)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbayes.base import fit
      >>> net = PFNTransformer(num_buckets=16, d_model=16, num_heads=2, num_layers=1, mlp_dim=32)
      >>> alg = pfn(GPPrior(), model=net, batch_size=8, num_points=16, num_border_samples=100)
      >>> state, info = fit(jax.random.key(1), alg, jax.jit(alg.init)(jax.random.key(0)), 5)
      >>> bar = jax.jit(alg.predict)(state, jnp.zeros((3, 1)), jnp.ones(3), jnp.zeros((2, 1)))
      >>> bar.logits.shape, bar.quantile(0.5).shape
      ((2, 16), (2,))
    """
    model = PFNTransformer() if model is None else model
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a flax linen Module (x, y, is_context) -> logits, got {type(model)}")
    opt = optax.adam(1e-3) if optimizer is None else optimizer
    batch_size = check_int_range("batch_size", batch_size, 1)
    num_points = check_int_range("num_points", num_points, 2)
    min_context = check_int_range("min_context", min_context, 1, num_points - 1)
    num_border_samples = check_int_range("num_border_samples", num_border_samples, 1)
    check_choice("nan_policy", nan_policy, NAN_POLICIES)
    num_features = check_int_range("prior.num_features", getattr(prior, "num_features", None), 1)

    def loss(params, borders, x, y, is_context):
        return pfn_loss(model, params, borders, x, y, is_context, tails=tails)

    def init(key: PRNGKey) -> PFNState:
        k_borders, k_params = jax.random.split(key)
        y = sample_datasets(k_borders, prior, num_border_samples, num_points).y
        borders = bar_borders(y, model.num_buckets)
        x0 = jnp.zeros((num_points, num_features), y.dtype)
        params = model.init(k_params, x0, jnp.zeros(num_points, y.dtype), jnp.arange(num_points) < 1)
        return PFNState(params, borders, opt.init(params), *zero_counters())

    def step(key: PRNGKey, state: PFNState, batch: tuple[Array, Array, Array] | None = None):
        if batch is None:
            batch = prior_batch(key, prior, batch_size, num_points, min_context)
        value, grads = jax.value_and_grad(loss)(state.params, state.borders, *batch)
        new_state, finite = guarded_update(opt, state, grads, value, nan_policy, field="params")
        return new_state, PFNInfo(value, optax.tree.norm(grads), finite)

    def predict(state: PFNState, x_context: ArrayLike, y_context: ArrayLike, x_query: ArrayLike):
        _check_task(x_context, y_context, x_query, num_features)
        return pfn_predict(model, state.params, state.borders, x_context, y_context, x_query, tails=tails)

    return PFN(init, step, nan_policy, predict, loss)


__all__ = ["BarDistribution", "DataPrior", "GPPrior", "GPPriorDraw", "PFN", "PFNInfo", "PFNState",
           "PFNTransformer", "bar_borders", "pfn", "pfn_loss", "pfn_predict", "prior_batch", "sample_datasets"]
