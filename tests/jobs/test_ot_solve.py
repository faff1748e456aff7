"""The ``ot.solve`` job kind: entropic OT between two point sets read from files, against POT.

Oracles: POT's ``ot.sinkhorn`` (float64 log-domain, run to 1e-13) on the same cost matrix and epsilon for the
costs, the plan and the barycentric map; POT's exact ``ot.emd2`` for the small-epsilon limit. The job runs on
the 8 simulated CPU devices of the test harness, so its points are split over the mesh (60 and 50 points,
padded to 64 and 56 with zero weights).
"""

import functools
import re
import shutil
from pathlib import Path

import numpy as np
import ot as pot
import pytest

from jaxbayes import cli
from jaxbayes.jobs import job_kinds, load_job, run_job

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "jobs" / "ot_solve_points.toml"
RNG = np.random.default_rng(0)
# float32 points, so the job (float32) and the float64 oracle see the same numbers
X = RNG.normal(size=(60, 2)).astype(np.float32)
Y = (0.7 * RNG.normal(size=(50, 2)) + [1.0, 0.5]).astype(np.float32)
A_RAW, B_RAW = RNG.uniform(0.2, 2.0, 60), RNG.uniform(0.2, 2.0, 50)
UNIFORM = 'source = "s.npy"\ntarget = "t.csv"\ntarget_x = ["a", "b"]'
WEIGHTED = 'source = "s.npz"\nsource_x = "x"\nsource_weights = "w"\ntarget = "t.csv"\ntarget_weights = "w"'
# tol 1e-6 is near float32's floor for the L1 marginal error of 60 x 50 plans (measured 1.1e-6 after the
# last iteration); it moves <P, C> by at most about max C * tol ~ 2e-5 (1e-5 relative)
PARAMS = {"epsilon": 0.05, "tol": 1e-6, "num_units": 1, "iterations_per_unit": 2000}


@functools.cache
def folder() -> Path:
    """The point files, written once: source as .npy and as .npz with weights, target as a CSV table."""
    import atexit
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="ot-solve-"))
    atexit.register(shutil.rmtree, path, True)
    np.save(path / "s.npy", X)
    np.savez(path / "s.npz", x=X, w=A_RAW)
    rows = "".join(f"{float(p[0])!r},{float(p[1])!r},{float(w)!r}\n" for p, w in zip(Y, B_RAW, strict=True))
    (path / "t.csv").write_text("a,b,w\n" + rows)
    return path


def write_job(path: Path, data: str, params: dict, output: Path, every: int = 0) -> Path:
    lines = "\n".join(f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}" for k, v in params.items())
    path.write_text(f'kind = "ot.solve"\noutput_dir = "{output}"\ncheckpoint_every = {every}\n[data]\n{data}\n'
                    f"[params]\n{lines}\n")
    return path


def run(name: str, data: str, *, every: int = 0, resume: bool = False, **params) -> dict:
    """Run a job in ``folder()/name``; returns its metrics with the written potentials and map."""
    path = write_job(folder() / f"{name}.toml", data, {**PARAMS, **params}, folder() / name, every)
    result = run_job(load_job(path, job_kinds()), job_kinds()["ot.solve"], resume=resume)
    out = folder() / name
    return {**result["metrics"], "resumed_from": result["resumed_from"],
            "potentials": dict(np.load(out / "potentials.npz")), "map": np.load(out / "barycentric_map.npy")}


@functools.cache
def solved(name: str, data: str, **params) -> dict:
    """:func:`run`, once per configuration (several tests compare the same runs)."""
    return run(name, data, **params)


def pot_solution(eps: float, a: np.ndarray, b: np.ndarray) -> dict:
    """POT's entropic plan at absolute ``eps`` on the float64 squared-Euclidean costs of the same points."""
    x, y = X.astype(np.float64), Y.astype(np.float64)
    cost = pot.dist(x, y)
    plan = pot.sinkhorn(a, b, cost, eps, method="sinkhorn_log", stopThr=1e-13, numItermax=100_000)
    transport = float(np.sum(plan * cost))
    kl = float(np.sum(plan * np.log(plan / np.outer(a, b))))
    return {"cost": cost, "plan": plan, "transport": transport, "entropic": transport + eps * kl,
            "map": plan @ y / plan.sum(1, keepdims=True)}


