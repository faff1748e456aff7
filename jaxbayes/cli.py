"""The ``jaxbayes`` command: ``info``, ``demo``, ``bench``, ``validate JOB.toml`` and ``run JOB.toml``.

Bad input (unknown subcommand or pillar, missing file) prints one line on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

PILLARS = ("sde", "ot", "kernels", "vi")
CORE = ("jax", "jaxlib", "flax", "optax", "distrax", "ott-jax", "chex", "orbax-checkpoint", "diffrax", "numpy")


class UsageError(Exception):
    """A one-line complaint about the command line; exit code 2."""


class _Parser(argparse.ArgumentParser):
    list_job_kinds = False  # set on the ``run`` parser: its help lists every kind and its keys

    def error(self, message: str):  # one line, no usage dump
        raise UsageError(message)

    def format_help(self) -> str:
        if not self.list_job_kinds:
            return super().format_help()
        from jaxbayes.jobs import job_kinds  # imports every pillar: only when help is asked for

        lines = [super().format_help(), "job kinds ([params] keys: type, default; description):"]
        for name, kind in sorted(job_kinds().items()):
            lines.append(f"  {name}: {kind.description}")
            keys = [*kind.params.items(), *((f"[data] {k}", f) for k, f in kind.data_fields.items())]
            for key, field in keys:
                types = field.type if isinstance(field.type, tuple) else (field.type,)
                default = "required" if field.default is _required_marker() else repr(field.default)
                lines.append(f"      {key} ({'/'.join(t.__name__ for t in types)}, {default}): {field.doc}")
        return "\n".join(lines) + "\n"


def _required_marker():
    from jaxbayes.jobs import required

    return required()


def _add_cpu_devices(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("--cpu-devices", type=int, metavar="N", default=default,
                        help="simulate N CPU devices (sets jax_num_cpu_devices before JAX starts)")


def _info(_: argparse.Namespace) -> int:
    import jax

    import jaxbayes

    devices = jax.devices()
    print(f"jaxbayes {jaxbayes.__version__}")
    print(f"backend: {jax.default_backend()}")
    print(f"devices: {len(devices)} ({devices[0].device_kind}); local devices: {jax.local_device_count()}")
    print(f"processes: {jax.process_count()} (this is process {jax.process_index()})")
    for dist in CORE:
        try:
            print(f"{dist}: {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            print(f"{dist}: not installed")
    return 0


def _check_pillars(names: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    for name in names or ():
        if name not in available:
            raise UsageError(f"unknown pillar {name!r}; available: {', '.join(available) or 'none'}")
    return list(names) if names else list(available)


def _demo(args: argparse.Namespace) -> int:
    from jaxbayes.demos import demos

    registry = demos()
    selected = _check_pillars(args.only, list(registry))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    index = ["# jaxbayes demo report", "", f"Mode: {'quick' if args.quick else 'full'}.", ""]
    for name in selected:
        demo = registry[name]
        print(f"[demo] {name}: {demo.description}", file=sys.stderr, flush=True)
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        metrics = demo.fn(folder, quick=args.quick)
        elapsed = time.perf_counter() - start
        metrics = {**metrics, "wall_s": round(elapsed, 2)}
        (folder / "summary.json").write_text(json.dumps(metrics, indent=2, default=float))
        print(f"[demo] {name} done in {elapsed:.0f} s", file=sys.stderr, flush=True)
        index += [f"## {name}", "", demo.description, "", f"[summary.json]({name}/summary.json)", ""]
        index += metric_lines({k: v for k, v in metrics.items() if k != "figures"}) + [""]
        skipped = sorted(skipped_entries(metrics))
        if skipped:
            index += ["Skipped: " + "; ".join(f"{where} ({why})" for where, why in skipped), ""]
        index += [f"![{fig}]({name}/{fig})" for fig in metrics.get("figures", [])] + [""]
    (out / "index.md").write_text("\n".join(index))
    print(f"report: {out / 'index.md'}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    folder = _benchmarks_dir()
    if folder is None:
        raise UsageError("the benchmark suite lives in the source checkout: run `jaxbayes bench` from its root")
    sys.path.insert(0, str(folder.parent))
    from benchmarks.run import available, run_suite

    selected = _check_pillars(args.only, available())
    summary = run_suite(args.out, only=selected, quick=args.quick)
    print(summary.read_text())
    print(f"results: {summary}")
    return 0


def metric_lines(metrics: dict, depth: int = 0) -> list[str]:
    """Markdown bullets for every metric, nested tables as nested lists (nothing is dropped).

    Example:
      >>> metric_lines({"a": 1.5, "b": {"c": [1, 2]}})
      ['- a: 1.5', '- b:', '  - c: [1, 2]']
    """
    lines = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            lines += [f"{'  ' * depth}- {key}:"] + metric_lines(value, depth + 1)
        else:
            lines.append(f"{'  ' * depth}- {key}: {value}")
    return lines


def skipped_entries(metrics: dict, where: str = "") -> list[tuple[str, str]]:
    """``(path, reason)`` of every nested table that a demo marked ``{"skipped": reason}``."""
    found = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            path = f"{where}.{key}" if where else key
            if "skipped" in value:
                found.append((path, str(value["skipped"])))
            found += skipped_entries(value, path)
    return found


def _benchmarks_dir() -> Path | None:
    """The ``benchmarks/`` folder of the source checkout jaxbayes runs from, if there is one."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
        candidate = root / "benchmarks"
        if (candidate / "run.py").is_file():
            return candidate
    return None


