"""Pairwise-engine benchmark: matrix-free Sinkhorn against ott-jax's online point cloud and against this machine's
physical limits, the compiled memory of a sharded n = 1e6 problem, and the matrix-free GP (``bench_cg_gp``).

* **Per-iteration time.** One Sinkhorn iteration is two log-sum-exp passes over all ``n m`` pairs (``f`` from
  ``g``, then ``g`` from ``f``): ``2 n m`` exponentials and ``2 n m`` cost evaluations. Ours is
  ``ot.pointcloud(x, y, chunk_size=...).lse`` (the pass ``ot.sinkhorn`` iterates), ott-jax's is
  ``PointCloud(x, y, batch_size=...).update_potential`` (the pass its ``Sinkhorn`` iterates), same
  ``chunk_size = batch_size``, same float32 clouds and epsilon. At ``n = 1e4`` the whole solvers also run a
  fixed 10 iterations (ours ``fixed_iterations=True``; ott ``min_iterations = max_iterations =
  inner_iterations = 10``, so it checks its error once).
* **Memory.** ``temp`` is XLA's compiled temporary buffer size (``memory_analysis``) of the pass and of the
  whole solver; in full mode each size runs in a fresh process, whose peak RSS (``VmHWM``, including the
  JAX runtime, reported alongside) is also given.
* **Limits.** A jitted ``jnp.exp`` over a large float32 array gives this machine's exponentials per second;
  a jitted negation (one read, one write) its memory bandwidth. ``exp_fraction`` = ``(2 n m / exp rate) /
  measured time``. ``bw_fraction`` uses a traffic model of 12 bytes per pair per pass (the float32 cost tile
  written once and read twice: the max and the sum of the log-sum-exp); a matrix-free pass has no other
  ``n m``-sized traffic, its inputs are ``O((n + m) d)``.
* **Sharded, n = 1e6.** ``ot.sinkhorn`` on ``x, y`` split over an Explicit 1-D mesh (8 simulated CPU devices,
  ``jax_num_cpu_devices``) is lowered and compiled only; the per-device temp size is compared with one device.
* **GP.** :mod:`benchmarks.bench_cg_gp`: BBMM (pivoted-Cholesky PCG + SLQ) time per CG iteration, iterations,
  lml +- stderr against dense Cholesky (and tinygp when installed), a short hyper-parameter fit and its
  compiled temp memory against ``n^2 * 8`` bytes.

ott-jax 0.6.0's online mode calls ``jax.interpreters.batching.is_vmappable``, which current JAX no longer
exports: it fails as released (the error is recorded); the timed ott rows restore that one alias from
``jax._src`` before importing ott (marked ``ott-jax (alias shim)``).

    python -m benchmarks.bench_pairwise --out /tmp/bench13 [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import Timing, record, time_fn

ROOT = pathlib.Path(__file__).resolve().parents[1]
EPS_REL = 0.05
OTT_SHIM = "ott-jax (alias shim)"


# ---------------------------------------------------------------------------------------------- machine limits
def _limits(quick: bool) -> dict:
    """Exponentials per second (float32; the better of a jitted elementwise ``jnp.exp``, whose result is
    written to memory, and ``jnp.sum(jnp.exp(v), axis=1)`` over rows of 2048, which keeps the exponentials in
    registers as a tile's log-sum-exp does) and copy bandwidth (a jitted negation: bytes read + written per s)."""
    size = 2**22 if quick else 2**26
    repeats = 3 if quick else 11
    v = jnp.linspace(-4.0, 0.0, size, dtype=jnp.float32)
    t_exp, _ = time_fn(jax.jit(jnp.exp), v, repeats=repeats)
    t_fused, _ = time_fn(jax.jit(lambda u: jnp.sum(jnp.exp(u.reshape(-1, 2048)), axis=1)), v, repeats=repeats)
    t_copy, _ = time_fn(jax.jit(jnp.negative), v, repeats=repeats)
    return {"elements": size, "exp_elementwise_per_s": size / t_exp.min_s, "exp_fused_sum_per_s": size / t_fused.min_s,
            "exp_per_s": size / min(t_exp.min_s, t_fused.min_s), "copy_bytes_per_s": 2 * 4 * size / t_copy.min_s,
            "t_exp": t_exp, "t_fused": t_fused, "t_best": min(t_exp, t_fused, key=lambda t: t.min_s),
            "t_copy": t_copy}


_RATES = {"exp_elementwise_per_s": "t_exp", "exp_fused_sum_per_s": "t_fused", "exp_per_s": "t_best",
          "copy_bytes_per_s": "t_copy"}


def _best(a: dict, b: dict) -> dict:
    """The higher rate of each kind from two limit measurements (the machine is shared: load only slows)."""
    out = dict(a)
    for rate, timing in _RATES.items():
        if b[rate] > a[rate]:
            out[rate], out[timing] = b[rate], b[timing]
    return out


def _add_limit_fields(rows: list[dict], limits: dict) -> None:
    """For rows timing one Sinkhorn iteration over ``pairs = n m`` pairs: the exp-throughput and bandwidth-model
    times (``2 pairs`` exponentials, ``2 * 12 pairs`` bytes) and the fractions of them the measurement reached."""
    for r in rows:
        if "pairs" in r and "time_s" in r:
            t_exp = 2 * r["pairs"] / limits["exp_per_s"]
            t_bw = 2 * 12 * r["pairs"] / limits["copy_bytes_per_s"]
            r.update(exp_limit_s=t_exp, exp_fraction=t_exp / r["time_s"], bw_fraction=t_bw / r["time_s"],
                     exp_per_s=2 * r["pairs"] / r["time_s"])


# ---------------------------------------------------------------------------------------------- sinkhorn cases
def _shim_ott() -> None:
    """Restore ``jax.interpreters.batching.is_vmappable`` (removed from the public module) for ott-jax 0.6."""
    import jax.interpreters.batching as public
    from jax._src.interpreters import batching as private

    if not hasattr(public, "is_vmappable"):
        public.is_vmappable = private.is_vmappable


def _ott_unpatched_error() -> str | None:
    """ott-jax's online pass on a tiny cloud, in a fresh process without the shim: the error it raises, if any."""
    code = ("import jax.numpy as jnp\nfrom ott.geometry import pointcloud as pc\n"
            "g = pc.PointCloud(jnp.ones((8, 2)), jnp.zeros((8, 2)), epsilon=1.0, batch_size=4)\n"
            "g.apply_lse_kernel(jnp.zeros(8), jnp.zeros(8), 1.0, axis=1)\n")
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=600)
    if proc.returncode == 0:
        return None
    return proc.stderr.strip().splitlines()[-1][-300:]


