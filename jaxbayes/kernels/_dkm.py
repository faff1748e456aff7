"""Deep kernel machines (Yang et al., "A theory of representation learning gives a deep generalisation of
kernel methods", ICML 2023; Milsom et al., 2023 for the sparse inducing-point version).

A DKM learns one Gram matrix ``G_l`` per hidden layer instead of weights. With ``K_l(G) `` the NNGP map of
layer ``l`` (``layers[l].kernel_map``, e.g. ``serial(ReLU(), Dense(W_std=...))``) and ``G_0`` the input
Gram, the objective is

``L(G_1..G_L) = log p(Y | K_{L+1}(G_L)) - sum_l nu_l KL(N(0, G_l) || N(0, K_l(G_{l-1})))``

(the KL per output column of the Gaussian processes). As ``nu -> infinity`` the KL terms pin
``G_l = K_l(G_{l-1})``: the NNGP recursion, so the DKM becomes the NNGP GP; it is also initialised there.

**Full DKM** (``sparse=False``): ``G_l`` are ``n x n`` over the training points and the output term is the
exact GP marginal likelihood; cost ``O(n^3)``.

**Sparse DKM** (``sparse=True``): ``G_l`` live on ``P`` inducing inputs; every other point gets its Gram
blocks from the GP conditional given the inducing block: with ``K`` the prior blocks and ``W = K_ti K_ii^{-1}``,
``G_ti = W G_ii`` and ``g_tt = k_tt - diag(W K_it) + diag(W G_ii W^T)``. Only the ``(n, P)`` cross block and
the ``(n,)`` diagonal are ever formed, so a step costs ``O(n P^2)``: linear in ``n``. The output layer is a
sparse variational GP: the collapsed Titsias (2009) bound for regression (equal to the exact marginal
likelihood when the inducing points are the training points, so the sparse DKM then equals the full one)
and an explicit ``q(u) = N(m, S)`` with a Monte-Carlo expected categorical log-likelihood for classification.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxbayes._checks import check_choice, check_int_range, check_positive
from jaxbayes.base import NAN_POLICIES, fit, guarded_update, zero_counters
from jaxbayes.kernels._combinators import serial
from jaxbayes.kernels._elementwise import ReLU
from jaxbayes.kernels._kernel import Kernel, Layer, input_kernel, validate_inputs
from jaxbayes.kernels._linear import Dense
from jaxbayes.typing import Array, ArrayLike, PRNGKey


class DKMParams(NamedTuple):
    """Trainable state of a DKM.

    Attributes:
      inducing: the inducing inputs ``(P, ...)`` (the training inputs for the full DKM); not trained.
      chols: per hidden layer a ``(P, P)`` factor ``L`` with ``G_l = tril(L) tril(L)^T``.
      log_noise: log of the Gaussian noise variance (regression).
      q_mu: ``(P, C)`` mean of the inducing outputs (classification; zeros for regression).
      q_chol: ``(C, P, P)`` Cholesky factors of their covariances (classification).
    """

    inducing: Array
    chols: tuple[Array, ...]
    log_noise: Array
    q_mu: Array
    q_chol: Array


class DKMInfo(NamedTuple):
    """Parts of the objective: ``objective = loglik - sum(nu * kls) - q_kl``; from ``step`` also ``finite``
    (whether the gradient was finite, i.e. the update was applied)."""

    objective: Array
    loglik: Array
    kls: Array
    q_kl: Array
    finite: Array | None = None


class DKMState(NamedTuple):
    """State of the DKM algorithm.

    Attributes:
      params: the :class:`DKMParams`.
      opt_state: the optax state.
      step: steps taken (int32).
      num_skipped: steps whose update was dropped because the gradient was non-finite.
      nonfinite_step: first such step, ``-1`` if none.
    """

    params: DKMParams
    opt_state: optax.OptState
    step: Array
    num_skipped: Array
    nonfinite_step: Array


class DKMPrediction(NamedTuple):
    """Predictions: latent ``mean`` ``(m, C)`` and variance ``var`` ``(m,)`` (regression: ``C`` outputs
    share the variance; classification: ``(m, C)``), and ``probs`` ``(m, C)`` for classification."""

    mean: Array
    var: Array
    probs: Array | None


class DKM(NamedTuple):
    """A deep kernel machine as a :class:`jaxbayes.base.Algorithm` (``init``, ``step``, ``nan_policy``) with
    ``objective``, ``predict`` and ``init_params`` (see :func:`dkm`); ``fit`` is the deprecated loop."""

    init: Callable
    step: Callable
    nan_policy: str
    objective: Callable
    predict: Callable
    init_params: Callable
    fit: Callable


_MISSING = object()


def _chol(a: Array, jitter: float) -> Array:
    scale = jnp.mean(jnp.diagonal(a))
    return jnp.linalg.cholesky(a + jitter * scale * jnp.eye(a.shape[0], dtype=a.dtype))


def _tril(x: Array) -> Array:
    return jnp.tril(x)


def _kl(g: Array, k_chol: Array, g_chol: Array) -> Array:
    """``KL(N(0, G) || N(0, K))`` from Cholesky factors."""
    p = g.shape[0]
    a = jax.scipy.linalg.solve_triangular(k_chol, g_chol, lower=True)
    logdet_k = 2 * jnp.sum(jnp.log(jnp.abs(jnp.diagonal(k_chol))))
    logdet_g = 2 * jnp.sum(jnp.log(jnp.abs(jnp.diagonal(g_chol))))
    return 0.5 * (jnp.sum(a * a) - p + logdet_k - logdet_g)


def _map_blocks(layer: Layer, g_ii: Array, g_ti: Array | None, g_tt: Array | None):
    """Push Gram blocks through a layer's NNGP map: returns ``(K_ii, K_ti, k_tt)``."""
    d_ii = jnp.diagonal(g_ii)
    k_ii = layer.kernel_map(Kernel(g_ii, jnp.zeros_like(g_ii), d_ii, None)).nngp
    if g_ti is None:
        return k_ii, None, None
    out = layer.kernel_map(Kernel(g_ti, jnp.zeros_like(g_ti), g_tt, d_ii))
    return k_ii, out.nngp, out.var1


