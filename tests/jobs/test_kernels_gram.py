"""kernels.gram: the tiled, resumable CNN Gram job and its GP / Student-t fits.

Oracles: the network's kernel computed in one piece (``kernel_fn`` on all points, float64); the library's
``log_marginal_likelihood`` / ``student_t_log_marginal_likelihood`` maximised by scipy; numpy closed-form GP
posteriors; Monte Carlo for the class probabilities (tolerance from its standard error).
"""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
import scipy.special
from sklearn.datasets import load_digits

from jaxbayes import cli
from jaxbayes.jobs import job_kinds, load_job, run_job
from jaxbayes.jobs.kinds import _gram_fit, _gram_tiles
from jaxbayes.jobs.kinds.kernels_gram import _network
from jaxbayes.kernels import log_marginal_likelihood, student_t_log_marginal_likelihood
from tests.multiprocess.launcher import REPO_ROOT

N_TRAIN, N_TEST = 84, 36  # test_fraction 0.3 of 120 digits


def _digits(folder: Path, n: int = 120, regression: bool = False) -> np.ndarray:
    """The first ``n`` of scikit-learn's 8 x 8 digits (real images, bundled), as an npz the job reads."""
    d = load_digits()
    x = (d.images[:n, :, :, None] / 16.0).astype(np.float32)
    y = x.mean(axis=(1, 2, 3)).astype(np.float32) if regression else d.target[:n].astype(np.int32)
    np.savez(folder / "digits.npz", images=x, labels=y)
    return x


def _job(folder: Path, name: str, params: str = "", data: str = "") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(f'kind = "kernels.gram"\noutput_dir = "{folder / name}"\ncheckpoint_every = 1\n'
                    f'[data]\npath = "digits.npz"\nx = "images"\ny = "labels"\ntest_fraction = 0.3\n{data}\n'
                    f"[params]\ntile_size = 16\ntiles_per_step = 4\n{params}\n")
    return path


def _run(path: Path, resume: bool = False) -> dict:
    spec = load_job(path, job_kinds())
    return run_job(spec, job_kinds()[spec.kind], resume=resume)


def _split_order(path: Path) -> np.ndarray:
    """The job's points in its order (training rows, then test rows)."""
    data = load_job(path, job_kinds()).data
    return np.concatenate([data.split("train")["x"], data.split("test")["x"]]).astype(np.float64)


# global_avg_pool pairs every two positions (64^2 per entry on 8 x 8 digits): one block keeps it short
@pytest.mark.parametrize(("readout", "depth"), [("flatten", 2), ("global_avg_pool", 1)])
def test_tiles_equal_the_kernel_in_one_piece_and_the_prediction_the_closed_form(tmp_path, readout, depth):
    _digits(tmp_path)
    path = _job(tmp_path, readout, f'readout = "{readout}"\nprecision = "float64"\ndepth = {depth}')
    result = _run(path)
    m = result["metrics"]
    plan = _gram_tiles.plan_tiles(N_TRAIN + N_TEST, N_TRAIN, 16)
    assert m["tiles"] == len(plan.pairs) and m["n_train"] == N_TRAIN and m["n_test"] == N_TEST
    points = _split_order(path)
    with jax.enable_x64(True):
        params = load_job(path, job_kinds()).params
        whole = _network(params).kernel_fn(points)
    for which, kernel in enumerate((whole.nngp, whole.ntk)):
        k = np.asarray(kernel)
        k_tt, k_st, k_ss = _gram_tiles.assemble(tmp_path / readout / "tiles", plan, which)
        np.testing.assert_allclose(k_tt, k[:N_TRAIN, :N_TRAIN], rtol=1e-12)
        np.testing.assert_allclose(k_st, k[N_TRAIN:, :N_TRAIN], rtol=1e-12)
        np.testing.assert_allclose(k_ss, np.diagonal(k)[N_TRAIN:], rtol=1e-12)
    # the GP at the fitted (scale c, noise ratio r): mean K_st (K_tt + r I)^-1 Y, Y the centred one-hot labels
    labels = load_job(path, job_kinds()).data
    y_train, y_test = labels.targets("train"), labels.targets("test")
    k = np.asarray(whole.nngp)
    y = np.eye(10)[y_train] - 0.1
    mean = k[N_TRAIN:, :N_TRAIN] @ np.linalg.solve(k[:N_TRAIN, :N_TRAIN] + m["noise_ratio"] * np.eye(N_TRAIN), y)
    # the most probable class is the one with the largest mean (one sd for every class); float32 metric
    assert m["test_accuracy"] == pytest.approx(np.mean(mean.argmax(1) == y_test), abs=1e-6)
    # 10 classes: chance is 0.1; a CNN-GP on 84 digits is far above it
    assert m["test_accuracy"] > 0.6


