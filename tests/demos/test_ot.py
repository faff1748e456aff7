"""The pillar demo runs in quick mode and its metrics are sane."""

import json

import numpy as np

from jaxbayes.demos.ot import demo


def test_demo_quick(tmp_path):
    m = demo(tmp_path, quick=True)
    json.dumps(m)  # JSON-able
    assert sorted(m["figures"]) == sorted(p.name for p in tmp_path.glob("*.png"))
    # colour transfer moves the palette towards the target (debiased divergence drops by > 10x)
    assert m["sinkhorn_converged"]
    assert m["divergence_after_sinkhorn"] < 0.1 * m["divergence_before"]
    assert m["divergence_after_sparse"] < 0.1 * m["divergence_before"]
    assert m["sparse_max_nonzeros_per_row"] <= m["sparse_k"] < m["sinkhorn_plan_nonzeros_per_row"]
    # routing: capacity respected, every expert gets its share, every token routed; greedy overflows
    assert m["routing_max_tokens_per_expert_ot"] <= m["routing_capacity"]
    assert m["routing_max_tokens_per_expert_greedy"] > m["routing_capacity"]
    assert abs(m["routing_expert_mass_min"] - 1) < 1e-3 and abs(m["routing_expert_mass_max"] - 1) < 1e-3
    assert m["routing_tokens_routed_ot"] == 1.0
    # pseudo-labels: far above chance (5 classes), selection grows with the transported mass
    acc = np.asarray(m["pseudo_label_accuracy"])
    assert np.all(acc > 0.8)
    assert np.all(np.diff(m["pseudo_label_selected"]) > 0)
