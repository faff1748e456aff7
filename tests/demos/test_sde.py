"""The pillar demo runs in quick mode and reports sane metrics."""

import math

from jaxbayes.demos.sde import demo


def test_demo_quick(tmp_path):
    m = demo(tmp_path, quick=True)
    for name in m["figures"]:
        assert (tmp_path / name).stat().st_size > 1000
    assert m["pc_nfe"] == 201 and m["edm_nfe"] == 35
    assert math.isfinite(m["final_loss"]) and m["final_loss"] < 1.5
    # bits/dim of dequantised held-out digits: finite, positive, below the 17-level uniform model.
    assert 0 < m["test_bits_per_dim"] < m["uniform_bits_per_dim"]
    # PC samples are about as close to held-out digits as training digits are.
    assert m["pc_sliced_w2_to_test"] < 2 * m["train_sliced_w2_to_test"]
    assert m["inpaint_observed_max_abs_error"] == 0.0
    # EDM Heun with the exact GMM score reaches the null distance between two true samples.
    assert m["gmm_edm_sliced_w2"] < 1.5 * m["gmm_null_sliced_w2"]