def _cholesky_terms(k, y, ratio):
    """``tr(Y^T (K + r I)^-1 Y)`` and ``log det(K + r I)`` by a Cholesky factorisation (scipy)."""
    factor = scipy.linalg.cho_factor(k + ratio * np.eye(len(k)), lower=True)
    return float(np.sum(y * scipy.linalg.cho_solve(factor, y))), 2 * float(np.sum(np.log(np.diagonal(factor[0]))))


def _gp_lml(k, y, scale, ratio):
    quad, logdet = _cholesky_terms(k, y, ratio)
    n = y.size
    return -0.5 * (quad / scale + n * np.log(scale) + y.shape[1] * logdet + n * np.log(2 * np.pi))


def _t_lml(k, y, alpha, beta, ratio):
    quad, logdet = _cholesky_terms(k, y, ratio)
    n = y.size
    return (scipy.special.gammaln(alpha + n / 2) - scipy.special.gammaln(alpha) - n / 2 * np.log(2 * np.pi * beta)
            - y.shape[1] / 2 * logdet - (alpha + n / 2) * np.log1p(quad / (2 * beta)))


def _problem(seed=0, n=40, outputs=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    k = np.exp(-0.5 * np.sum((x[:, None] - x[None]) ** 2, -1))
    y = np.linalg.cholesky(k + 0.1 * np.eye(n)) @ rng.normal(size=(n, outputs)) * 1.7
    eig, vecs = np.linalg.eigh(k)
    return k, y, np.clip(eig, 0, None), np.sum((vecs.T @ y) ** 2, axis=1)


def test_eigen_marginal_likelihoods_equal_the_library_and_their_fits_equal_scipy(x64):
    k, y, eig, q = _problem()
    n_out = y.shape[1]
    lib_gp = sum(float(log_marginal_likelihood(1.3 * k, y[:, j], noise=1.3 * 0.2)) for j in range(n_out))
    assert _gram_fit.gp_lml(eig, q, n_out, 1.3, 0.2) == pytest.approx(lib_gp, rel=1e-10)
    lib_t = float(student_t_log_marginal_likelihood(k, y, alpha=2.5, beta=1.5, noise=0.2))
    assert _gram_fit.student_t_lml(eig, q, n_out, 2.5, 1.5, 0.2) == pytest.approx(lib_t, rel=1e-10)
    assert _t_lml(k, y, 2.5, 1.5, 0.2) == pytest.approx(lib_t, rel=1e-10)

    fit = _gram_fit.fit_gp(eig, q, n_out)
    best = scipy.optimize.minimize(lambda t: -_gp_lml(k, y, *np.exp(t)), np.zeros(2), method="Nelder-Mead",
                                   options={"xatol": 1e-9, "fatol": 1e-11, "maxiter": 4000})
    # the profile search is exact in c and golden-section in r: the same optimum
    assert fit.log_marginal_likelihood_per_entry * y.size == pytest.approx(-best.fun, abs=1e-6)
    np.testing.assert_allclose([fit.scale, fit.noise_ratio], np.exp(best.x), rtol=1e-3)

    # Student-t: alpha is searched up to 1e8 (the GP limit beyond); scipy is free. Gaussian data pushes alpha
    # to that limit, where log p changes by O(N^2 / alpha) ~ 1e-4 per unit of 1/alpha.
    fit_t = _gram_fit.fit_student_t(eig, q, n_out)
    best_t = scipy.optimize.minimize(lambda t: -_t_lml(k, y, *np.exp(t)), np.log([2.0, 2.0, 0.5]),
                                     method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-11, "maxiter": 8000})
    assert fit_t.log_marginal_likelihood_per_entry * y.size >= -best_t.fun - 1e-3
    t_data = y * np.sqrt(1.0 / np.random.default_rng(5).gamma(1.5))  # one shared scale draw: a t-process sample
    eig_q = np.sum((np.linalg.eigh(k)[1].T @ t_data) ** 2, axis=1)
    fit_t = _gram_fit.fit_student_t(eig, eig_q, n_out)
    best_t = scipy.optimize.minimize(lambda t: -_t_lml(k, t_data, *np.exp(t)), np.log([2.0, 2.0, 0.5]),
                                     method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-11, "maxiter": 8000})
    assert fit_t.log_marginal_likelihood_per_entry * y.size >= -best_t.fun - 1e-3


