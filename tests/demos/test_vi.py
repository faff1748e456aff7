"""The pillar demo runs in quick mode on real data and gives sane metrics."""

import math

from jaxbayes.demos.vi import demo


def test_demo_quick(tmp_path):
    out = demo(tmp_path, quick=True)
    for name in ("dense_vi", "ssvi_0.1", "ssvi_0.05"):
        res = out["digits"][name]
        assert res["accuracy"] > 0.85, (name, res)  # chance is 0.1
        assert math.isfinite(res["nll"]) and res["nll"] < 0.6
        assert 0.0 <= res["ece"] < 0.1 and 0.5 < res["ood_auroc"] <= 1.0
    for d in (0.1, 0.05):
        res = out["digits"][f"ssvi_{d}"]
        assert abs(res["density"] - d) < 1e-3
        assert all(abs(v - d) < 1e-3 for v in res["density_per_layer"].values())
    lr = out["logistic_regression"]
    assert lr["accuracy"] > 0.9 and math.isfinite(lr["nll"])
    assert lr["mean_predictive_sd_wrong"] > lr["mean_predictive_sd_correct"]
    for f in out["figures"]:
        assert (tmp_path / f).stat().st_size > 1000
