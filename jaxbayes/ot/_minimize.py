"""Minimise a smooth objective with optax (L-BFGS with zoom line search, or Adam) inside ``lax.while_loop``,
stopping on the L1 norm of the gradient or when L-BFGS stalls (used by the (semi-)dual sparse OT solvers)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def l1_norm(tree):
    return sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(tree))


def minimize(fun, x0, *, method, max_iterations, tol, learning_rate):
    """Minimise ``fun`` from ``x0`` with optax inside a while loop; returns (x, (n_iters, grad L1 norm))."""
    if method == "lbfgs":
        opt = optax.lbfgs()
        vg = optax.value_and_grad_from_state(fun)
    else:
        opt = optax.adam(learning_rate)
        vg = lambda p, state: jax.value_and_grad(fun)(p)

    dtype = jax.tree.leaves(x0)[0].dtype
    ftol = 100 * jnp.finfo(dtype).eps

    def cond(carry):
        _, _, it, gn, stalls = carry
        return (it < max_iterations) & (gn > tol) & (stalls < 10)

    def body(carry):
        x, state, it, _, stalls = carry
        value, grad = vg(x, state=state)
        if method == "lbfgs":
            updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=fun)
        else:
            updates, state = opt.update(grad, state, x)
        new = optax.apply_updates(x, updates)
        # stall test: at kinks of the top-k dual the gradient need not vanish (marginals stay violated).
        if method == "lbfgs":
            new_value = optax.tree_utils.tree_get(state, "value")  # from the line search, no extra call
            stalled = jnp.abs(new_value - value) <= ftol * (1.0 + jnp.abs(value))
            stalls = jnp.where(stalled, stalls + 1, 0)
        return new, state, it + 1, l1_norm(grad), stalls

    zero = jnp.asarray(0, jnp.int32)
    init = (x0, opt.init(x0), zero, jnp.asarray(jnp.inf, dtype), zero)
    x, _, it, _, stalls = jax.lax.while_loop(cond, body, init)
    return x, (it, l1_norm(jax.grad(fun)(x)), stalls >= 10)
