"""What classification job kinds report: test accuracy, NLL and ECE of predictive probabilities, and a
reliability plot."""

from __future__ import annotations

import numpy as np

from jaxbayes.vi import metrics


def classification_report(ctx, probs, labels, title: str) -> dict:
    """Test accuracy, NLL and ECE of predictive probabilities, and (process 0) a reliability plot."""
    out = {
        "test_accuracy": float(metrics.accuracy(probs, labels)),
        "test_nll": float(metrics.nll(probs, labels)),
        "test_ece": float(metrics.ece(probs, labels)),
    }
    if ctx.is_main:
        diagram = metrics.reliability_diagram(probs, labels)
        from jaxbayes.demos import plotting

        fig, ax = plotting.figure()
        ax = ax[0][0]
        filled = np.asarray(diagram.count) > 0
        conf, acc = np.asarray(diagram.confidence)[filled], np.asarray(diagram.accuracy)[filled]
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ax.plot(conf, acc, "o-", label="posterior predictive")
        ax.set(xlabel="confidence (top-class probability)", ylabel="accuracy")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
        out["figures"] = [plotting.save(fig, ctx.output_dir / "reliability.png")]
    return out
