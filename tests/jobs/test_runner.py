"""jaxbayes run: validation before running, results, checkpoints, resume after a crash or SIGKILL."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tests.jobs.toy as toy
from jaxbayes import cli
from jaxbayes.jobs import JobConfigError, job_kinds, load_job, run_job
from tests.multiprocess.launcher import REPO_ROOT, run_processes


def write_job(folder: Path, params: str, extra: str = "", name: str = "job") -> Path:
    path = folder / f"{name}.toml"
    out = folder / f"{name}-out"
    path.write_text(f'kind = "toy.least_squares"\noutput_dir = "{out}"\n{extra}\n[params]\n{params}\n')
    return path


def run_file(path: Path, resume: bool = False) -> dict:
    spec = load_job(path, job_kinds())
    return run_job(spec, job_kinds()[spec.kind], resume=resume)


def test_converges_to_least_squares_solution(tmp_path):
    result = run_file(write_job(tmp_path, "steps = 300\nlr = 0.2"))
    x, y = toy.data(0, 64)
    exact = np.linalg.lstsq(x, y, rcond=None)[0]
    # the 1e-3 step noise keeps the iterate within a few 1e-3 of the minimiser
    np.testing.assert_allclose(result["metrics"]["w"], exact, atol=1e-2)
    written = json.loads((tmp_path / "job-out" / "result.json").read_text())
    assert written["metrics"] == result["metrics"] and written["devices"] == 8


def test_keeps_at_most_two_steps_in_flight(tmp_path, monkeypatch):
    # XLA:CPU deadlocks once dozens of 8-device collective steps are queued on a loaded host (CI crashed so).
    # The runner must wait for step i - 1's state right after dispatching step i: record the order of
    # dispatches and waits (a property of the runner, whatever the host's speed).
    from jaxbayes.jobs import _runner

    events, outputs = [], []

    def step(ctx, state, i):
        events.append(("step", i))
        outputs.append(toy.TOY.step(ctx, state, i))
        return outputs[-1]

    real_block = _runner.jax.block_until_ready

    def block(tree):
        events.append(("wait", next((i for i, out in enumerate(outputs) if out is tree), None)))
        return real_block(tree)

    monkeypatch.setattr(_runner.jax, "block_until_ready", block)
    spec = load_job(write_job(tmp_path, "steps = 6"), job_kinds())
    run_job(spec, toy.TOY._replace(step=step))
    assert events[:12] == [("step", 0), ("wait", None), ("step", 1), ("wait", 0), ("step", 2), ("wait", 1),
                    ("step", 3), ("wait", 2), ("step", 4), ("wait", 3), ("step", 5), ("wait", 4)]


@pytest.mark.parametrize("body,message", [
    ('kind = "nope"', "job.kind: unknown kind 'nope'"),
    ('kind = "toy.least_squares"\ncolour = 1', "job.colour: unknown key"),
    ('kind = "toy.least_squares"\n[params]\nlr = 0.1', "params.steps: missing required key"),
    ('kind = "toy.least_squares"\n[params]\nsteps = "ten"', "params.steps: expected int, got str"),
    ('kind = "toy.least_squares"\n[params]\nsteps = 3\nlr = -1.0', "params.lr: must be > 0"),
    ('kind = "toy.least_squares"\n[params]\nsteps = true', "params.steps: expected int, got bool"),
    ('kind = "toy.least_squares"\n[params]\nsteps = 3\nbatch = 9', "params.batch: unknown key"),
    ('kind = "toy.least_squares"\nseed = -2\n[params]\nsteps = 3', "job.seed: must be >= 0"),
    ('kind = "toy.least_squares"\n[params]\nsteps = 3\n[distributed]\nhosts = 2', "distributed.hosts: unknown key"),
    ("kind = ", "not valid TOML"),
    ('kind = "toy.least_squares"\n[params]\nsteps = 3\nlr = inf', "params.lr: must be a finite number, got inf"),
    ('kind = "toy.least_squares"\n[params]\nsteps = 3\nlr = nan', "params.lr: must be a finite number"),
    ('kind = "toy.least_squares"\n[params]\nsteps = 99999999999999999999', "99999999999999999999 is out of range"),
    ('kind = "toy.least_squares"\n[params]\nsteps = 1e20', "params.steps: expected int, got float"),
])
def test_bad_job_files_exit_2_naming_the_key(tmp_path, capsys, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    assert cli.main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "jaxbayes-runs").exists()


def test_unwritable_output_dir_and_missing_package_are_one_line_errors(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    path = tmp_path / "job.toml"
    path.write_text(f'kind = "toy.least_squares"\noutput_dir = "{blocker / "out"}"\n[params]\nsteps = 2\n')
    assert cli.main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "job.output_dir: cannot write to" in err
    path = write_job(tmp_path, 'steps = 2\nneeds = "no_such_package_xyz"')
    assert cli.main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs an optional package (missing package 'no_such_package_xyz')" in err


def test_non_finite_metrics_are_null_with_a_reason_and_exit_1(tmp_path, capsys):
    path = write_job(tmp_path, "steps = 40\nlr = 1e30")  # gradient descent diverges to inf, then nan
    assert cli.main(["run", str(path)]) == 1
    text = (tmp_path / "job-out" / "result.json").read_text()
    written = json.loads(text)  # strict JSON: no NaN or Infinity tokens
    assert "NaN" not in text and "Infinity" not in text
    assert written["metrics"]["w"] == [None, None, None]
    assert set(written["nonfinite"]) == {"metrics.w[0]", "metrics.w[1]", "metrics.w[2]"}
    assert "metrics.w[0] is a non-finite value" in capsys.readouterr().err


def test_existing_checkpoints_need_resume(tmp_path):
    path = write_job(tmp_path, "steps = 4", 'checkpoint_every = 2')
    run_file(path)
    with pytest.raises(JobConfigError, match="--resume"):
        run_file(path)


def test_resume_after_crash_equals_uninterrupted_run(tmp_path):
    reference = run_file(write_job(tmp_path, "steps = 20", "checkpoint_every = 5", name="ref"))
    crashing = write_job(tmp_path, "steps = 20\nfail_at = 12", "checkpoint_every = 5", name="crash")
    with pytest.raises(RuntimeError, match="planned failure at step 12"):
        run_file(crashing)
    # an interrupted checkpoint write leaves a temporary folder that must never be restored
    (tmp_path / "crash-out" / "checkpoints" / "15.orbax-checkpoint-tmp-99").mkdir()
    resumed = run_file(write_job(tmp_path, "steps = 20", "checkpoint_every = 5", name="crash"), resume=True)
    assert resumed["resumed_from"] == 10
    assert resumed["metrics"] == reference["metrics"]


def test_sigkill_mid_run_then_resume_gives_identical_result(tmp_path):
    reference = run_file(write_job(tmp_path, "steps = 30", "checkpoint_every = 4", name="ref"))
    # The job blocks at step 9, after checkpoint 8 is on disk, and says so with a file: no clock involved.
    job = write_job(tmp_path, "steps = 30\nhold_at = 9", "checkpoint_every = 4", name="killed")
    code = f"import tests.jobs.toy; from jaxbayes.cli import main; main(['run', {str(job)!r}, '--cpu-devices', '8'])"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stderr=subprocess.DEVNULL)
    holding = tmp_path / "killed-out" / "holding"
    while not holding.exists():
        assert proc.poll() is None, "job died before reaching step 9"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed-out" / "result.json").exists()
    resumed = run_file(write_job(tmp_path, "steps = 30", "checkpoint_every = 4", name="killed"), resume=True)
    assert resumed["resumed_from"] == 8
    assert resumed["metrics"] == reference["metrics"]


def test_sigkill_of_a_data_job_mid_epoch_then_resume_reads_the_next_batch(tmp_path):
    x, y = toy.data(1, 40)
    np.savez(tmp_path / "d.npz", x=x, y=y)

    def job(name: str, hold_at: int = -1) -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(f'kind = "toy.sgd"\noutput_dir = "{tmp_path / name}"\ncheckpoint_every = 3\n'
                        f'[data]\npath = "d.npz"\nx = "x"\ny = "y"\ntest_fraction = 0.0\n'
                        f"[params]\nsteps = 14\nhold_at = {hold_at}\n")
        return path

    reference = run_file(job("ref"))
    # 40 rows in batches of 8: 5 per epoch; the kill comes at step 8, after checkpoint 6 (mid-epoch 2)
    killed = job("killed", hold_at=8)
    code = (f"import tests.jobs.toy; from jaxbayes.cli import main; main(['run', {str(killed)!r}, "
            "'--cpu-devices', '8'])")  # the devices of this process, so the sums run in the same order
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stderr=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL)
    while not (tmp_path / "killed" / "holding").exists():
        assert proc.poll() is None, "job died before reaching step 8"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "result.json").exists()
    resumed = run_file(job("killed"), resume=True)
    assert resumed["resumed_from"] == 6
    assert resumed["metrics"] == reference["metrics"]


def two_process_job(output_dir: str) -> dict:
    """Worker (runs in each of 2 processes): the toy job on the global 2 x 4 device mesh."""
    import tests.jobs.toy  # noqa: F401  (registers the kind)

    path = Path(output_dir) / "two.toml"
    spec = load_job(path, job_kinds())
    result = run_job(spec, job_kinds()[spec.kind])
    return {"w": np.asarray(result["metrics"]["w"]), "devices": np.asarray([result["devices"], result["processes"]])}


def test_two_process_job_equals_single_process(tmp_path):
    single = run_file(write_job(tmp_path, "steps = 10", name="one"))
    write_job(tmp_path, "steps = 10", "checkpoint_every = 5", name="two")
    results = run_processes("tests.jobs.test_runner:two_process_job", output_dir=str(tmp_path))
    for r in results:
        np.testing.assert_array_equal(r["devices"], [8, 2])
        np.testing.assert_allclose(r["w"], single["metrics"]["w"], rtol=1e-6, atol=1e-7)
    assert json.loads((tmp_path / "two-out" / "result.json").read_text())["processes"] == 2
