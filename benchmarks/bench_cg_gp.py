"""Matrix-free GP hyper-parameter fitting (BBMM: pivoted-Cholesky PCG + stochastic Lanczos quadrature) against the
dense Cholesky path and tinygp.

For each ``--n``: RBF hyper-parameters (lengthscale, variance, noise; log-parameterised) are fitted by optax Adam on
the CG log marginal likelihood (fresh probes each step) of a generated 1-D regression set
``y = sin(x) + 0.3 sin(3 x) + 0.1 eps``, ``x ~ U(0, 10)``. Reported: time per CG iteration (one ``K @ V`` on the
``1 + num_probes`` block), PCG iterations to ``tol`` and lml (with its Monte-Carlo error) at the initial point
``(2, 1, 0.5)``, at a point near the optimum ``(0.5, 1, 0.01)`` (a harder solve: small noise) and after the fit;
at ``n <= --dense-max`` (and when the compiled dense program fits in the available memory) the exact Cholesky lml,
and tinygp's when it is installed, at the same parameters; the compiled temp memory of one fitting step, against
the ``n^2 * 8`` bytes of one float64 kernel matrix.

    python -m benchmarks.bench_cg_gp --n 10000 20000

``benchmarks.bench_pairwise`` runs :func:`fit` (quick: ``n = 1000``) so that ``jaxbayes bench`` reports it.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

POINTS = {"init": (2.0, 1.0, 0.5), "near-optimum": (0.5, 1.0, 0.01)}


def _timed(fn, *args, repeats=1):
    out = jax.block_until_ready(fn(*args))  # warm-up / compile
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = jax.block_until_ready(fn(*args))
    return out, (time.perf_counter() - t0) / repeats


def _params(theta):
    return {"lengthscale": jnp.exp(theta[0]), "variance": jnp.exp(theta[1])}, jnp.exp(theta[2])


def _available_bytes() -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float("inf")


def default_solver(tol: float = 1e-4, rank: int = 30, probes: int = 8):
    from jaxbayes.kernels import CG

    return CG(tol=tol, preconditioner_rank=rank, num_probes=probes)


def problem(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.uniform(0, 10, size=(n, 1)))
    y = jnp.asarray(np.sin(x[:, 0]) + 0.3 * np.sin(3 * x[:, 0]) + 0.1 * rng.normal(size=n))
    return x, y


def _dense(x, y, theta) -> dict:
    """Exact lml by dense Cholesky (and tinygp's) when the compiled program fits in the available memory."""
    from jaxbayes import kernels as K

    p, noise = _params(theta)
    fn = jax.jit(lambda x, y, p, s: K.log_marginal_likelihood(K.rbf(x, x, p), y, noise=s))
    compiled = fn.lower(x, y, p, noise).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    out = {"dense_temp_bytes": temp}
    if temp > 0.6 * _available_bytes():
        out["dense_error"] = f"skipped: needs {temp / 2**30:.1f} GiB, {_available_bytes() / 2**30:.1f} GiB available"
        return out
    exact, t = _timed(compiled, x, y, p, noise)
    out.update(exact=float(exact), t_dense=t)
    try:
        import tinygp
    except ImportError:
        out["tinygp_error"] = "tinygp not installed"
        return out

    def tiny(x, y, p, s):
        kern = p["variance"] * tinygp.kernels.ExpSquared(scale=p["lengthscale"])
        return tinygp.GaussianProcess(kern, x, diag=s).log_probability(y)

    tval, t_tiny = _timed(jax.jit(tiny), x, y, p, noise)
    out.update(tinygp=float(tval), t_tinygp=t_tiny)
    return out


def fit(n: int, *, steps: int, solver, dense_max: int, chunk_size: int, seed: int = 0, verbose: bool = True) -> dict:
    """Measure one size (see the module docstring); returns a JSON-able dict (``records`` turns it into rows)."""
    from jaxbayes import kernels as K

    x, y = problem(n, seed)
    theta0 = jnp.log(jnp.array(POINTS["init"], x.dtype))

    def estimate(theta, key):
        p, noise = _params(theta)
        return K.lml_and_stderr(K.kernel_operator(K.rbf, x, p, chunk_size=chunk_size), y, noise=noise,
                                solver=solver, key=key)

    est_fn = jax.jit(estimate)
    block = jnp.ones((n, 1 + solver.num_probes), x.dtype)
    p0, _ = _params(theta0)
    op0 = K.kernel_operator(K.rbf, x, p0, chunk_size=chunk_size)
    _, t_iter = _timed(jax.jit(lambda o, v: o.matmul(v)), op0, block, repeats=2)
    lml_temp = est_fn.lower(theta0, jax.random.key(1)).compile().memory_analysis().temp_size_in_bytes

    def evaluate(theta, key):
        est, t = _timed(est_fn, theta, key)
        return {"theta": [float(v) for v in jnp.exp(theta)], "lml": float(est.lml), "stderr": float(est.stderr),
                "iterations": int(est.n_iters), "converged": bool(est.converged), "t_lml": t}

    points = {name: evaluate(jnp.log(jnp.array(v, x.dtype)), jax.random.key(1)) for name, v in POINTS.items()}

    opt = optax.adam(0.1)

    def step(theta, state, key):
        loss, g = jax.value_and_grad(lambda t: -estimate(t, key).lml / n)(theta)
        upd, state = opt.update(g, state, theta)
        return optax.apply_updates(theta, upd), state, loss

    theta, state = theta0, opt.init(theta0)
    t0 = time.perf_counter()
    step_c = jax.jit(step).lower(theta, state, jax.random.key(2)).compile()
    t_step_compile = time.perf_counter() - t0
    step_temp = step_c.memory_analysis().temp_size_in_bytes
    step_times = []
    for i in range(steps):
        t0 = time.perf_counter()
        theta, state, loss = jax.block_until_ready(step_c(theta, state, jax.random.fold_in(jax.random.key(2), i)))
        step_times.append(time.perf_counter() - t0)
    points["fitted"] = evaluate(theta, jax.random.key(3))
    row = dict(n=n, t_iter=t_iter, columns=1 + solver.num_probes, chunk_size=chunk_size, steps=steps,
               step_times=step_times, t_step_compile=t_step_compile, step_temp_bytes=step_temp,
               lml_temp_bytes=lml_temp, kernel_matrix_bytes=8 * n * n, points=points, solver=repr(solver))
    if n <= dense_max:
        for name in ("init", "near-optimum"):
            points[name].update(_dense(x, y, jnp.log(jnp.array(POINTS[name], x.dtype))))
    if verbose:
        _print(row, solver)
    return row


def _print(row: dict, solver) -> None:
    n, pts = row["n"], row["points"]
    print(f"n={n}: {row['t_iter'] * 1e3:.1f} ms per CG iteration ({row['columns']} columns); compiled temp of one "
          f"fit step {row['step_temp_bytes'] / 2**20:.1f} MiB vs {row['kernel_matrix_bytes'] / 2**20:.0f} MiB for "
          f"one n x n float64 matrix")
    for name, p in pts.items():
        msg = (f"  {name} {tuple(round(v, 4) for v in p['theta'])}: PCG iterations to tol={solver.tol:g}: "
               f"{p['iterations']}, lml {p['lml']:.3f} +- {p['stderr']:.3f} ({p['t_lml']:.2f} s)")
        if "exact" in p:
            msg += (f"; dense Cholesky {p['exact']:.3f} ({p['t_dense']:.2f} s), CG - exact = "
                    f"{p['lml'] - p['exact']:+.4f}")
        for key in ("dense_error", "tinygp_error"):
            if key in p:
                msg += f"; {p[key]}"
        if "tinygp" in p:
            msg += f"; tinygp {p['tinygp']:.3f} ({p['t_tinygp']:.2f} s)"
        print(msg)
    st = row["step_times"]
    if st:
        print(f"  fit: {row['steps']} Adam steps, {np.median(st):.2f} s/step (compile {row['t_step_compile']:.1f} s)")


def records(row: dict) -> list[dict]:
    """Benchmark-table rows (``benchmarks.harness.record``) for one :func:`fit` result."""
    from benchmarks.harness import Timing, record

    def timing(ts):
        return Timing(0.0, float(np.median(ts)), min(ts), max(ts), len(ts))

    n, rows = row["n"], []
    rows.append(record("gp_cg_iteration", f"n={n} K@V, V ({n}, {row['columns']}) chunk={row['chunk_size']}",
                       "jaxbayes", timing([row["t_iter"]])))
    for name, p in row["points"].items():
        case = f"n={n} lml at {name} (ls, var, noise)=({', '.join(f'{v:.3g}' for v in p['theta'])})"
        extra = {"lml_minus_exact": p["lml"] - p["exact"]} if "exact" in p else {}
        rows.append(record("gp_lml", case, "jaxbayes", timing([p["t_lml"]]), lml=p["lml"], stderr=p["stderr"],
                           cg_iterations=p["iterations"], converged=p["converged"],
                           temp_mb=row["lml_temp_bytes"] / 2**20, **extra))
        if "exact" in p:
            rows.append(record("gp_lml", case, "dense Cholesky", timing([p["t_dense"]]), lml=p["exact"],
                               temp_mb=p["dense_temp_bytes"] / 2**20))
        elif "dense_error" in p:
            rows.append(record("gp_lml", case, "dense Cholesky", error=p["dense_error"]))
        if "tinygp" in p:
            rows.append(record("gp_lml", case, "tinygp", timing([p["t_tinygp"]]), lml=p["tinygp"]))
        elif "tinygp_error" in p:
            rows.append(record("gp_lml", case, "tinygp", error=p["tinygp_error"]))
    if row["step_times"]:
        pts = row["points"]
        rows.append(record("gp_fit_step", f"n={n} Adam on the CG lml, {row['steps']} steps", "jaxbayes",
                           Timing(row["t_step_compile"], *timing(row["step_times"])[1:]),
                           lml_init=pts["init"]["lml"], lml_fitted=pts["fitted"]["lml"],
                           temp_mb=row["step_temp_bytes"] / 2**20,
                           kernel_matrix_mb=row["kernel_matrix_bytes"] / 2**20,
                           temp_over_n2x8=row["step_temp_bytes"] / row["kernel_matrix_bytes"]))
    return rows


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
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    solver = default_solver(args.tol, args.rank, args.probes)
    with jax.enable_x64(not args.float32):
        print(f"jax {jax.__version__} on {jax.devices()[0].platform} x{jax.device_count()}, "
              f"{'float32' if args.float32 else 'float64'}, {solver}")
        rows = [fit(n, steps=args.steps, solver=solver, dense_max=args.dense_max, chunk_size=args.chunk_size)
                for n in args.n]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return rows


if __name__ == "__main__":
    main()
