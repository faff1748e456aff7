"""benchmarks.harness: timing protocol, ratio table, JSON records and the peer-environment protocol."""

import json
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import harness


def test_time_fn_calls_and_blocks():
    calls = []

    def f(x):
        calls.append(1)
        return jnp.sin(x)

    timing, out = harness.time_fn(f, jnp.ones(3), repeats=4, warmup=2)
    assert len(calls) == 6 and timing.repeats == 4
    assert 0 <= timing.min_s <= timing.median_s <= timing.max_s
    np.testing.assert_allclose(out, np.sin(1.0))
    with pytest.raises(ValueError, match="repeats"):
        harness.time_fn(f, 1.0, repeats=0)
    timing, _ = harness.time_fn(f, jnp.ones(3), repeats=1, warmup=0)  # slow host code: the one timed call only
    assert len(calls) == 7 and timing.compile_s == 0.0 and timing.repeats == 1
    with pytest.raises(ValueError, match="warmup"):
        harness.time_fn(f, 1.0, warmup=-1)


def test_time_interleaved_alternates_calls():
    order = []
    calls = {name: (lambda name=name: order.append(name) or jnp.full(2, len(order))) for name in ("a", "b")}
    timed = harness.time_interleaved(calls, repeats=3)
    assert order == ["a", "b"] * 4  # one warm-up round, then three timed rounds
    assert timed["a"][0].repeats == 3 and 0 <= timed["b"][0].min_s <= timed["b"][0].median_s
    np.testing.assert_array_equal(timed["b"][1], [8, 8])  # the output of the last call
    with pytest.raises(ValueError, match="repeats"):
        harness.time_interleaved(calls, repeats=0)


def test_markdown_ratio_is_peer_over_reference(tmp_path):
    t = harness.Timing(0.0, 2.0, 1.9, 2.1, 3)
    slow = harness.Timing(0.0, 5.0, 5.0, 5.0, 3)
    rows = [harness.record("sinkhorn", "n=1k", "jaxbayes", t, iters=10),
            harness.record("sinkhorn", "n=1k", "POT", slow, iters=12)]
    table = harness.markdown_table(rows)
    assert "| sinkhorn | n=1k | POT | 5 | 2.50x | 12 |" in table
    assert "| sinkhorn | n=1k | jaxbayes | 2 | 1.00x | 10 |" in table
    path = harness.save_results(tmp_path / "r.json", rows, pillar="ot")
    payload = json.loads(path.read_text())
    assert payload["pillar"] == "ot" and payload["records"][1]["time_s"] == 5.0
    assert "jax" in payload["machine"]["versions"]


def test_peer_protocol_round_trips_arrays(tmp_path):
    script = tmp_path / "double.py"
    script.write_text("import sys, numpy as np\nd = np.load(sys.argv[1])\nnp.savez(sys.argv[2], y=2 * d['x'])\n")
    peer = harness.PeerEnv("self", Path(sys.executable))
    out = peer.run(script, {"x": np.arange(3.0)})
    np.testing.assert_array_equal(out["y"], [0.0, 2.0, 4.0])
    bad = tmp_path / "bad.py"
    bad.write_text("raise SystemExit('peer broke')\n")
    with pytest.raises(RuntimeError, match="peer broke"):
        peer.run(bad, {"x": np.zeros(1)})


def test_roofline_fractions_follow_from_the_limits(monkeypatch):
    limits = {"copy_bytes_per_s": 10e9, "float32": 100e9, "float64": 50e9, "nominal": {}}
    monkeypatch.setattr(harness, "machine_limits", lambda: limits)
    r = harness.roofline(0.5, flops=20e9, bytes_moved=1e9)
    assert r["gflop_per_s"] == pytest.approx(40.0) and r["flop_fraction"] == pytest.approx(0.4)
    assert r["gb_per_s"] == pytest.approx(2.0) and r["bandwidth_fraction"] == pytest.approx(0.2)
    assert r["limit_s"] == pytest.approx(max(20e9 / 100e9, 1e9 / 10e9))
    row = harness.record("gp", "n=8", "jaxbayes", harness.Timing(0.0, 2.0, 2.0, 2.0, 1), flops=50e9, peak="float64",
                         size=8)
    assert row["flop_fraction"] == pytest.approx(0.5) and row["limit_s"] == pytest.approx(1.0) and row["size"] == 8
    assert "flops" not in harness.record("gp", "n=8", "jaxbayes", None, flops=1.0)  # no timing: no rates


def test_machine_limits_are_consistent_with_a_timed_gemm():
    import jax

    lim = harness.machine_limits()
    assert lim["copy_bytes_per_s"] > 1e8 and lim["float32"] > 1e8 and lim["float64"] > 1e8
    a = jnp.ones((512, 512), jnp.float32)
    t, _ = harness.time_fn(jax.jit(lambda u: u @ u), a, repeats=3)
    assert 2 * 512**3 / t.min_s < 3 * lim["float32"]  # a GEMM cannot beat the measured GEMM ceiling by far
    table = harness.limits_table(lim)
    assert "| copy_bytes (GB/s) |" in table and "| float64 (GFLOP/s) |" in table


def test_scaling_plot_draws_sizes_and_the_limit(tmp_path):
    t = lambda s: harness.Timing(0.0, s, s, s, 1)
    rows = [harness.record("chol", f"n={n}", impl, t(n * k), size=n, limit_s=n * 0.1)
            for n in (10, 20, 40) for impl, k in (("jaxbayes", 1e-3), ("peer", 2e-3))]
    rows.append(harness.record("single", "n=1", "jaxbayes", t(1.0), size=1))  # one size: no panel
    path = harness.plot_scaling(rows, tmp_path / "scaling.png")
    assert path.is_file() and path.stat().st_size > 1000
    assert harness.plot_scaling(rows[-1:], tmp_path / "none.png") is None
