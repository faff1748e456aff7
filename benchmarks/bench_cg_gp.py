"""Matrix-free GP hyper-parameter fitting (BBMM: pivoted-Cholesky PCG + stochastic Lanczos quadrature) against the
dense Cholesky path and tinygp.

For each ``--n``: RBF hyper-parameters (lengthscale, variance, noise; log-parameterised) are fitted by optax Adam on
the CG log marginal likelihood (fresh probes each step) of a generated 1-D regression set
``y = sin(x) + 0.3 sin(3 x) + 0.1 eps``, ``x ~ U(0, 10)``. Printed: time per CG iteration (one ``K @ V`` on the
``1 + num_probes`` block), PCG iterations to ``tol``, lml (with its Monte-Carlo error) before and after, and, at
``n <= --dense-max``, the exact Cholesky lml (and tinygp's when importable) at the same parameters.

    python -m benchmarks.bench_cg_gp --n 10000 20000
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax


def _timed(fn, *args, repeats=1):
    out = jax.block_until_ready(fn(*args))  # warm-up / compile
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = jax.block_until_ready(fn(*args))
    return out, (time.perf_counter() - t0) / repeats


def _params(theta):
    return {"lengthscale": jnp.exp(theta[0]), "variance": jnp.exp(theta[1])}, jnp.exp(theta[2])


def run(n: int, *, steps: int, solver, dense_max: int, chunk_size: int, seed: int = 0) -> dict:
    from jaxbayes import kernels as K

    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.uniform(0, 10, size=(n, 1)))
    y = jnp.asarray(np.sin(x[:, 0]) + 0.3 * np.sin(3 * x[:, 0]) + 0.1 * rng.normal(size=n))
    theta0 = jnp.log(jnp.array([2.0, 1.0, 0.5], x.dtype))

    def estimate(theta, key):
        p, noise = _params(theta)
        return K.lml_and_stderr(K.kernel_operator(K.rbf, x, p, chunk_size=chunk_size), y, noise=noise,
                                solver=solver, key=key)

    est_fn = jax.jit(estimate)
    block = jnp.ones((n, 1 + solver.num_probes), x.dtype)
    p0, _ = _params(theta0)
    op0 = K.kernel_operator(K.rbf, x, p0, chunk_size=chunk_size)
    _, t_iter = _timed(jax.jit(lambda o, v: o.matmul(v)), op0, block, repeats=2)
    before, t_lml = _timed(est_fn, theta0, jax.random.key(1))

    opt = optax.adam(0.1)

    @jax.jit
    def step(theta, state, key):
        loss, g = jax.value_and_grad(lambda t: -estimate(t, key).lml / n)(theta)
        upd, state = opt.update(g, state, theta)
        return optax.apply_updates(theta, upd), state, loss

    theta, state = theta0, opt.init(theta0)
    t0 = time.perf_counter()
    for i in range(steps):
        theta, state, loss = step(theta, state, jax.random.fold_in(jax.random.key(2), i))
    jax.block_until_ready(theta)
    t_fit = time.perf_counter() - t0
    after = est_fn(theta, jax.random.key(3))
    row = dict(n=n, t_iter=t_iter, t_lml=t_lml, iters_before=int(before.n_iters), iters_after=int(after.n_iters),
               lml_before=float(before.lml), se_before=float(before.stderr), lml_after=float(after.lml),
               se_after=float(after.stderr), t_fit=t_fit, steps=steps,
               theta=[float(v) for v in jnp.exp(theta)])
    print(f"n={n}: {t_iter * 1e3:.1f} ms per CG iteration ({1 + solver.num_probes} columns); "
          f"PCG iterations to tol={solver.tol:g}: {row['iters_before']} (init), {row['iters_after']} (fitted); "
          f"one lml: {t_lml:.2f} s")
    print(f"  lml before {row['lml_before']:.3f} +- {row['se_before']:.3f}, after {steps} Adam steps "
          f"({t_fit:.1f} s, {t_fit / max(steps, 1):.2f} s/step) {row['lml_after']:.3f} +- {row['se_after']:.3f}; "
          f"fitted (lengthscale, variance, noise) = ({', '.join(f'{v:.4g}' for v in row['theta'])})")
    if n <= dense_max:
        for name, th, est in (("init", theta0, before), ("fitted", theta, after)):
            p, noise = _params(th)
            exact, t_dense = _timed(jax.jit(lambda x, y, p, s: K.log_marginal_likelihood(K.rbf(x, x, p), y,
                                                                                      noise=s)), x, y, p, noise)
            msg = (f"  dense Cholesky at {name}: lml {float(exact):.3f} ({t_dense:.2f} s); CG - exact = "
                   f"{float(est.lml - exact):+.4f} (stated MC error {float(est.stderr):.4f})")
            try:
                import tinygp

                def tiny(x, y, p, s):
                    kern = p["variance"] * tinygp.kernels.ExpSquared(scale=p["lengthscale"])
                    return tinygp.GaussianProcess(kern, x, diag=s).log_probability(y)

                tval, t_tiny = _timed(jax.jit(tiny), x, y, p, noise)
                msg += f"; tinygp lml {float(tval):.3f} ({t_tiny:.2f} s)"
            except ImportError:
                msg += "; tinygp not importable"
            print(msg)
    return row


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10000, 20000])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--rank", type=int, default=30, help="preconditioner rank")
    ap.add_argument("--probes", type=int, default=8)
    ap.add_argument("--chunk-size", type=int, default=2048)
    ap.add_argument("--dense-max", type=int, default=10000, help="largest n also run through dense Cholesky")
    ap.add_argument("--float32", action="store_true", help="float32 instead of float64")
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", not args.float32)
    from jaxbayes.kernels import CG

    solver = CG(tol=args.tol, preconditioner_rank=args.rank, num_probes=args.probes)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} x{jax.device_count()}, "
          f"{'float32' if args.float32 else 'float64'}, {solver}")
    return [run(n, steps=args.steps, solver=solver, dense_max=args.dense_max, chunk_size=args.chunk_size)
            for n in args.n]


if __name__ == "__main__":
    main()
