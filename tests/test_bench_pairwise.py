"""benchmarks.bench_pairwise (and the bench_cg_gp it runs) in quick mode: every section gives rows, the limit
fractions are filled in, the plot and the raw JSON are written, and ``jaxbayes bench`` can select it."""

import json

import pytest

from benchmarks import bench_cg_gp, bench_pairwise, harness, run


@pytest.fixture(scope="module")
def quick_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("pairwise")
    return out, bench_pairwise.run(out, quick=True)


def test_quick_run_covers_every_section(quick_rows):
    out, rows = quick_rows
    benches = {r["benchmark"] for r in rows}
    assert {"machine_limits", "sinkhorn_iteration", "sinkhorn_solve_10_iterations", "sinkhorn_iteration_chunk",
            "sinkhorn_sharded_memory", "gp_cg_iteration", "gp_lml", "gp_fit_step"} <= benches
    ours = [r for r in rows if r["benchmark"] == "sinkhorn_iteration" and r["impl"] == "jaxbayes"]
    assert ours and all(r["time_s"] > 0 and r["temp_mb"] > 0 and 0 < r["exp_fraction"] for r in ours)
    sharded = {r["impl"]: r for r in rows if r["benchmark"] == "sinkhorn_sharded_memory"}
    assert set(sharded) == {"jaxbayes 1 device(s)", "jaxbayes 8 device(s)"}
    assert all("error" not in r for r in sharded.values()), sharded
    # each of 8 devices holds an eighth of the points
    assert sharded["jaxbayes 8 device(s)"]["argument_mb"] < sharded["jaxbayes 1 device(s)"]["argument_mb"] / 4
    raw = json.loads((out / "pairwise_raw.json").read_text())
    assert raw["limits"]["exp_per_s"] > 0 and raw["sinkhorn"]
    assert (out / "bench_pairwise.png").is_file()
    table = harness.markdown_table(rows)
    assert "| sinkhorn_iteration |" in table and "| gp_lml |" in table


def test_quick_gp_rows_agree_with_dense(quick_rows):
    _, rows = quick_rows
    lml = [r for r in rows if r["benchmark"] == "gp_lml" and r["impl"] == "jaxbayes" and "lml_minus_exact" in r]
    assert lml and all(abs(r["lml_minus_exact"]) <= 4 * r["stderr"] + 1e-2 * abs(r["lml"]) for r in lml)
    fit = next(r for r in rows if r["benchmark"] == "gp_fit_step")
    assert fit["lml_fitted"] > fit["lml_init"]


def test_cg_gp_cli_runs_small(capsys, tmp_path):
    out = tmp_path / "cg.json"
    rows = bench_cg_gp.main(["--n", "300", "--steps", "1", "--dense-max", "300", "--json", str(out)])
    assert "dense Cholesky" in capsys.readouterr().out
    assert json.loads(out.read_text())[0]["n"] == 300 and rows[0]["points"]["init"]["iterations"] >= 1
    assert bench_cg_gp.records(rows[0])


def test_bench_suite_lists_the_engine_benchmark():
    assert "pairwise" in run.available()