def check_against_pot(m: dict, a: np.ndarray, b: np.ndarray) -> None:
    eps = m["epsilon_absolute"]
    want = pot_solution(eps, a, b)
    assert m["converged"] and (m["n"], m["m"], m["dim"]) == (60, 50, 2)
    # PARAMS' tol moves the costs by ~1e-5 relative (see PARAMS); rtol 1e-4 leaves 10x for float32 rounding
    np.testing.assert_allclose(m["transport_cost"], want["transport"], rtol=1e-4)
    np.testing.assert_allclose(m["entropic_cost"], want["entropic"], rtol=1e-4)
    # the map moves by the plan's relative error (~tol) times the spread of y (~3): 1e-4 absolute is 30x that
    np.testing.assert_allclose(m["map"], want["map"], atol=1e-4)
    pots = m["potentials"]
    f, g, eps64 = pots["f"].astype(np.float64), pots["g"].astype(np.float64), float(pots["epsilon"])
    np.testing.assert_allclose(pots["a"], a, rtol=1e-12)
    plan = a[:, None] * b[None, :] * np.exp((f[:, None] + g[None, :] - want["cost"]) / eps64)
    error = np.abs(plan.sum(1) - a).sum() + np.abs(plan.sum(0) - b).sum()
    # the written float32 potentials satisfy the marginals to tol, plus their own rounding: f/eps carries
    # 2^-24 relative error, which moves each plan entry by up to 2^-24 (|f| + |g|)_max / eps relative
    rounding = 2.0**-24 * (np.abs(f).max() + np.abs(g).max()) / eps64
    assert error <= PARAMS["tol"] + 2 * rounding, (error, rounding)
    np.testing.assert_allclose(plan, want["plan"], atol=1e-4 * want["plan"].max())


def test_dense_solve_equals_pot_sinkhorn():
    m = solved("dense", UNIFORM)
    n, k = len(X), len(Y)
    # epsilon is relative to the mean cost over all pairs, as in jaxbayes.ot.sinkhorn
    cost = pot.dist(X.astype(np.float64), Y.astype(np.float64))
    np.testing.assert_allclose(m["epsilon_absolute"], 0.05 * cost.mean(), rtol=1e-5)
    check_against_pot(m, np.full(n, 1 / n), np.full(k, 1 / k))
    assert m["mode"] == "dense" and m["units_run"] == 1
    assert (folder() / "dense" / "barycentric_map.png").stat().st_size > 10_000


