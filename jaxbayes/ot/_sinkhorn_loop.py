r"""The Sinkhorn fixed-point iterations: the log-domain loop (dense, matrix-free, epsilon scaling) and the dense
loop with absorbed potentials, plus the marginal residual whose root they find (for implicit gradients).

See :mod:`jaxbayes.ot._sinkhorn` for the problem and the update formulas.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbayes.parallel import explicit_spec
from jaxbayes.typing import Array


def log_weights(w: Array) -> Array:
    """log of non-negative weights with log(0) = -inf without NaN gradients."""
    pos = w > 0
    return jnp.where(pos, jnp.log(jnp.where(pos, w, 1.0)), -jnp.inf)


def kl_strength(tau: Array, eps: Array) -> Array:
    """KL strength rho = eps tau / (1 - tau); +inf where tau == 1 (balanced)."""
    one = tau >= 1
    return jnp.where(one, jnp.inf, eps * tau / jnp.where(one, 0.5, 1.0 - tau))


def exp_neg_over_rho(f: Array, tau: Array, eps: Array) -> Array:
    """exp(-f / rho), equal to 1 where tau == 1, gradient-safe."""
    one = tau >= 1
    rho = kl_strength(jnp.where(one, 0.5, tau), eps)
    return jnp.where(one, 1.0, jnp.exp(-f / rho))


def row_error(f: Array, lse_rows: Array, a: Array, tau_a: Array, eps: Array) -> Array:
    """L1 error of the row marginal of ``(f, g)`` from the row soft-min ``lse_rows`` of ``g`` (the one the
    f-update needs anyway)."""
    return jnp.sum(a * jnp.abs(jnp.exp(f / eps + lse_rows) - exp_neg_over_rho(f, tau_a, eps)))


def _product(lhs: Array, rhs: Array, like: Array, sharded: bool) -> Array:
    """``lhs @ rhs``; with an explicitly sharded kernel (``sharded``) its result is typed like ``like``
    (the potential it updates). A product over the kernel's sharded axis (``u @ K`` on a row-sharded cost
    matrix, ``K @ v`` on a column-sharded one) has no implied result sharding on an Explicit mesh: it is the
    local partial products summed across that axis, replicated or split as ``like`` is."""
    if not sharded:
        return lhs @ rhs
    return jnp.matmul(lhs, rhs, out_sharding=jax.typeof(like).sharding)


def keep_going(config: SolverConfig, err: Array, it: Array, unfinished: Array | bool = False) -> Array:
    """The stopping rule shared by the solvers: ``max_iterations`` (all of them in fixed-iteration mode),
    else an error above ``tol``, ``min_iterations`` not reached, or ``unfinished`` (epsilon scaling)."""
    if config.fixed_iterations:
        return it < config.max_iterations
    return (it < config.max_iterations) & ((err > config.tol) | unfinished | (it < config.min_iterations))


def marginals(geom, f, g, a, b, eps):
    r = a * jnp.exp(f / eps + geom.lse(log_weights(b) + g / eps, eps, axis=1))
    c = b * jnp.exp(g / eps + geom.lse(log_weights(a) + f / eps, eps, axis=0))
    return r, c


def residual(theta, f, g):
    """Optimality residual (P1 - a e^{-f/rho_a}, P^T1 - b e^{-g/rho_b}); symmetric PSD Jacobian in (f, g)."""
    geom, a, b, eps, tau_a, tau_b, _ = theta
    r, c = marginals(geom, f, g, a, b, eps)
    return (r - a * exp_neg_over_rho(f, tau_a, eps), c - b * exp_neg_over_rho(g, tau_b, eps))


class SolverConfig(NamedTuple):
    tol: float
    max_iterations: int
    min_iterations: int
    fixed_iterations: bool
    epsilon_scaling: bool
    epsilon_decay: float
    balanced: bool
    cg_iterations: int
    cg_ridge: float
    cg_tol: float


def solve(config: SolverConfig, theta, f0, g0):
    geom, a, b, eps, tau_a, tau_b, eps_start = theta
    if geom.cost_matrix is not None and not config.epsilon_scaling:
        return solve_absorbed(config, theta, f0, g0)
    log_a, log_b = log_weights(a), log_weights(b)
    dtype = f0.dtype
    n_max = config.max_iterations

    def eps_at(it):
        if not config.epsilon_scaling:
            return eps
        return jnp.maximum(eps, eps_start * config.epsilon_decay ** it.astype(dtype))

    def cond(state):
        _, _, err, it, _ = state
        return keep_going(config, err, it, eps_at(it) > eps)

    def body(state):
        f, g, _, it, errors = state
        e = eps_at(it)
        lse_rows = geom.lse(log_b + g / e, e, axis=1)
        # marginal error of the current (f, g) from the soft-min we need anyway (b-side is exact here).
        err = row_error(f, lse_rows, a, tau_a, e)
        f = -tau_a * e * lse_rows
        g = -tau_b * e * geom.lse(log_a + f / e, e, axis=0)
        errors = errors.at[it].set(err)
        return f, g, err, it + 1, errors

    # the b-side error of (f0, g0) is not known before the first g update: start with inf.
    init = (f0, g0, jnp.asarray(jnp.inf, dtype), jnp.asarray(0, jnp.int32), -jnp.ones((n_max,), dtype))
    f, g, err, it, errors = jax.lax.while_loop(cond, body, init)
    converged = (err <= config.tol) & (eps_at(it - 1) <= eps)
    return f, g, errors, it, converged


def solve_absorbed(config: SolverConfig, theta, f0, g0):
    """Dense Sinkhorn with absorbed potentials (Schmitzer 2019, "Stabilized sparse scaling algorithms"): the
    same iterates as the log-domain loop, but between absorptions each iteration is two products with the
    stored kernel ``K_ij = exp((fbar_i + gbar_j - C_ij) / eps)`` instead of two log-sum-exps over the cost
    matrix (no exponentials of the whole matrix, one pass instead of two per side: about 3x less work).

    Each outer step runs one exact log-domain iteration, absorbs its potentials into ``K`` and then iterates
    in the scaling domain while the scalings ``(f - fbar) / eps``, ``(g - gbar) / eps`` stay below a quarter
    of the dtype's exponent range (no overflow, no lost mass to underflow); a step whose products underflow
    or overflow is rejected and the next outer step re-absorbs. No ``lax.cond``, so ``vmap`` does no extra
    work.
    """
    geom, a, b, eps, tau_a, tau_b, _ = theta
    c = geom.cost_matrix
    log_a, log_b = log_weights(a), log_weights(b)
    dtype = f0.dtype
    n_max = config.max_iterations
    limit = -0.25 * float(np.log(np.finfo(dtype).tiny))  # |scaling| bound: 21.8 in float32, 177 in float64

    def outer(state):
        f, g, _, it, errors = state
        lse_rows = geom.lse(log_b + g / eps, eps, axis=1)
        err = row_error(f, lse_rows, a, tau_a, eps)
        fbar = -tau_a * eps * lse_rows
        gbar = -tau_b * eps * geom.lse(log_a + fbar / eps, eps, axis=0)
        errors = errors.at[it].set(err)
        kernel = jnp.exp((fbar[:, None] + gbar[None, :] - c) / eps)
        sharded = explicit_spec(kernel) is not None

        def inner_cond(st):
            _, _, err, it, _, ok = st
            return ok & keep_going(config, err, it)

        def inner(st):
            f, g, err, it, errors, _ = st
            r = _product(kernel, b * jnp.exp((g - gbar) / eps), fbar, sharded)
            lse_rows = jnp.log(r) - fbar / eps
            new_err = row_error(f, lse_rows, a, tau_a, eps)
            new_f = -tau_a * eps * lse_rows
            col = _product(a * jnp.exp((new_f - fbar) / eps), kernel, gbar, sharded)
            new_g = -tau_b * eps * (jnp.log(col) - gbar / eps)
            accept = jnp.all(jnp.isfinite(new_f)) & jnp.all(jnp.isfinite(new_g)) & jnp.isfinite(new_err)
            within = ((jnp.max(jnp.abs(new_f - fbar)) <= limit * eps)
                      & (jnp.max(jnp.abs(new_g - gbar)) <= limit * eps))
            keep = lambda new, old: jnp.where(accept, new, old)
            errors = errors.at[it].set(keep(new_err, errors[it]))
            return (keep(new_f, f), keep(new_g, g), keep(new_err, err), it + accept.astype(it.dtype), errors,
                    accept & within)

        init = (fbar, gbar, err, it + 1, errors, jnp.asarray(True))
        f, g, err, it, errors, _ = jax.lax.while_loop(inner_cond, inner, init)
        return f, g, err, it, errors

    init = (f0, g0, jnp.asarray(jnp.inf, dtype), jnp.asarray(0, jnp.int32), -jnp.ones((n_max,), dtype))
    f, g, err, it, errors = jax.lax.while_loop(lambda st: keep_going(config, st[2], st[3]), outer, init)
    return f, g, errors, it, err <= config.tol
