"""Timing, machine capture, JSON records, Markdown tables and isolated peer environments.

Benchmarks compare jaxbayes with the library a user would otherwise pick, in the same process run, on the
same data. Absolute times on shared CPU machines are noisy; the ratios are what the table reports.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

REFERENCE = "jaxbayes"


class Timing(NamedTuple):
    """Wall-clock seconds: ``compile_s`` is the first call minus the median (JIT compile, caches)."""

    compile_s: float
    median_s: float
    min_s: float
    max_s: float
    repeats: int


def _block(out: Any) -> Any:
    try:
        import jax

        return jax.block_until_ready(out)
    except (ImportError, TypeError):
        return out


def time_fn(fn: Callable, *args, repeats: int = 5, warmup: int = 1, **kwargs) -> tuple[Timing, Any]:
    """Time ``fn(*args, **kwargs)``: ``warmup`` untimed-for-median calls, then ``repeats`` timed calls.

    Every call is followed by ``jax.block_until_ready`` so asynchronous dispatch is not mistaken for speed.
    ``warmup=0`` (for slow host code with nothing to compile) times the calls alone and reports no compile
    time. Returns the timing and the output of the last call.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    first = None
    out = None
    for _ in range(warmup):
        start = time.perf_counter()
        out = _block(fn(*args, **kwargs))
        first = time.perf_counter() - start if first is None else first
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = _block(fn(*args, **kwargs))
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    compile_s = 0.0 if first is None else max(first - median, 0.0)
    return Timing(compile_s, median, min(times), max(times), repeats), out


def time_interleaved(calls: dict[str, Callable[[], Any]], *, repeats: int = 5) -> dict[str, tuple[Timing, Any]]:
    """Time several zero-argument calls round-robin: one warm-up (compile) call each, then ``repeats`` rounds
    in which every call runs once.

    On a shared machine the load drifts over seconds; timing one implementation's repeats back to back and
    then the next's lets that drift decide the ratio, while alternating spreads it over all of them alike.
    Returns ``name -> (timing, output of the last call)``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    first, times, outs = {}, {name: [] for name in calls}, {}
    for name, call in calls.items():
        start = time.perf_counter()
        outs[name] = _block(call())
        first[name] = time.perf_counter() - start
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            outs[name] = _block(call())
            times[name].append(time.perf_counter() - start)
    result = {}
    for name, ts in times.items():
        median = statistics.median(ts)
        result[name] = (Timing(max(first[name] - median, 0.0), median, min(ts), max(ts), repeats), outs[name])
    return result


def record(benchmark: str, case: str, impl: str, timing: Timing | None = None, *, flops: float | None = None,
           bytes_moved: float | None = None, peak: str = "float32", **metrics: Any) -> dict:
    """One row of results: what was run (benchmark, case), by whom (impl), how fast, and what it gave.

    ``flops`` / ``bytes_moved`` are the work of one timed call under the benchmark's stated model (e.g. ``n^3 /
    3`` for a Cholesky, ``8 n m`` bytes per Sinkhorn iteration on a stored float32 kernel); with a timing they
    add the achieved rate and its fraction of :func:`machine_limits` (``peak`` names the matmul rate: see
    there), and ``limit_s``, the time the work would take at the limit. Give ``size`` (and ``series`` when a
    benchmark has several curves) for the scaling plot."""
    row: dict[str, Any] = {"benchmark": benchmark, "case": case, "impl": impl}
    if timing is not None:
        row.update(time_s=timing.median_s, time_min_s=timing.min_s, time_max_s=timing.max_s,
                   compile_s=timing.compile_s, repeats=timing.repeats)
        if flops is not None or bytes_moved is not None:
            row.update(roofline(timing.median_s, flops=flops, bytes_moved=bytes_moved, peak=peak))
    row.update({k: _jsonable(v) for k, v in metrics.items()})
    return row


# Vendor datasheet ceilings for accelerators we measure on (dense, no sparsity), shown beside the measured ones.
NOMINAL = {"NVIDIA H200": {"copy_bytes_per_s": 4.8e12, "float32_highest": 67e12, "float32": 495e12,
                           "bfloat16": 989e12, "float64": 67e12}}


def _best_rate(fn: Callable, arg: Any, work: float, repeats: int) -> float:
    timing, _ = time_fn(fn, arg, repeats=repeats)
    return work / timing.min_s  # the least-disturbed run: load on a shared machine only slows


@functools.cache
def machine_limits() -> dict[str, Any]:
    """This machine's ceilings, measured once per process: the memory bandwidth of a copy (a jitted ``2 * v``
    over an array several times the last-level cache, in place; bytes read + written per second) and the matmul rate of
    a square GEMM (``2 n^3`` FLOP) in float32 at JAX's default precision (TF32 on NVIDIA GPUs), float32 at
    ``HIGHEST`` precision, float64, and bfloat16 on accelerators. ``nominal`` holds the vendor's figures where
    the device is known (:data:`NOMINAL`). A benchmark's fractions are of the measured rates."""
    import jax
    import jax.numpy as jnp

    accel = jax.default_backend() != "cpu"
    size, n, repeats = (2**28, 8192, 10) if accel else (2**24, 1024, 3)
    # the output reuses the input's buffer (donated): a fresh 64 MiB output on the CPU costs page faults
    # that run at a tenth of the bandwidth, which no benchmark's steady-state loop pays
    double = jax.jit(lambda u: 2 * u, donate_argnums=0)
    v = _block(double(jnp.ones(size, jnp.float32)))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        v = _block(double(v))
        times.append(time.perf_counter() - start)
    limits: dict[str, Any] = {"copy_bytes_per_s": 8.0 * size / min(times)}
    del v
    dtypes = [("float32", jnp.float32, None), ("float32_highest", jnp.float32, jax.lax.Precision.HIGHEST),
              ("float64", jnp.float64, None)] + ([("bfloat16", jnp.bfloat16, None)] if accel else [])
    for label, dtype, precision in dtypes:
        with jax.enable_x64(dtype == jnp.float64):
            m = n // 2 if dtype == jnp.float64 else n
            a = jax.random.normal(jax.random.key(0), (m, m), dtype)
            gemm = jax.jit(lambda u, p=precision: jnp.matmul(u, u, precision=p))
            limits[label] = _best_rate(gemm, a, 2.0 * m**3, repeats)
    limits["device_kind"] = jax.devices()[0].device_kind
    limits["nominal"] = NOMINAL.get(limits["device_kind"], {})
    return limits


