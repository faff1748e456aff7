"""Variational inference: Gaussian families, ELBO/Renyi objectives, VI algorithms, BNNs, SSVI, Laplace.

Metrics for probabilistic classifiers live in :mod:`jaxbayes.vi.metrics`.
"""

from jaxbayes.vi import metrics as metrics
from jaxbayes.vi._algorithms import VIAlgorithm as VIAlgorithm
from jaxbayes.vi._algorithms import VIInfo as VIInfo
from jaxbayes.vi._algorithms import VIState as VIState
from jaxbayes.vi._algorithms import fit as fit
from jaxbayes.vi._algorithms import fullrank_vi as fullrank_vi
from jaxbayes.vi._algorithms import gaussian_vi as gaussian_vi
from jaxbayes.vi._algorithms import guarded_update as guarded_update
from jaxbayes.vi._algorithms import lowrank_vi as lowrank_vi
from jaxbayes.vi._algorithms import meanfield_vi as meanfield_vi
from jaxbayes.vi._algorithms import minibatch as minibatch
from jaxbayes.vi._algorithms import raise_if_nonfinite as raise_if_nonfinite
from jaxbayes.vi._bnn import BNNAlgorithm as BNNAlgorithm
from jaxbayes.vi._bnn import bnn_apply as bnn_apply
from jaxbayes.vi._bnn import bnn_init as bnn_init
from jaxbayes.vi._bnn import bnn_objective as bnn_objective
from jaxbayes.vi._bnn import bnn_vi as bnn_vi
from jaxbayes.vi._bnn import log_likelihood as log_likelihood
from jaxbayes.vi._bnn import masked_kl as masked_kl
from jaxbayes.vi._bnn import predict as predict
from jaxbayes.vi._elbo import GaussianPrior as GaussianPrior
from jaxbayes.vi._elbo import ObjectiveTerms as ObjectiveTerms
from jaxbayes.vi._elbo import elbo as elbo
from jaxbayes.vi._elbo import objective_terms as objective_terms
from jaxbayes.vi._families import FullRank as FullRank
from jaxbayes.vi._families import LowRank as LowRank
from jaxbayes.vi._families import MeanField as MeanField
from jaxbayes.vi._families import fullrank_init as fullrank_init
from jaxbayes.vi._families import lowrank_init as lowrank_init
from jaxbayes.vi._families import meanfield_init as meanfield_init
from jaxbayes.vi._laplace import diagonal_fisher as diagonal_fisher
from jaxbayes.vi._laplace import fisher_merge as fisher_merge
from jaxbayes.vi._laplace import laplace as laplace
from jaxbayes.vi._ssvi import CRITERIA as CRITERIA
from jaxbayes.vi._ssvi import SSVIAlgorithm as SSVIAlgorithm
from jaxbayes.vi._ssvi import SSVIInfo as SSVIInfo
from jaxbayes.vi._ssvi import SSVIState as SSVIState
from jaxbayes.vi._ssvi import drop_fraction_schedule as drop_fraction_schedule
from jaxbayes.vi._ssvi import folded_normal_moments as folded_normal_moments
from jaxbayes.vi._ssvi import random_mask as random_mask
from jaxbayes.vi._ssvi import removal_score as removal_score
from jaxbayes.vi._ssvi import sparsity_report as sparsity_report
from jaxbayes.vi._ssvi import ssvi as ssvi
from jaxbayes.vi._ssvi import swap_weights as swap_weights

__all__ = [
    "BNNAlgorithm",
    "CRITERIA",
    "FullRank",
    "GaussianPrior",
    "LowRank",
    "MeanField",
    "ObjectiveTerms",
    "SSVIAlgorithm",
    "SSVIInfo",
    "SSVIState",
    "VIAlgorithm",
    "VIInfo",
    "VIState",
    "bnn_apply",
    "bnn_init",
    "bnn_objective",
    "bnn_vi",
    "diagonal_fisher",
    "drop_fraction_schedule",
    "elbo",
    "fisher_merge",
    "fit",
    "folded_normal_moments",
    "fullrank_init",
    "fullrank_vi",
    "gaussian_vi",
    "guarded_update",
    "laplace",
    "log_likelihood",
    "lowrank_init",
    "lowrank_vi",
    "masked_kl",
    "meanfield_init",
    "meanfield_vi",
    "metrics",
    "minibatch",
    "objective_terms",
    "predict",
    "raise_if_nonfinite",
    "random_mask",
    "removal_score",
    "sparsity_report",
    "ssvi",
    "swap_weights",
]
