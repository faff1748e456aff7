"""The benchmarks at accelerator sizes, in one prepared script (for a lent GPU; also runs, slowly, on a CPU).

    python -m benchmarks.accelerator --out DIR [--budget-s 480] [--small]

Sections, each timed against its peer in the same process where one is installed, each a ``try`` of its own
(an error is a row, the run goes on), each skipped once ``--budget-s`` is spent; every finished section is
appended to ``DIR/progress.jsonl`` as it comes, so a killed run keeps it:

1. the machine's limits (:func:`benchmarks.harness.machine_limits`: copy bandwidth, GEMM rates) and the
   pairwise engine's (exponentials per second, :func:`benchmarks.bench_pairwise._limits`);
2. the pillars' own cases at their quick sizes (OT, GP, VI, SDE), so their peer ratios can be read on this
   device: ``bench_ot`` Sinkhorn / sparse / exact rows, ``bench_kernels`` GP rows at their full sizes,
   ``bench_vi`` (quick), ``bench_sde`` step overhead and likelihood;
3. the sizes that need an accelerator: a dense Sinkhorn on a stored float32 kernel for ``n`` up to 32 000
   (``8 n^2`` bytes per iteration against the copy bandwidth) vs ott-jax; one matrix-free Sinkhorn
   iteration at ``n = 1e5`` and ``1e6`` (``2 n^2`` exponentials against the device's exp rate) vs ott-jax's
   online point cloud at ``1e5``; the matrix-free GP (BBMM) at ``n = 1e5``.

``DIR/results.md`` holds the limits and one table; ``DIR/scaling.png`` time against size per benchmark with
the roofline time dashed; ``DIR/results.json`` the records. ``--small`` shrinks section 3 (a CPU smoke run).
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import sys
import time
import traceback
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import (
    Timing,
    limits_table,
    machine_limits,
    markdown_table,
    plot_scaling,
    record,
    save_results,
    time_interleaved,
)


@functools.cache
def _exp_limits() -> dict:
    """The pairwise engine's exp-rate measurement, once per run (the limits row and the matrix-free rows)."""
    from benchmarks import bench_pairwise

    return bench_pairwise._limits(quick=False)


def _limit_rows() -> list[dict]:
    lim = machine_limits()
    exp = _exp_limits()
    return [record("machine_limits", "measured", "this device", copy_gb_per_s=lim["copy_bytes_per_s"] / 1e9,
                   **{f"{k}_gflop_per_s": lim[k] / 1e9 for k in ("float32", "float32_highest", "float64", "bfloat16")
                      if k in lim},
                   exp_per_s=exp["exp_per_s"], device_kind=lim["device_kind"])]


def _pillar_sections() -> list[tuple[str, Callable[[], list[dict]]]]:
    from benchmarks import bench_kernels, bench_ot, bench_sde, bench_vi

    return [("ot sinkhorn", lambda: bench_ot._sinkhorn_rows(True)),
            ("ot sparse", lambda: bench_ot._sparse_rows(True)),
            ("ot exact", lambda: bench_ot._exact_rows(True)),
            ("kernels gp", lambda: bench_kernels._gp_rows(False)),
            ("vi", lambda: bench_vi.conjugate(True) + bench_vi.logistic(True) + bench_vi.bnn(True)
             + bench_vi.flows(True)),
            ("sde overhead", lambda: bench_sde._overhead(True)),
            ("sde likelihood", lambda: bench_sde._likelihood(True))]


def _dense_sinkhorn_rows(sizes: tuple[int, ...], iterations: int = 100) -> list[dict]:
    """A fixed number of iterations on a stored kernel: ours vs ott-jax's dense PointCloud (same epsilon)."""
    from ott.geometry import pointcloud as ott_pc
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import sinkhorn as ott_sinkhorn

    from benchmarks.bench_ot import _clouds
    from jaxbayes import ot

    ours = jax.jit(lambda x, y, eps: ot.sinkhorn(ot.pointcloud(x, y), epsilon=eps, relative_epsilon=False,
                                                 max_iterations=iterations, fixed_iterations=True).cost)
    solver = ott_sinkhorn.Sinkhorn(threshold=-1.0, min_iterations=iterations, max_iterations=iterations)
    theirs = jax.jit(lambda x, y, eps: solver(linear_problem.LinearProblem(
        ott_pc.PointCloud(x, y, epsilon=eps))).reg_ot_cost)
    rows = []
    for n in sizes:
        x, y = (jnp.asarray(a) for a in _clouds(n, 64))
        eps = float(0.01 * ot.pointcloud(x, y).cost_scale())
        timed = time_interleaved({"ours": lambda: ours(x, y, eps), "ott": lambda: theirs(x, y, eps)}, repeats=3)
        work = dict(size=n, series="d=64", bytes_moved=8.0 * n * n * iterations)
        case = f"n={n} d=64 {iterations} iterations"
        (t, c1), (t2, c2) = timed["ours"], timed["ott"]
        rows.append(record("sinkhorn_dense_fixed", case, "jaxbayes", t, **work, cost=float(c1)))
        rows.append(record("sinkhorn_dense_fixed", case, "ott-jax", t2, **work,
                           cost_rel_diff=abs(float(c2) / float(c1) - 1)))
    return rows