def roofline(time_s: float, *, flops: float | None = None, bytes_moved: float | None = None,
             peak: str = "float32") -> dict[str, float]:
    """Achieved rates of one timed call and their fractions of :func:`machine_limits`; ``limit_s`` is the
    larger of ``flops / peak rate`` and ``bytes_moved / bandwidth`` (the roofline time of that work)."""
    lim = machine_limits()
    out: dict[str, float] = {}
    bounds = []
    if flops is not None:
        out.update(flops=flops, gflop_per_s=flops / time_s / 1e9, flop_fraction=flops / time_s / lim[peak])
        bounds.append(flops / lim[peak])
    if bytes_moved is not None:
        bw = lim["copy_bytes_per_s"]
        out.update(bytes_moved=bytes_moved, gb_per_s=bytes_moved / time_s / 1e9,
                   bandwidth_fraction=bytes_moved / time_s / bw)
        bounds.append(bytes_moved / bw)
    out["limit_s"] = max(bounds)
    return out


def limits_table(limits: dict[str, Any]) -> str:
    """The measured ceilings (and the vendor's, where known) as a Markdown table."""
    rows = ["| limit | measured | nominal |", "|---|---|---|"]
    for key, unit, scale in [("copy_bytes_per_s", "GB/s", 1e9), ("float32", "GFLOP/s", 1e9),
                             ("float32_highest", "GFLOP/s", 1e9), ("float64", "GFLOP/s", 1e9),
                             ("bfloat16", "GFLOP/s", 1e9)]:
        if key in limits:
            nominal = limits["nominal"].get(key)
            rows.append(f"| {key.replace('_per_s', '')} ({unit}) | {limits[key] / scale:.4g} | "
                        f"{'-' if nominal is None else f'{nominal / scale:.4g}'} |")
    return "\n".join(rows)