def _run(args: argparse.Namespace) -> int:
    job = Path(args.job)
    if not job.is_file():
        raise UsageError(f"job file not found: {job}")
    from jaxbayes.jobs import JobConfigError, run_job_file

    try:
        return run_job_file(job, resume=args.resume, overrides=args.set or ())
    except JobConfigError as err:
        raise UsageError(str(err)) from err


def _validate(args: argparse.Namespace) -> int:
    """Check a job file, its overrides and its data completely; run nothing, write nothing."""
    job = Path(args.job)
    if not job.is_file():
        raise UsageError(f"job file not found: {job}")
    from jaxbayes.jobs import JobConfigError, count_steps, job_kinds, load_job, plan_lines

    kinds = job_kinds()
    try:
        spec = load_job(job, kinds, args.set or ())
    except JobConfigError as err:
        raise UsageError(str(err)) from err
    kind = kinds[spec.kind]
    steps = count_steps(kind, spec.params, spec.data)
    print(f"{job}: valid {spec.kind} job ({steps} steps); output: {spec.output_dir}")
    for line in plan_lines(spec, kind):
        print(line)
    return 0


def _add_job_arguments(parser: argparse.ArgumentParser) -> None:
    parser.list_job_kinds = True
    parser.add_argument("job", help="path of the job's TOML file")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a job-file key, e.g. --set params.batch_size=512 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxbayes", description="Scalable Bayesian and generative inference in JAX.")
    _add_cpu_devices(parser, None)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                metavar="{info,demo,bench,validate,run}")
    info = sub.add_parser("info", help="JAX version, backend, devices, processes, dependency versions")
    demo = sub.add_parser("demo", help="run every pillar demo and write a report folder")
    demo.add_argument("--out", default="jaxbayes-report", help="report folder (default: jaxbayes-report)")
    demo.add_argument("--quick", action="store_true", help="small settings (about a minute per pillar)")
    demo.add_argument("--only", nargs="+", metavar="PILLAR", help=f"pillars to run ({', '.join(PILLARS)})")
    bench = sub.add_parser("bench", help="run the benchmark suite against the peers")
    bench.add_argument("--out", default="bench-results", help="results folder (default: bench-results)")
    bench.add_argument("--quick", action="store_true", help="small sizes")
    bench.add_argument("--only", nargs="+", metavar="PILLAR", help=f"pillars to run ({', '.join(PILLARS)})")
    run = sub.add_parser("run", help="run a pod job described by a TOML file on every host")
    _add_job_arguments(run)
    run.add_argument("--resume", action="store_true", help="continue from the last valid checkpoint")
    check = sub.add_parser("validate", help="check a job file and its data completely; runs nothing")
    _add_job_arguments(check)
    for command in (info, demo, bench, run, check):  # the flag also works after the subcommand
        _add_cpu_devices(command, argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxbayes`` script; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
        if args.cpu_devices is not None:
            if args.cpu_devices < 1:
                raise UsageError(f"--cpu-devices must be >= 1, got {args.cpu_devices}")
            import jax

            jax.config.update("jax_num_cpu_devices", args.cpu_devices)
        handler = {"info": _info, "demo": _demo, "bench": _bench, "run": _run, "validate": _validate}[args.command]
        return handler(args)
    except UsageError as err:
        print(f"jaxbayes: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
