"""Run the benchmark modules (``bench_<pillar>.py``), write JSON per pillar and one Markdown table."""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Benchmarks of the shared engines under the pillars (run after them; selectable with --only like a pillar).
ENGINES = ("pairwise",)


def available() -> list[str]:
    """Pillars with a benchmark module, in the registry's order, then the engines'."""
    from jaxbayes.cli import PILLARS

    return [p for p in (*PILLARS, *ENGINES) if (HERE / f"bench_{p}.py").is_file()]


def run_suite(outdir: str | Path, *, only: Sequence[str] | None = None, quick: bool = False) -> Path:
    """Run the selected pillars' benchmarks and return the path of the Markdown summary."""
    from benchmarks.harness import (
        limits_table,
        machine_info,
        machine_limits,
        markdown_table,
        plot_scaling,
        save_results,
    )

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    pillars = list(only) if only else available()
    sections = [f"# jaxbayes benchmarks ({'quick' if quick else 'full'})", "",
                f"Machine: {machine_info()['platform']}, {machine_info()['cpu_count']} CPUs, "
                f"backend {machine_info()['backend']} ({machine_info()['device_kind']}).", "",
                "`vs jaxbayes` = peer time / jaxbayes time (above 1: jaxbayes is faster). `*_fraction` = the "
                "achieved rate over the limit measured below in the same run; `limit_s` = the case's work at "
                "that limit (each benchmark's docstring states its work model).", "",
                "## Machine limits (measured in this run)", "", limits_table(machine_limits()), ""]
    for pillar in pillars:
        print(f"[bench] {pillar} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        module = importlib.import_module(f"benchmarks.bench_{pillar}")
        pillar_dir = outdir / pillar
        pillar_dir.mkdir(parents=True, exist_ok=True)
        records = module.run(pillar_dir, quick=quick)
        elapsed = time.perf_counter() - start
        save_results(outdir / f"{pillar}.json", records, pillar=pillar, quick=quick, wall_s=elapsed,
                     limits=machine_limits())
        plot_scaling(records, pillar_dir / "scaling.png")
        figures = sorted(p.name for p in pillar_dir.glob("*.png"))
        sections += [f"## {pillar} ({elapsed:.0f} s)", "", markdown_table(records), ""]
        sections += [f"![{name}]({pillar}/{name})" for name in figures] + [""]
        print(f"[bench] {pillar} done in {elapsed:.0f} s", file=sys.stderr, flush=True)
    summary = outdir / "results.md"
    summary.write_text("\n".join(sections))
    return summary