def _peak_rss_mb() -> float:
    """This process's peak resident set (``VmHWM``; ``ru_maxrss`` would include the forking parent's peak)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _mb(v) -> float:
    return float(v) / 2**20


def sinkhorn_case(impl: str, n: int, d: int, chunk: int, *, repeats: int, solve: bool) -> dict:
    """One (implementation, n, d) case: compiled temp sizes, time of one iteration (two passes), optionally the
    time of a fixed 10-iteration solve. Runs in the calling process; ``main --worker`` wraps it for a fresh one."""
    kx, ky = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (n, d), jnp.float32)
    y = jax.random.normal(ky, (n, d), jnp.float32) * 0.8 + 0.5
    log_w = jnp.full((n,), -np.log(n), jnp.float32)
    f0 = jnp.zeros((n,), jnp.float32)
    from jaxbayes import ot

    eps = float(EPS_REL * ot.pointcloud(x, y).cost_scale())
    if impl == "jaxbayes":

        def iteration(x, y, f, g):
            geom = ot.pointcloud(x, y, chunk_size=chunk)
            f = -eps * geom.lse(log_w + g / eps, eps, 1)
            g = -eps * geom.lse(log_w + f / eps, eps, 0)
            return f, g

        def solver(x, y):
            out = ot.sinkhorn(ot.pointcloud(x, y, chunk_size=chunk), epsilon=eps, relative_epsilon=False,
                              max_iterations=10, fixed_iterations=True)
            return out.f, out.g, out.cost
    else:
        _shim_ott()
        from ott.geometry import pointcloud as ott_pc
        from ott.problems.linear import linear_problem
        from ott.solvers.linear import sinkhorn as ott_sinkhorn

        def iteration(x, y, f, g):
            geom = ott_pc.PointCloud(x, y, epsilon=eps, batch_size=chunk)
            g = geom.update_potential(f, g, log_w, axis=0)
            f = geom.update_potential(f, g, log_w, axis=1)
            return f, g

        ott_solver = ott_sinkhorn.Sinkhorn(threshold=-1.0, min_iterations=10, max_iterations=10,
                                           inner_iterations=10)

        def solver(x, y):
            out = ott_solver(linear_problem.LinearProblem(ott_pc.PointCloud(x, y, epsilon=eps, batch_size=chunk)))
            return out.f, out.g, out.reg_ot_cost

    res = {"impl": impl, "n": n, "d": d, "chunk": chunk, "epsilon": eps}
    t0 = time.perf_counter()
    step = jax.jit(iteration).lower(x, y, f0, f0).compile()
    res["compile_s"] = time.perf_counter() - t0
    res["temp_mb"] = _mb(step.memory_analysis().temp_size_in_bytes)
    t0 = time.perf_counter()
    full = jax.jit(solver).lower(x, y).compile()
    res["solve_compile_s"] = time.perf_counter() - t0
    res["solve_temp_mb"] = _mb(full.memory_analysis().temp_size_in_bytes)
    res["rss_before_run_mb"] = _peak_rss_mb()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f, g = jax.block_until_ready(step(x, y, f0, f0))
        times.append(time.perf_counter() - t0)
    res["iteration_times_s"] = times
    res["f_mean"] = float(jnp.mean(f))
    if solve:
        t0 = time.perf_counter()
        _, _, cost = jax.block_until_ready(full(x, y))
        res["solve10_s"] = time.perf_counter() - t0
        res["solve10_cost"] = float(cost)
    res["peak_rss_mb"] = _peak_rss_mb()
    return res


def sharded_compile(n: int, d: int, devices: int, chunk: int) -> dict:
    """Lower and compile a 10-iteration ``ot.sinkhorn`` on ``x, y`` split over ``devices`` (compile only)."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxbayes import ot

    def solve(x, y):
        out = ot.sinkhorn(ot.pointcloud(x, y, chunk_size=chunk), epsilon=0.1, relative_epsilon=False,
                          max_iterations=10, fixed_iterations=True)
        return out.f, out.g, out.cost

    t0 = time.perf_counter()
    if devices > 1:
        mesh = jax.make_mesh((devices,), ("data",))
        spec = jax.ShapeDtypeStruct((n, d), jnp.float32, sharding=NamedSharding(mesh, P("data", None)))
        # no ``jax.set_mesh``: under it the solver's while_loop carry types disagree (reported); the Explicit
        # sharding in the argument types is what the engine reads
        compiled = jax.jit(solve).lower(spec, spec).compile()
    else:
        spec = jax.ShapeDtypeStruct((n, d), jnp.float32)
        compiled = jax.jit(solve).lower(spec, spec).compile()
    mem = compiled.memory_analysis()
    return {"n": n, "d": d, "devices": devices, "chunk": chunk, "compile_s": time.perf_counter() - t0,
            "temp_mb": _mb(mem.temp_size_in_bytes), "argument_mb": _mb(mem.argument_size_in_bytes),
            "output_mb": _mb(mem.output_size_in_bytes), "dense_cost_matrix_mb": _mb(4 * n * n)}