def test_class_probabilities_equal_monte_carlo():
    rng = np.random.default_rng(3)
    mean, sd = rng.normal(size=(5, 4)), rng.uniform(0.3, 2.0, size=5)
    draws = 200_000
    f = mean[None] + sd[None, :, None] * rng.normal(size=(draws, 5, 4))
    mc = np.stack([np.mean(f.argmax(-1) == c, axis=0) for c in range(4)], axis=1)
    got = _gram_fit.class_probabilities(mean, sd)
    np.testing.assert_allclose(got, mc, atol=5 * np.sqrt(0.25 / draws))  # 5 binomial SE
    # a shared random scale (the Student-t case): mix over scale draws
    scales = np.sqrt(3.0 / rng.gamma(3.0, size=400))
    mixed = _gram_fit.class_probabilities(mean, sd, scales)
    # Monte Carlo of the same discrete mixture: each draw picks one of the scales
    pick = scales[rng.integers(0, len(scales), size=draws)]
    f = mean[None] + (pick[:, None] * sd)[:, :, None] * rng.normal(size=(draws, 5, 4))
    mc = np.stack([np.mean(f.argmax(-1) == c, axis=0) for c in range(4)], axis=1)
    np.testing.assert_allclose(mixed, mc, atol=5 * np.sqrt(0.25 / draws))


def test_student_t_regression_mean_is_the_closed_form(tmp_path):
    _digits(tmp_path, regression=True)
    path = _job(tmp_path, "t", 'model = "student_t"\nprecision = "float64"\ndepth = 1')
    m = _run(path)["metrics"]
    assert m["alpha"] > 0 and m["beta"] > 0 and np.isfinite(m["test_nll"])
    data = load_job(path, job_kinds()).data
    y_train, y_test = data.targets("train"), data.targets("test")
    points = _split_order(path)
    with jax.enable_x64(True):
        k = np.asarray(_network(load_job(path, job_kinds()).params).kernel_fn(points).nngp)
    mu, sd = y_train.mean(), y_train.std()
    z = (y_train - mu) / sd
    # a t-process's predictive mean does not depend on (alpha, beta): K_st (K_tt + r I)^-1 y
    mean = k[N_TRAIN:, :N_TRAIN] @ np.linalg.solve(k[:N_TRAIN, :N_TRAIN] + m["noise_ratio"] * np.eye(N_TRAIN), z)
    rmse = np.sqrt(np.mean((mean * sd + mu - y_test) ** 2))
    assert m["test_rmse"] == pytest.approx(rmse, rel=1e-6)
    assert m["test_rmse"] < 0.5 * np.std(y_test)  # mean brightness is a smooth function of the image


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    _digits(tmp_path)
    reference = _run(_job(tmp_path, "ref"))
    killed = _job(tmp_path, "killed")
    code = f"from jaxbayes.cli import main; main(['run', {str(killed)!r}])"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stderr=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL)
    checkpoints = tmp_path / "killed" / "checkpoints"
    while not (checkpoints.exists() and any(p.name.isdigit() and int(p.name) >= 2 for p in checkpoints.iterdir())):
        assert proc.poll() is None, "the job ended before its second checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "result.json").exists()
    resumed = _run(killed, resume=True)
    assert resumed["resumed_from"] >= 2
    drop = ("kernel_entries_per_second", "peak_rss_gb_this_process")
    assert {k: v for k, v in resumed["metrics"].items() if k not in drop} == \
        {k: v for k, v in reference["metrics"].items() if k not in drop}
    for tile in (tmp_path / "ref" / "tiles").iterdir():
        np.testing.assert_array_equal(np.load(tile), np.load(tmp_path / "killed" / "tiles" / tile.name))
    assert json.loads((tmp_path / "killed" / "result.json").read_text())["metrics"]["tiles"] == reference[
        "metrics"]["tiles"]


