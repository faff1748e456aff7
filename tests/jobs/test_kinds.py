"""The pillars' pod-job kinds: the example job files validate, and each kind runs and resumes exactly."""

import shutil
from pathlib import Path

import pytest

from jaxbayes.jobs import job_kinds, load_job, run_job

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "jobs").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_job_files_validate(path):
    spec = load_job(path, job_kinds())
    assert spec.kind in job_kinds()


def run(tmp_path: Path, kind: str, params: str, *, name: str, resume: bool = False, every: int = 1) -> dict:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'kind = "{kind}"\noutput_dir = "{tmp_path / name}"\ncheckpoint_every = {every}\n'
                    f"[params]\n{params}\n")
    spec = load_job(path, job_kinds())
    return run_job(spec, job_kinds()[kind], resume=resume)


def test_vi_softmax_regression_learns_and_resumes(tmp_path):
    params = ('dataset = "iris"\nfamily = "meanfield"\nnum_units = 4\nsteps_per_checkpoint_unit = 60\n'
              "learning_rate = 0.05")
    full = run(tmp_path, "vi.softmax_regression", params, name="full")
    assert full["metrics"]["vi_steps"] == 240
    assert full["metrics"]["test_accuracy"] > 0.8  # 3 classes: chance is ~0.33
    partial = run(tmp_path, "vi.softmax_regression", params.replace("num_units = 4", "num_units = 2"),
                  name="resumed", every=1)
    assert partial["metrics"]["vi_steps"] == 120
    resumed = run(tmp_path, "vi.softmax_regression", params, name="resumed", resume=True)
    assert resumed["resumed_from"] == 2
    assert resumed["metrics"]["test_nll"] == full["metrics"]["test_nll"]


def test_ot_sinkhorn_batch_converges_and_resumes(tmp_path):
    params = "num_problems = 24\nproblems_per_step = 8\nn = 64\nepsilon = 0.05"
    full = run(tmp_path, "ot.sinkhorn_batch", params, name="full", every=0)
    m = full["metrics"]
    assert m["num_problems"] == 24 and m["converged_fraction"] == 1.0 and m["max_marginal_error"] <= 1e-3
    # entropic cost of samples >= 0 and of the order of the closed-form W2^2 of the sampling Gaussians
    assert 0 < m["mean_transport_cost"] < 3 * m["mean_closed_form_w2"]
    run(tmp_path, "ot.sinkhorn_batch", params, name="part")
    shutil.rmtree(tmp_path / "part" / "checkpoints" / "3")  # as if the run had died after step 2's checkpoint
    resumed = run(tmp_path, "ot.sinkhorn_batch", params, name="part", resume=True)
    assert resumed["resumed_from"] == 2 and resumed["metrics"] == full["metrics"]


def test_sde_train_and_sample_resumes_exactly(tmp_path):
    params = "num_units = 3\nsteps_per_unit = 40\nnum_samples = 64\nwidth = 32\ndepth = 2"
    full = run(tmp_path, "sde.train_and_sample", params, name="full", every=0)
    m = full["metrics"]
    assert m["train_steps"] == 120 and m["sampler_nfe"] == 35 and m["samples_finite"]
    # the prior has std 80: samples within a unit of the ring's held-out points show the model learned
    assert m["sliced_w2_samples_to_heldout"] < 1.0
    run(tmp_path, "sde.train_and_sample", params, name="part")
    shutil.rmtree(tmp_path / "part" / "checkpoints" / "3")
    resumed = run(tmp_path, "sde.train_and_sample", params, name="part", resume=True)
    assert resumed["resumed_from"] == 2 and resumed["metrics"] == full["metrics"]


def test_kernels_nngp_regression_marginal_likelihood_and_resume(tmp_path):
    import jax
    import numpy as np
    from scipy.stats import multivariate_normal

    from jaxbayes import datasets
    from jaxbayes.jobs.kinds.kernels import _network
    from jaxbayes.kernels import gram

    params = "depth = 2\nnum_units = 3\nsteps_per_unit = 60"
    full = run(tmp_path, "kernels.nngp_regression", params, name="full", every=0)
    m = full["metrics"]
    ds = datasets.load("diabetes", test_fraction=0.2, seed=0)
    with jax.enable_x64(True):
        k = np.asarray(gram(_network(2, 1.4, 0.1).kernel_fn, ds.x_train.astype(np.float64)).nngp)
    cov = m["kernel_scale"] * k + m["noise_variance"] * np.eye(len(k))
    exact = -multivariate_normal(np.zeros(len(k)), cov).logpdf(ds.y_train) / len(k)
    np.testing.assert_allclose(m["neg_log_marginal_likelihood_per_point"], exact, rtol=1e-4)
    assert m["test_nll_standardised"] < 1.42  # N(0, 1) predictive on standardised targets scores 1.42
    run(tmp_path, "kernels.nngp_regression", params, name="part")
    shutil.rmtree(tmp_path / "part" / "checkpoints" / "3")
    resumed = run(tmp_path, "kernels.nngp_regression", params, name="part", resume=True)
    assert resumed["resumed_from"] == 2 and resumed["metrics"] == full["metrics"]