def _fresh(args: list[str], *, timeout: float) -> dict:
    """Run ``main(["--worker", *args])`` in a fresh process and return its JSON (or ``{"error": ...}``)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    try:
        proc = subprocess.run([sys.executable, "-W", "ignore", "-m", "benchmarks.bench_pairwise", "--worker", *args],
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln and not ln.startswith((" ", "-", "For simpl"))]
        return {"error": (lines or ["?"])[-1][-300:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- rows
def _timing(times: list[float], compile_s: float = 0.0) -> Timing:
    return Timing(compile_s, float(np.median(times)), min(times), max(times), len(times))


OTT_MAX_N = 100_000  # largest n ott-jax runs at (``--ott-max-n``: its n = 1e5 cases take minutes each here)
GP_DENSE_MAX = 20_000  # largest n also solved by dense Cholesky (``--dense-max``)
_PROGRESS: list[pathlib.Path] = []  # where finished cases are appended as they come (a killed run keeps them)


def _progress(res: dict) -> None:
    for path in _PROGRESS:
        with open(path, "a") as fh:
            fh.write(json.dumps(res) + "\n")


def _sinkhorn_rows(quick: bool) -> tuple[list[dict], list[dict]]:
    chunk = 2048
    if quick:
        cases = [(2000, 2)]
    else:
        cases = [(10000, 2), (10000, 64), (100000, 2), (100000, 64)]
    rows, raw = [], []
    ott_error = None if quick else _ott_unpatched_error()
    if ott_error:
        rows.append(record("sinkhorn_iteration", "ott-jax as released", "ott-jax", error=ott_error))
    for n, d in cases:
        for impl in ("jaxbayes", "ott-jax"):
            case = f"n=m={n} d={d} chunk={chunk}"
            if impl == "ott-jax" and n > OTT_MAX_N:
                rows.append(record("sinkhorn_iteration", case, OTT_SHIM, error=f"skipped: n > --ott-max-n {OTT_MAX_N}"))
                continue
            repeats = 3 if n <= 10000 else 1
            solve = n <= 10000
            if quick:
                res = sinkhorn_case(impl, n, d, chunk, repeats=repeats, solve=solve)
                res.pop("peak_rss_mb")
                res.pop("rss_before_run_mb")
            else:
                print(f"[pairwise] sinkhorn {impl} n={n} d={d} ...", file=sys.stderr, flush=True)
                res = _fresh(["sinkhorn", impl, str(n), str(d), str(chunk), str(repeats), str(int(solve))],
                             timeout=1800)
            res.setdefault("impl", impl)
            res.update(n=n, d=d)
            raw.append(res)
            _progress(res)
            label = "jaxbayes" if impl == "jaxbayes" else OTT_SHIM
            if "error" in res:
                rows.append(record("sinkhorn_iteration", case, label, error=res["error"]))
                continue
            mem = {k: res[k] for k in ("temp_mb", "solve_temp_mb", "peak_rss_mb", "rss_before_run_mb") if k in res}
            t = _timing(res["iteration_times_s"], res["compile_s"])
            rows.append(record("sinkhorn_iteration", case, label, t, **mem,
                               pairs=n * n))
            if "solve10_s" in res:
                rows.append(record("sinkhorn_solve_10_iterations", case, label, _timing([res["solve10_s"]]),
                                   cost=res["solve10_cost"], solve_temp_mb=res["solve_temp_mb"]))
    return rows, raw


def _chunk_rows(quick: bool) -> list[dict]:
    """Our pass at one size for several tile sides (the tile that fits the caches wins on CPU)."""
    n, d = (2000, 2) if quick else (10000, 2)
    rows = []
    for chunk in ((512,) if quick else (256, 512, 1024, 2048, 4096)):
        res = sinkhorn_case("jaxbayes", n, d, chunk, repeats=2 if quick else 3, solve=False)
        t = _timing(res["iteration_times_s"])
        rows.append(record("sinkhorn_iteration_chunk", f"n=m={n} d={d} chunk={chunk}", "jaxbayes", t,
                           temp_mb=res["temp_mb"], pairs=n * n))
    return rows


def _sharded_rows(quick: bool) -> list[dict]:
    n, chunk = (10000, 512) if quick else (1_000_000, 2048)
    rows = []
    for devices in (1, 8):
        res = _fresh(["sharded", str(n), "2", str(devices), str(chunk)], timeout=1200)
        case = f"n=m={n} d=2 chunk={chunk} (compile only)"
        if "error" in res:
            rows.append(record("sinkhorn_sharded_memory", case, f"jaxbayes {devices} device(s)", error=res["error"]))
            continue
        rows.append(record("sinkhorn_sharded_memory", case, f"jaxbayes {devices} device(s)",
                           _timing([res["compile_s"]]), temp_mb=res["temp_mb"], argument_mb=res["argument_mb"],
                           output_mb=res["output_mb"], dense_cost_matrix_mb=res["dense_cost_matrix_mb"]))
    return rows


def _gp_rows(quick: bool) -> list[dict]:
    from benchmarks import bench_cg_gp

    sizes = (500,) if quick else (10000, 20000)
    steps = 2 if quick else 8
    rows = []
    with jax.enable_x64(True):
        for n in sizes:
            print(f"[pairwise] cg_gp n={n} ...", file=sys.stderr, flush=True)
            res = bench_cg_gp.fit(n, steps=steps, solver=bench_cg_gp.default_solver(), dense_max=GP_DENSE_MAX,
                                  chunk_size=2048, verbose=not quick)
            _progress(res)
            rows += bench_cg_gp.records(res)
    return rows


def _plot(raw: list[dict], limits: dict, outdir: pathlib.Path) -> list[str]:
    from jaxbayes.demos import plotting

    ok = [r for r in raw if "error" not in r]
    if not ok:
        return []
    fig, axes = plotting.figure(2, 1, size=4.2)
    ax_t, ax_m = axes[0]
    ns = np.array(sorted({r["n"] for r in ok}), float)
    grid = np.geomspace(ns.min(), ns.max(), 20) if len(ns) > 1 else ns
    for d, style in ((2, "-"), (64, "--")):
        for impl, color in (("jaxbayes", "C0"), ("ott-jax", "C1")):
            sel = sorted((r for r in ok if r["impl"] == impl and r["d"] == d), key=lambda r: r["n"])
            if not sel:
                continue
            label = f"{'jaxbayes' if impl == 'jaxbayes' else OTT_SHIM} d={d}"
            ax_t.plot([r["n"] for r in sel], [np.median(r["iteration_times_s"]) for r in sel], style, marker="o",
                      color=color, label=label)
            ax_m.plot([r["n"] for r in sel], [max(r["temp_mb"], 1e-3) for r in sel], style, marker="o",
                      color=color, label=label)
    ax_t.plot(grid, 2 * grid**2 / limits["exp_per_s"], ":", color="k",
              label=f"exp limit (2 n^2 / {limits['exp_per_s']:.2g} exp/s)")
    ax_t.set(xscale="log", yscale="log", xlabel="n = m (points per cloud)", ylabel="seconds per Sinkhorn iteration",
             title="time per iteration (two log-sum-exp passes)")
    ax_m.plot(grid, 4 * grid**2 / 2**20, ":", color="k", label="dense float32 cost matrix (4 n^2 bytes)")
    ax_m.set(xscale="log", yscale="log", xlabel="n = m (points per cloud)", ylabel="compiled temp memory (MiB)",
             title="XLA temp buffers of one iteration")
    for ax in (ax_t, ax_m):
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    return [plotting.save(fig, outdir / "bench_pairwise.png")]


def run(outdir: pathlib.Path, *, quick: bool) -> list[dict]:
    """Run the pairwise-engine benchmarks; returns records and writes ``bench_pairwise.png`` and
    ``pairwise_raw.json`` into ``outdir``."""
    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    first = _limits(quick)
    rows, raw = _sinkhorn_rows(quick)
    for section in (_chunk_rows, _sharded_rows, _gp_rows):
        start = time.perf_counter()
        new = section(quick)
        for r in new:
            _progress(r)
        rows += new
        print(f"[pairwise] {section.__name__} {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    # on a shared machine the load drifts: measure the limits again at the end and keep the better rates
    limits = _best(first, _limits(quick)) if not quick else first
    load = os.getloadavg()[0]
    head = [record("machine_limits", f"jnp.exp over {limits['elements']} float32", "jaxbayes", limits["t_exp"],
                   exp_per_s=limits["exp_elementwise_per_s"], load_average=load, cpu_count=os.cpu_count()),
            record("machine_limits", f"sum(exp) over {limits['elements']} float32, rows of 2048", "jaxbayes",
                   limits["t_fused"], exp_per_s=limits["exp_fused_sum_per_s"], load_average=load),
            record("machine_limits", f"negate (copy) {limits['elements']} float32", "jaxbayes", limits["t_copy"],
                   copy_bytes_per_s=limits["copy_bytes_per_s"], load_average=load)]
    rows = head + rows
    _add_limit_fields(rows, limits)
    _plot(raw, limits, outdir)
    public = {k: v for k, v in limits.items() if not k.startswith("t_")}
    (outdir / "pairwise_raw.json").write_text(json.dumps({"limits": public, "first_limits": {
        k: v for k, v in first.items() if not k.startswith("t_")}, "sinkhorn": raw}, indent=2))
    return rows


def main(argv=None) -> None:
    global OTT_MAX_N, GP_DENSE_MAX
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench-results/pairwise")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ott-max-n", type=int, default=OTT_MAX_N, help="largest n ott-jax runs at")
    ap.add_argument("--dense-max", type=int, default=GP_DENSE_MAX, help="largest GP n also run by dense Cholesky")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    OTT_MAX_N, GP_DENSE_MAX = args.ott_max_n, args.dense_max
    if args.worker:
        kind, *rest = args.worker
        if kind == "sinkhorn":
            impl, n, d, chunk, repeats, solve = rest
            out = sinkhorn_case(impl, int(n), int(d), int(chunk), repeats=int(repeats), solve=bool(int(solve)))
        else:
            n, d, devices, chunk = map(int, rest)
            jax.config.update("jax_num_cpu_devices", devices)
            out = sharded_compile(n, d, devices, chunk)
        print(json.dumps(out))
        return
    from benchmarks.harness import markdown_table, save_results

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _PROGRESS[:] = [out / "progress.jsonl"]
    start = time.perf_counter()
    rows = run(out, quick=args.quick)
    save_results(out / "pairwise.json", rows, pillar="pairwise", quick=args.quick,
                 wall_s=time.perf_counter() - start)
    table = markdown_table(rows)
    (out / "results.md").write_text(f"# pairwise ({'quick' if args.quick else 'full'})\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