def test_weights_from_an_npz_array_and_a_column_dense_and_matrix_free():
    a, b = A_RAW / A_RAW.sum(), B_RAW / B_RAW.sum()
    dense = solved("weighted", WEIGHTED)
    free = solved("weighted-free", WEIGHTED, matrix_free=True, chunk_size=16)  # 4 tiles of x per device, padded
    assert free["mode"] == "matrix-free"
    for m in (dense, free):
        check_against_pot(m, a, b)
    # the same iterates by two programs (absorbed dense loop, tiled log-domain loop): float32 rounding apart
    assert abs(dense["iterations"] - free["iterations"]) <= 1
    for key in ("transport_cost", "entropic_cost", "epsilon_absolute"):
        np.testing.assert_allclose(free[key], dense[key], rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(free["map"], dense["map"], atol=2e-5)


def test_unbalanced_equals_pot_unbalanced_sinkhorn():
    a, b = A_RAW / A_RAW.sum(), B_RAW / B_RAW.sum()
    m = solved("unbalanced", WEIGHTED, tau_a=0.8, tau_b=0.5)
    assert m["converged"] and not m["balanced"]
    eps = m["epsilon_absolute"]
    x, y = X.astype(np.float64), Y.astype(np.float64)
    cost = pot.dist(x, y)
    # tau = rho / (rho + eps): the KL marginal penalties rho = eps tau / (1 - tau), reference measure a x b
    rho = [eps * t / (1 - t) for t in (0.8, 0.5)]
    plan = pot.unbalanced.sinkhorn_unbalanced(a, b, cost, eps, rho, reg_type="kl", stopThr=1e-13,
                                              numItermax=100_000)
    # the same tolerances as the balanced comparison (check_against_pot)
    np.testing.assert_allclose(m["transport_cost"], np.sum(plan * cost), rtol=1e-4)
    np.testing.assert_allclose(m["map"], plan @ y / plan.sum(1, keepdims=True), atol=1e-4)
    f, g = (m["potentials"][k].astype(np.float64) for k in ("f", "g"))
    ours = a[:, None] * b[None, :] * np.exp((f[:, None] + g[None, :] - cost) / eps)
    np.testing.assert_allclose(ours, plan, atol=1e-4 * plan.max())
    assert abs(plan.sum() - 1) > 1e-2  # the relaxation is active: mass is not conserved


def test_small_epsilon_approaches_exact_ot():
    n, k = len(X), len(Y)
    a, b = np.full(n, 1 / n), np.full(k, 1 / k)
    cost = pot.dist(X.astype(np.float64), Y.astype(np.float64))
    exact = pot.emd2(a, b, cost)
    gaps = []
    for eps in (0.05, 0.01):
        m = solved("dense" if eps == 0.05 else "small", UNIFORM, **({} if eps == 0.05 else {"epsilon": eps}))
        assert m["converged"]
        # P_eps is feasible up to tol, so <P_eps, C> >= OT_0 - max C * tol; and <P_eps, C> <= OT_eps <=
        # <P*, C> + eps KL(P* | a x b) = OT_0 + eps I(P*) with the mutual information I <= min(H(a), H(b))
        # = log min(n, m)
        slack = cost.max() * m["marginal_error"]
        gap = m["transport_cost"] - exact
        assert -slack <= gap <= m["epsilon_absolute"] * np.log(min(n, k)) + slack, (eps, gap)
        assert exact - slack <= m["entropic_cost"] <= exact + m["epsilon_absolute"] * np.log(min(n, k)) + slack
        gaps.append(gap)
    assert gaps[1] < 0.5 * gaps[0]  # measured: the bias shrinks with epsilon


def test_units_continue_one_solve_and_resume_exactly():
    params = {"iterations_per_unit": 10, "num_units": 12}
    full = run("units", UNIFORM, **params)
    one = solved("dense", UNIFORM)
    # warm starts continue the same iterates: one unit of 2000 and units of 10 stop at the same iteration
    # (104); the dense loop re-absorbs its kernel at each unit's start, so values agree to float32 rounding
    assert full["converged"] and full["iterations"] == one["iterations"] > 40
    assert full["units_run"] == -(-one["iterations"] // 10)
    for key in ("transport_cost", "entropic_cost"):
        np.testing.assert_allclose(full[key], one[key], rtol=1e-6, err_msg=key)
    np.testing.assert_allclose(full["map"], one["map"], atol=1e-5)
    # a shorter run continued by --resume (num_units may grow) equals the uninterrupted one bitwise
    part = run("units-part", UNIFORM, every=1, **{**params, "num_units": 4})
    assert part["units_run"] == 4 and not part["converged"]
    shutil.rmtree(folder() / "units-part" / "checkpoints" / "4")  # as if killed after unit 3's checkpoint
    resumed = run("units-part", UNIFORM, every=1, resume=True, **params)
    assert resumed["resumed_from"] == 3
    for key in ("transport_cost", "entropic_cost", "primal_cost", "marginal_error", "iterations", "units_run"):
        assert resumed[key] == full[key], key
    for key in ("f", "g"):
        np.testing.assert_array_equal(resumed["potentials"][key], full["potentials"][key])
    np.testing.assert_array_equal(resumed["map"], full["map"])


def two_process_solve(folder: str) -> dict:
    """Worker (each of 2 processes, 4 devices each): the dense and the matrix-free solve of the weighted job."""
    out = {}
    for name, params in (("two", {}), ("two-free", {"matrix_free": True, "chunk_size": 16})):
        path = write_job(Path(folder) / f"{name}.toml", WEIGHTED, {**PARAMS, **params}, Path(folder) / name)
        result = run_job(load_job(path, job_kinds()), job_kinds()["ot.solve"])
        out[name] = np.asarray([result["metrics"][k] for k in ("transport_cost", "entropic_cost", "iterations")])
        out["processes"] = np.asarray(result["processes"])
    return out


def test_two_processes_equal_one():
    from tests.multiprocess.launcher import run_processes

    results = run_processes("tests.jobs.test_ot_solve:two_process_solve", folder=str(folder()))
    for name, one in (("two", solved("weighted", WEIGHTED)),
                      ("two-free", solved("weighted-free", WEIGHTED, matrix_free=True, chunk_size=16))):
        for r in results:  # each process read half of the points; the same 8-device mesh and padding
            assert int(r["processes"]) == 2
            # the same program; only the collectives' summation order differs (float32 rounding)
            np.testing.assert_allclose(r[name][:2], [one["transport_cost"], one["entropic_cost"]], rtol=1e-5)
            assert abs(r[name][2] - one["iterations"]) <= 1
    # process 0 wrote the files: the map of the 2-process run
    np.testing.assert_allclose(np.load(folder() / "two" / "barycentric_map.npy"), solved("weighted", WEIGHTED)["map"],
                               atol=2e-5)


@pytest.mark.parametrize("data,message", [
    ('source = "nope.npy"\ntarget = "t.csv"', r"data.source: .*nope.npy does not exist"),
    ('source = "s.npz"\nsource_x = "points"\ntarget = "t.csv"', r"data.source_x: no array 'points' in .*s.npz"),
    ('source = "s.npy"\ntarget = "t.csv"\ntarget_x = ["a", "c"]', r"data.target_x: no column 'c' in .*t.csv"),
    ('source = "s.npy"\ntarget = "t.csv"\ntarget_weights = "v"', r"data.target_weights: no column 'v'"),
    ('target = "t.csv"', r"data.source: missing required key"),
    ('source = "s.npy"\ntarget = "t.csv"\nsorce_x = "x"', r"data.sorce_x: unknown key"),
    ('source = "s.npy"\ntarget = "t3.csv"', r"data.target: the target points have 3 features, the source points 2"),
    ('source = "s.npy"\ntarget = "t.csv"\ntarget_x = ["a", "b"]\ntarget_weights = "neg"',
     r"data.target_weights: the weight of point 1 is negative \(-1.0\)"),
    ('source = "s.npz"\nsource_x = "x"\nsource_weights = "zero"\ntarget = "t.csv"',
     r"data.source_weights: every weight in .*s.npz is zero"),
    ('source = "nan.npy"\ntarget = "t.csv"', r"data.source: point 2 of .*nan.npy is not finite"),
    ('source = "s.npy"\ntarget = "inf.npz"\ntarget_x = "y"', r"data.target_x: point 0 of .*inf.npz is not finite"),
    ('source = "s.npy"\nsource_weights = "w"\ntarget = "t.csv"', r"data.source_weights: a .npy file holds only"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, data, message):
    np.save(tmp_path / "s.npy", X[:4])
    np.save(tmp_path / "nan.npy", np.array([[0.0, 1.0], [1.0, 1.0], [np.nan, 0.0]]))
    np.savez(tmp_path / "s.npz", x=X[:4], zero=np.zeros(4))
    np.savez(tmp_path / "inf.npz", y=np.array([[np.inf, 0.0], [1.0, 1.0]]))
    (tmp_path / "t.csv").write_text("a,b,neg\n0.0,1.0,1.0\n1.0,0.5,-1.0\n")
    (tmp_path / "t3.csv").write_text("a,b,c\n0.0,1.0,1.0\n1.0,0.5,2.0\n")
    job = write_job(tmp_path / "job.toml", data, {"num_units": 1}, tmp_path / "out")
    for command in ("validate", "run"):
        assert cli.main([command, str(job)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("jaxbayes: error: "), err
        assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_example_runs_near_exact_ot(tmp_path, capsys):
    assert cli.main(["validate", str(EXAMPLE)]) == 0
    assert "source 50 x 4" in capsys.readouterr().out
    spec = load_job(EXAMPLE, job_kinds(), [f'output_dir="{tmp_path / "example"}"'])
    m = run_job(spec, job_kinds()["ot.solve"])["metrics"]
    x, y = np.load(EXAMPLE.parent / "data" / "ot_source.npy"), np.load(EXAMPLE.parent / "data" / "ot_target.npy")
    n, k = len(x), len(y)
    cost = pot.dist(x.astype(np.float64), y.astype(np.float64))
    exact = pot.emd2(np.full(n, 1 / n), np.full(k, 1 / k), cost)
    slack = cost.max() * m["marginal_error"]
    assert m["converged"] and m["dim"] == 4
    assert exact - slack <= m["transport_cost"] <= exact + m["epsilon_absolute"] * np.log(min(n, k)) + slack
    assert np.load(tmp_path / "example" / "barycentric_map.npy").shape == (n, 4)