def _matrix_free_rows(cases: tuple[tuple[int, int, int], ...], ott_max_n: int) -> list[dict]:
    """One matrix-free Sinkhorn iteration (two log-sum-exp passes): ours vs ott-jax's online point cloud."""
    from benchmarks import bench_pairwise

    exp_rate = _exp_limits()["exp_per_s"]
    rows = []
    for n, d, chunk in cases:
        for impl in ("jaxbayes", "ott-jax"):
            if impl == "ott-jax" and n > ott_max_n:
                continue
            label = "jaxbayes" if impl == "jaxbayes" else bench_pairwise.OTT_SHIM
            case = f"n=m={n} d={d} chunk={chunk}"
            res = bench_pairwise.sinkhorn_case(impl, n, d, chunk, repeats=3, solve=False)
            times = res["iteration_times_s"]
            t = Timing(res["compile_s"], float(np.median(times)), min(times), max(times), len(times))
            rows.append(record("sinkhorn_matrix_free_iteration", case, label, t, size=n, series=f"d={d}",
                               temp_mb=res["temp_mb"], exp_fraction=2.0 * n * n / exp_rate / t.median_s,
                               pairs_per_s=2.0 * n * n / t.median_s, limit_s=2.0 * n * n / exp_rate))
    return rows


def _cg_gp_rows(n: int, dense_max: int) -> list[dict]:
    from benchmarks import bench_cg_gp

    with jax.enable_x64(True):
        res = bench_cg_gp.fit(n, steps=2, solver=bench_cg_gp.default_solver(), dense_max=dense_max,
                              chunk_size=4096, verbose=True)
        return bench_cg_gp.records(res)


def _guarded(name: str, fn: Callable[[], list[dict]]) -> list[dict]:
    print(f"[accelerator] {name} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        rows = fn()
    except Exception as err:  # noqa: BLE001 - one broken case must not lose the others
        traceback.print_exc()
        rows = [record(name.replace(" ", "_"), "error", "jaxbayes", error=f"{type(err).__name__}: {err}"[:300])]
    print(f"[accelerator] {name} done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> pathlib.Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench-accelerator")
    ap.add_argument("--budget-s", type=float, default=480.0, help="sections not started by then are skipped")
    ap.add_argument("--small", action="store_true", help="CPU-sized section 3 (a smoke run)")
    args = ap.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.small:
        big = [("dense sinkhorn", lambda: _dense_sinkhorn_rows((500, 1000), iterations=10)),
               ("matrix-free sinkhorn", lambda: _matrix_free_rows(((2000, 2, 512), (4000, 2, 512)), 2000)),
               ("cg gp", lambda: _cg_gp_rows(600, 600))]
    else:
        big = [("dense sinkhorn", lambda: _dense_sinkhorn_rows((8000, 16000, 32000))),
               ("matrix-free sinkhorn", lambda: _matrix_free_rows(
                   ((100_000, 2, 4096), (100_000, 64, 4096), (1_000_000, 2, 8192), (1_000_000, 64, 8192)),
                   ott_max_n=100_000)),
               ("cg gp", lambda: _cg_gp_rows(100_000, 20_000))]
    sections = [("limits", _limit_rows), *_pillar_sections(), *big]
    start, rows = time.perf_counter(), []
    for name, fn in sections:
        if time.perf_counter() - start > args.budget_s:
            rows.append(record(name.replace(" ", "_"), "skipped", "jaxbayes", error=f"budget {args.budget_s} s spent"))
            continue
        new = _guarded(name, fn)
        rows += new
        with open(out / "progress.jsonl", "a") as fh:
            for r in new:
                fh.write(json.dumps(r, default=str) + "\n")
    save_results(out / "results.json", rows, limits=machine_limits())
    plot_scaling(rows, out / "scaling.png")
    text = (f"# jaxbayes on {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}\n\n"
            f"## Machine limits\n\n{limits_table(machine_limits())}\n\n## Results\n\n{markdown_table(rows)}\n")
    (out / "results.md").write_text(text)
    print(text)
    return out / "results.md"


if __name__ == "__main__":
    main()