def dkm(layers: Sequence[Layer], *, nu: ArrayLike | Sequence[float] = 1.0, sparse: bool = True,
        likelihood: str = "gaussian", num_classes: int | None = None, noise: float = 0.1,
        learn_noise: bool = True, optimizer: optax.GradientTransformation | None = None,
        jitter: float = 1e-6, num_mc: int = 16, nan_policy: str = "skip") -> DKM:
    """Build a deep kernel machine.

    Args:
      layers: ``L + 1`` kernel maps. ``layers[0]`` maps the input Gram to the prior of ``G_1``
        (e.g. ``Dense(W_std=1)``); ``layers[l]`` maps ``G_l`` to the prior of ``G_{l+1}`` (e.g.
        ``serial(ReLU(), Dense(W_std=1.4))``); the last gives the output kernel. At initialisation the DKM
        equals the NNGP GP of ``serial(*layers)``.
      nu: KL weight per hidden layer (scalar or ``L`` values, > 0).
      sparse: inducing-point version (linear in ``n``) or the full version (``n x n`` Grams).
      likelihood: ``"gaussian"`` (regression, any number of output columns) or ``"categorical"``
        (classification, sparse only; labels are ints in ``[0, num_classes)``).
      num_classes: number of classes for ``"categorical"``.
      noise: initial Gaussian noise variance.
      learn_noise: train the noise variance.
      optimizer: optax optimiser (default ``adam(1e-2)``).
      jitter: relative diagonal jitter for every Cholesky factorisation.
      num_mc: Monte-Carlo samples for the categorical expected log-likelihood and predictive probabilities.
      nan_policy: ``"skip"`` (drop a step whose gradient is non-finite) or ``"raise"`` (freeze and raise
        ``FloatingPointError`` naming the step), as for every :class:`jaxbayes.base.Algorithm`.

    Returns:
      :class:`DKM`, an algorithm in the library's contract:
      ``init(key, x_inducing, y) -> DKMState`` (``x_inducing`` = training inputs for the full DKM; the key is
      unused: the DKM starts at the NNGP), ``step(key, state, (x, y)) -> (DKMState, DKMInfo)`` (one optimiser
      step ascending the objective; the key drives the categorical Monte-Carlo term), run by
      :func:`jaxbayes.base.fit` with ``data=(x, y)``; and
      ``objective(params, x, y, key=None) -> DKMInfo``,
      ``predict(params, x_train, y_train, x_test, key=None) -> DKMPrediction``,
      ``init_params(x_inducing, y) -> DKMParams``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbayes.base import fit
      >>> x = jnp.linspace(-2, 2, 12)[:, None]; y = jnp.sin(2 * x)
      >>> m = dkm(dkm_layers(1), sparse=True)
      >>> state, infos = fit(jax.random.key(0), m, m.init(jax.random.key(0), x[::2], y), 20, data=(x, y))
      >>> bool(infos.objective[-1] > infos.objective[0])
      True
    """
    layers = tuple(layers)
    if len(layers) < 2:
        raise ValueError(f"layers needs at least 2 kernel maps (input -> G_1 -> output), got {len(layers)}")
    n_hidden = len(layers) - 1
    nu_arr = jnp.broadcast_to(jnp.asarray(nu, dtype=float), (n_hidden,))
    check_positive("nu", nu)
    check_choice("likelihood", likelihood, ("gaussian", "categorical"))
    check_positive("noise", noise)
    check_positive("jitter", jitter, strict=False)
    num_mc = check_int_range("num_mc", num_mc, 1)
    check_choice("nan_policy", nan_policy, NAN_POLICIES)
    if likelihood == "categorical":
        if not sparse:
            raise ValueError("likelihood='categorical' needs sparse=True (the full DKM is for regression)")
        num_classes = check_int_range("num_classes", num_classes, 2)
    opt = optax.adam(1e-2) if optimizer is None else optimizer

    def grams(params: DKMParams):
        """Inducing Grams ``G_l`` and the prior kernels ``K_l`` on the inducing points, layer by layer."""
        z = params.inducing
        g = input_kernel(z).nngp
        gs, ks = [], []
        for layer, lchol in zip(layers[:-1], params.chols, strict=True):
            k_ii = _map_blocks(layer, g, None, None)[0]
            lt = _tril(lchol)
            ks.append(k_ii)
            g = lt @ lt.T
            gs.append(g)
        k_out = _map_blocks(layers[-1], g, None, None)[0]
        return gs, ks, k_out

    def propagate(params: DKMParams, x: Array):
        """Output-kernel blocks for points ``x`` given the inducing Grams: ``(K_ii, K_ti, k_tt)``."""
        z = params.inducing
        k0 = input_kernel(z)
        g_ii = k0.nngp
        kx = input_kernel(x, z)
        g_ti, g_tt = kx.nngp, kx.var1
        for layer, lchol in zip(layers[:-1], params.chols, strict=True):
            k_ii, k_ti, k_tt = _map_blocks(layer, g_ii, g_ti, g_tt)
            lk = _chol(k_ii, jitter)
            w = jax.scipy.linalg.cho_solve((lk, True), k_ti.T).T  # K_ti K_ii^{-1}
            lt = _tril(lchol)
            g_ii = lt @ lt.T
            g_ti = w @ g_ii
            g_tt = k_tt - jnp.sum(w * k_ti, 1) + jnp.sum(g_ti * w, 1)
        return _map_blocks(layers[-1], g_ii, g_ti, g_tt)

    def layer_kls(params: DKMParams, gs, ks):
        kls = []
        for g, k, lchol in zip(gs, ks, params.chols, strict=True):
            del g
            lt = _tril(lchol)
            kls.append(_kl(lt @ lt.T, _chol(k, jitter), lt))
        return jnp.stack(kls)

    def init_params(x_inducing: ArrayLike, y: ArrayLike) -> DKMParams:
        z, _ = validate_inputs(x_inducing, None)
        g = input_kernel(z).nngp
        chols = []
        for layer in layers[:-1]:
            g = _map_blocks(layer, g, None, None)[0]
            lc = _chol(g, jitter)
            chols.append(lc)
            g = lc @ lc.T
        k_out = _map_blocks(layers[-1], g, None, None)[0]
        p = z.shape[0]
        if likelihood == "categorical":
            q_mu = jnp.zeros((p, num_classes), z.dtype)
            q_chol = jnp.broadcast_to(_chol(k_out, jitter), (num_classes, p, p))
        else:
            yy = jnp.asarray(y)
            q_mu = jnp.zeros((p, 1 if yy.ndim == 1 else yy.shape[1]), z.dtype)
            q_chol = jnp.zeros((1, 1, 1), z.dtype)
        return DKMParams(z, tuple(chols), jnp.log(jnp.asarray(noise, z.dtype)), q_mu, q_chol)

    def _noise(params):
        ln = params.log_noise if learn_noise else jax.lax.stop_gradient(params.log_noise)
        return jnp.exp(ln)

    def _check_y(x, y):
        y = jnp.asarray(y)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y must have {x.shape[0]} rows (one per input), got shape {y.shape}")
        if likelihood == "gaussian":
            return y[:, None] if y.ndim == 1 else y
        if not jnp.issubdtype(y.dtype, jnp.integer):
            raise TypeError(f"y must hold integer class labels for likelihood='categorical', got {y.dtype}")
        return y

    def _sgpr_parts(k_ii, k_ti, y, s2):
        lk = _chol(k_ii, jitter)
        a = jax.scipy.linalg.solve_triangular(lk, k_ti.T, lower=True) / jnp.sqrt(s2)  # (P, n)
        b = jnp.eye(k_ii.shape[0], dtype=k_ii.dtype) + a @ a.T
        lb = jnp.linalg.cholesky(b)
        c = jax.scipy.linalg.solve_triangular(lb, a @ y, lower=True) / jnp.sqrt(s2)
        return lk, a, lb, c

    def objective(params: DKMParams, x: ArrayLike, y: ArrayLike, key: PRNGKey | None = None) -> DKMInfo:
        x, _ = validate_inputs(x, None)
        if x.shape[1:] != params.inducing.shape[1:]:
            raise ValueError(f"x must have per-point shape {params.inducing.shape[1:]}, got {x.shape[1:]}")
        y = _check_y(x, y)
        params = params._replace(inducing=jax.lax.stop_gradient(params.inducing))
        gs, ks, k_out = grams(params)
        kls = layer_kls(params, gs, ks)
        s2 = _noise(params)
        n = x.shape[0]
        if not sparse:
            a = k_out + s2 * jnp.eye(n, dtype=k_out.dtype)
            la = _chol(a, jitter)
            z = jax.scipy.linalg.solve_triangular(la, y, lower=True)
            c = y.shape[1]
            loglik = (-0.5 * jnp.sum(z * z) - c * jnp.sum(jnp.log(jnp.diagonal(la)))
                      - 0.5 * n * c * jnp.log(2 * jnp.pi))
            q_kl = jnp.zeros((), loglik.dtype)
        else:
            k_ii, k_ti, k_tt = propagate(params, x)
            if likelihood == "gaussian":
                lk, a, lb, c = _sgpr_parts(k_ii, k_ti, y, s2)
                nc = y.shape[1]
                loglik = (-0.5 * n * nc * jnp.log(2 * jnp.pi * s2) - nc * jnp.sum(jnp.log(jnp.diagonal(lb)))
                          - 0.5 * jnp.sum(y * y) / s2 + 0.5 * jnp.sum(c * c)
                          - 0.5 * nc * (jnp.sum(k_tt) / s2 - jnp.sum(a * a)))
                q_kl = jnp.zeros((), loglik.dtype)
            else:
                if key is None:
                    raise ValueError("the categorical DKM objective needs a key (Monte-Carlo expectation)")
                mean, var, q_kl = _q_predict(params, k_ii, k_ti, k_tt)
                eps = jax.random.normal(key, (num_mc, *mean.shape), mean.dtype)
                f = mean + jnp.sqrt(var) * eps
                logp = jax.nn.log_softmax(f, axis=-1)
                loglik = jnp.mean(jnp.sum(jnp.take_along_axis(logp, y[None, :, None], axis=-1), axis=(1, 2)))
        obj = loglik - jnp.sum(nu_arr.astype(kls.dtype) * kls) - q_kl
        return DKMInfo(obj, loglik, kls, q_kl)

    def _q_predict(params, k_ii, k_ti, k_tt):
        lk = _chol(k_ii, jitter)
        w = jax.scipy.linalg.cho_solve((lk, True), k_ti.T).T  # (n, P)
        mean = w @ params.q_mu
        sq = jnp.tril(params.q_chol)  # (C, P, P)
        ws = jnp.einsum("np,cpq->cnq", w, sq)
        var = (k_tt - jnp.sum(w * k_ti, 1))[:, None] + jnp.sum(ws * ws, -1).T
        # KL(N(m, S) || N(0, K_ii)) per class, summed.
        kl = jax.vmap(lambda s: _kl(s @ s.T, lk, s))(sq).sum()
        kl = kl + 0.5 * jnp.sum(jax.scipy.linalg.cho_solve((lk, True), params.q_mu) * params.q_mu)
        return mean, jnp.maximum(var, 1e-12), kl

    def state_of(params: DKMParams) -> DKMState:
        return DKMState(params, opt.init(params), *zero_counters())

    def init(key: PRNGKey, x_inducing: ArrayLike, y: ArrayLike = _MISSING) -> DKMState:
        if y is _MISSING:  # the old init(x_inducing, y) -> DKMParams: deprecated for one release
            warnings.warn("dkm(...).init(x_inducing, y) is now init(key, x_inducing, y) and returns the state; "
                          "init_params(x_inducing, y) gives the parameters", DeprecationWarning, stacklevel=2)
            return init_params(key, x_inducing)
        del key
        return state_of(init_params(x_inducing, y))

    def step_fn(key: PRNGKey, state: DKMState, batch: tuple[ArrayLike, ArrayLike]) -> tuple[DKMState, DKMInfo]:
        x, y = batch

        def loss(p):
            info = objective(p, x, y, key)
            return -info.objective, info

        (_, info), g = jax.value_and_grad(loss, has_aux=True)(state.params)
        new, finite = guarded_update(opt, state, g, info.objective, nan_policy, field="params")
        return new, info._replace(finite=finite)

    def step(key, state, batch=None, *old):
        if isinstance(key, DKMState):  # the old step(state, x, y, key=None): deprecated for one release
            warnings.warn("dkm(...).step(state, x, y, key) is now step(key, state, (x, y))", DeprecationWarning,
                          stacklevel=2)
            return step_fn(old[0] if old else None, key, (state, batch))
        return step_fn(key, state, batch)

    def fit_params(params: DKMParams, x: ArrayLike, y: ArrayLike, *, num_steps: int = 100,
                   key: PRNGKey | None = None):
        warnings.warn("dkm(...).fit(params, x, y, num_steps=) is now jaxbayes.base.fit(key, m, "
                      "m.init(key, x_inducing, y), num_steps, data=(x, y))", DeprecationWarning, stacklevel=2)
        key = jax.random.key(0) if key is None else key
        state, infos = fit(key, algorithm, state_of(params), num_steps, data=(x, y))
        return state.params, infos.objective

    def predict(params: DKMParams, x_train: ArrayLike, y_train: ArrayLike, x_test: ArrayLike,
                key: PRNGKey | None = None) -> DKMPrediction:
        x_test, _ = validate_inputs(x_test, None)
        s2 = _noise(params)
        k_ii, k_si, k_ss = propagate(params, x_test)
        if likelihood == "categorical":
            mean, var, _ = _q_predict(params, k_ii, k_si, k_ss)
            if key is None:
                raise ValueError("categorical predictions need a key (Monte-Carlo predictive probabilities)")
            eps = jax.random.normal(key, (num_mc, *mean.shape), mean.dtype)
            probs = jnp.mean(jax.nn.softmax(mean + jnp.sqrt(var) * eps, axis=-1), axis=0)
            return DKMPrediction(mean, var, probs)
        x_train, _ = validate_inputs(x_train, None)
        y = _check_y(x_train, y_train)
        if not sparse:
            k_tt = grams(params)[2]
            a = k_tt + s2 * jnp.eye(k_tt.shape[0], dtype=k_tt.dtype)
            la = _chol(a, jitter)
            mean = k_si @ jax.scipy.linalg.cho_solve((la, True), y)
            v = jax.scipy.linalg.solve_triangular(la, k_si.T, lower=True)
            return DKMPrediction(mean, k_ss - jnp.sum(v * v, 0), None)
        _, k_ti, _ = propagate(params, x_train)
        lk, _, lb, c = _sgpr_parts(k_ii, k_ti, y, s2)
        t1 = jax.scipy.linalg.solve_triangular(lk, k_si.T, lower=True)
        t2 = jax.scipy.linalg.solve_triangular(lb, t1, lower=True)
        mean = t2.T @ c
        var = k_ss - jnp.sum(t1 * t1, 0) + jnp.sum(t2 * t2, 0)
        return DKMPrediction(mean, var, None)

    algorithm = DKM(init, step, nan_policy, objective, predict, init_params, fit_params)
    return algorithm


def dkm_layers(depth: int = 2, activation: Layer | None = None, *, W_std: float = 1.0,  # noqa: N803
               b_std: float = 0.1) -> list[Layer]:
    """Kernel maps of an MLP with ``depth + 1`` hidden layers for :func:`dkm`: ``G_1``'s prior is the NNGP of
    ``serial(Dense, act, Dense)`` (full rank, unlike the rank ``d + 1`` linear Gram of the inputs), then
    ``depth - 1`` learned layers ``serial(act, Dense)`` and a ``serial(act, Dense)`` output kernel."""


    depth = check_int_range("depth", depth, 1)
    act = ReLU() if activation is None else activation
    first = serial(Dense(1, 1.0, b_std), act, Dense(1, W_std, b_std))
    return [first] + [serial(act, Dense(1, W_std, b_std)) for _ in range(depth)]


__all__ = ["DKM", "DKMInfo", "DKMParams", "DKMPrediction", "DKMState", "dkm", "dkm_layers"]
