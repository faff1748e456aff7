"""The kernels demo runs on real data in quick mode and gives sane metrics."""

import math

from jaxbayes.demos.kernels import demo


def test_demo_quick(tmp_path):
    m = demo(tmp_path, quick=True)
    reg = m["regression"]["diabetes"]
    for name in ("nngp", "student_t", "rbf_gp", "dkm"):
        assert math.isfinite(reg[name]["nll"]) and 0.3 < reg[name]["rmse"] < 1.2  # standardised targets
    assert m["digits_dkm"]["accuracy"] > 0.5  # chance is 0.1
    assert all(math.isfinite(v) for v in m["ood"]["nll_student_t"] + m["ood"]["nll_gaussian"])
    assert len(m["figures"]) == 3 and all((tmp_path / f).exists() or __import__("os").path.exists(f)
                                          for f in m["figures"])