@pytest.mark.parametrize("make,params,message", [
    ("table", "", "data.x: kernels.gram needs images"),
    ("one_class", "", "data.y: every label is 0"),
    ("digits", "filter_size = 9", r"params.filter_size: 9 is larger than the images \(8 x 8\)"),
    ("digits", 'readout = "max"', "params.readout: must be one of"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, make, params, message):
    x = _digits(tmp_path)
    if make == "table":
        np.savez(tmp_path / "digits.npz", images=x.reshape(len(x), -1), labels=np.arange(len(x)) % 3)
    if make == "one_class":
        np.savez(tmp_path / "digits.npz", images=x, labels=np.zeros(len(x), np.int32))
    job = _job(tmp_path, "out", params)
    for command in ("validate", "run"):
        assert cli.main([command, str(job)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_validate_prints_the_plan_with_its_cost_model(tmp_path, capsys):
    _digits(tmp_path)
    assert cli.main(["validate", str(_job(tmp_path, "plan", 'readout = "global_avg_pool"'))]) == 0
    out = capsys.readouterr().out
    plan = _gram_tiles.plan_tiles(N_TRAIN + N_TEST, N_TRAIN, 16)
    assert f"{len(plan.pairs)} tiles of 16 x 16" in out and "the square of the pixel count" in out
    assert f"({-(-len(plan.pairs) // 4)} steps)" in out


def two_process_gram(folder: str) -> dict:
    """Worker (each of 2 processes, 4 devices each): the job on the 8-device mesh of two hosts."""
    result = _run(Path(folder) / "two.toml")
    return {"tiles": np.asarray(result["metrics"]["tiles"]), "processes": np.asarray(result["processes"]),
            "accuracy": np.asarray(result["metrics"].get("test_accuracy", -1.0))}


def test_two_processes_equal_one(tmp_path):
    from tests.multiprocess.launcher import run_processes

    _digits(tmp_path)
    one = _run(_job(tmp_path, "one"))
    _job(tmp_path, "two")
    results = run_processes("tests.jobs.test_kernels_gram:two_process_gram", folder=str(tmp_path))
    assert [int(r["processes"]) for r in results] == [2, 2]
    assert all(int(r["tiles"]) == one["metrics"]["tiles"] for r in results)
    # every tile is computed whole on one device by the same program: the same bits on any mesh
    names = sorted(p.name for p in (tmp_path / "one" / "tiles").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two" / "tiles").iterdir())
    for name in names:
        np.testing.assert_array_equal(np.load(tmp_path / "two" / "tiles" / name),
                                      np.load(tmp_path / "one" / "tiles" / name))
    # process 0 predicts (the tiles are its files); the other process reports no accuracy
    assert float(results[0]["accuracy"]) == one["metrics"]["test_accuracy"]
    assert float(results[1]["accuracy"]) == -1.0