def plot_scaling(records: Sequence[dict], path: str | Path) -> Path | None:
    """Time against problem size, one panel per benchmark whose rows carry ``size``: a line per implementation
    (and ``series``), log-log, with jaxbayes's roofline time (``limit_s``) dashed. ``None`` if nothing to plot."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        if "size" in r and "time_s" in r:
            groups.setdefault(r["benchmark"], []).append(r)
    groups = {b: rows for b, rows in groups.items() if len({r["size"] for r in rows}) > 1}
    if not groups:
        return None
    from jaxbayes.demos import plotting

    fig, axes = plotting.figure(len(groups), 1, size=4.0)
    for ax, (bench, rows) in zip(axes[0], groups.items(), strict=True):
        lines: dict[tuple[str, str], list[dict]] = {}
        for r in rows:
            lines.setdefault((r["impl"], str(r.get("series", ""))), []).append(r)
        for (impl, series), pts in lines.items():
            pts = sorted(pts, key=lambda r: r["size"])
            label = f"{impl} {series}".strip()
            (line,) = ax.plot([r["size"] for r in pts], [r["time_s"] for r in pts], "o-", label=label)
            if impl == REFERENCE and all("limit_s" in r for r in pts):
                ax.plot([r["size"] for r in pts], [r["limit_s"] for r in pts], "--", color=line.get_color(),
                        label=f"machine limit {series}".strip())
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("problem size n")
        ax.set_ylabel("seconds per call (median)")
        ax.set_title(bench, fontsize=9)
        ax.legend(fontsize=6)
    plotting.save(fig, path)
    return Path(path)


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if hasattr(v, "shape") and getattr(v, "shape", None) == ():
        v = v.item()
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, float) and not np.isfinite(v):
        return str(v)
    return v


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """Where and with what the numbers were measured."""
    import jax

    packages = ["jax", "jaxlib", "flax", "optax", "distrax", "ott-jax", "diffrax", "numpy", "scipy", "pot",
                "numpyro", "blackjax", "tinygp", "jaxbayes"]
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "versions": {p: v for p in packages if (v := _version(p))},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def save_results(path: str | Path, records: Sequence[dict], **extra: Any) -> Path:
    """Write ``{"machine": ..., "records": [...], **extra}`` as JSON and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine_info(), "records": [_jsonable(r) for r in records], **_jsonable(extra)}
    path.write_text(json.dumps(payload, indent=2))
    return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def markdown_table(records: Sequence[dict], *, reference: str = REFERENCE) -> str:
    """Rows grouped by (benchmark, case); ``vs jaxbayes`` is the peer's time over jaxbayes's time
    (above 1: jaxbayes is faster). Extra metrics are listed after the times."""
    metric_keys: list[str] = []
    for r in records:
        for k in r:
            if k not in {"benchmark", "case", "impl", "time_s", "time_min_s", "time_max_s", "compile_s",
                         "repeats"} and k not in metric_keys and not isinstance(r[k], list | dict):
                metric_keys.append(k)
    header = ["benchmark", "case", "impl", "median time (s)", "vs jaxbayes", *metric_keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["benchmark"], r["case"]), []).append(r)
    for (bench, case), rows in groups.items():
        ref = next((r.get("time_s") for r in rows if r["impl"] == reference), None)
        for r in rows:
            t = r.get("time_s")
            ratio = f"{t / ref:.2f}x" if (t is not None and ref) else "-"
            cells = [bench, case, r["impl"], _fmt(t) if t is not None else "-", ratio,
                     *(_fmt(r.get(k, "")) for k in metric_keys)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cache_dir() -> Path:
    """Where peer environments live: ``$JAXBAYES_CACHE`` or ``~/.cache/jaxbayes``."""
    return Path(os.environ.get("JAXBAYES_CACHE", Path.home() / ".cache" / "jaxbayes"))


class PeerEnv(NamedTuple):
    """A virtual environment for a peer whose dependencies clash with ours (e.g. neural-tangents needs
    jax <= 0.5.3). Scripts run there as ``python script.py in.npz out.npz``."""

    name: str
    python: Path

    def run(self, script: str | Path, inputs: dict[str, np.ndarray], *, timeout: float = 1800) -> dict:
        """Run ``script`` on ``inputs`` in this environment and return the arrays it saved."""
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
            np.savez(src, **inputs)
            env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "XLA_FLAGS"}}
            proc = subprocess.run([str(self.python), str(script), str(src), str(dst)], capture_output=True,
                                  text=True, timeout=timeout, env=env)
            if proc.returncode:
                raise RuntimeError(f"peer {self.name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
            with np.load(dst) as data:
                return {k: data[k] for k in data.files}


def peer_env(name: str, requirements: Sequence[str], *, python: str | None = None) -> PeerEnv:
    """Create (once, cached by the requirement list) and return a peer's virtual environment.

    Args:
      name: a label for the environment folder.
      requirements: pip requirement strings, e.g. ``["jax[cpu]==0.5.3", "neural-tangents==0.6.5"]``.
      python: the interpreter to build it from (default: the running one).
    """
    digest = hashlib.sha1("\n".join(requirements).encode()).hexdigest()[:10]
    root = cache_dir() / "peers" / f"{name}-{digest}"
    exe = root / "bin" / "python"
    marker = root / ".complete"
    if not marker.exists():
        subprocess.run([python or sys.executable, "-m", "venv", "--clear", str(root)], check=True)
        proc = subprocess.run([str(exe), "-m", "pip", "install", "-q", *requirements], capture_output=True,
                              text=True)
        if proc.returncode:
            raise RuntimeError(f"could not create the {name} peer environment:\n{proc.stderr[-4000:]}")
        marker.write_text("\n".join(requirements))
    return PeerEnv(name, exe)
