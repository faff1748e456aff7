"""Variational inference: Gaussian families and objectives as objects, one VI algorithm over any optax
optimiser, Bayesian neural networks, sparse subspace VI (SSVI), Laplace (MAP, full / diagonal / KFAC / last-layer
curvature, log evidence, prior tuning, predictives) and Fisher merging.

Families (``MeanField()``, ``LowRank(rank=)``, ``FullRank()``, ``Flow()``) build the distributions
``MeanFieldNormal``, ``LowRankNormal``, ``FullRankNormal``, ``FlowNormal`` (each with ``to_distrax()``);
objectives are ``ELBO()`` and ``Renyi(alpha=)``. Every algorithm is a :class:`jaxbayes.base.Algorithm`
(``init(key, ...)``, ``step(key, state, batch)``); ``fit``, ``minibatch``, ``guarded_update`` and
``raise_if_nonfinite`` are :mod:`jaxbayes.base`'s, re-exported here. Metrics for probabilistic classifiers
live in :mod:`jaxbayes.vi.metrics`.
"""

from jaxbayes.base import fit as fit
from jaxbayes.base import guarded_update as guarded_update
from jaxbayes.base import minibatch as minibatch
from jaxbayes.base import raise_if_nonfinite as raise_if_nonfinite
from jaxbayes.vi import metrics as metrics
from jaxbayes.vi._bayescap import GGD as GGD
from jaxbayes.vi._bayescap import BayesCapAlgorithm as BayesCapAlgorithm
from jaxbayes.vi._bayescap import BayesCapMLP as BayesCapMLP
from jaxbayes.vi._bayescap import bayescap as bayescap
from jaxbayes.vi._bayescap import bayescap_loss as bayescap_loss
from jaxbayes.vi._bayescap import ggd_from_outputs as ggd_from_outputs
from jaxbayes.vi._bayescap import ggd_log_prob as ggd_log_prob
from jaxbayes.vi._bayescap import interval_coverage as interval_coverage
from jaxbayes.vi._bnn import LIKELIHOODS as LIKELIHOODS
from jaxbayes.vi._bnn import BNNAlgorithm as BNNAlgorithm
from jaxbayes.vi._bnn import bnn_init as bnn_init
from jaxbayes.vi._bnn import bnn_objective as bnn_objective
from jaxbayes.vi._bnn import bnn_step_objective as bnn_step_objective
from jaxbayes.vi._bnn import bnn_vi as bnn_vi
from jaxbayes.vi._bnn import log_likelihood as log_likelihood
from jaxbayes.vi._bnn import masked_kl as masked_kl
from jaxbayes.vi._bnn import predict as predict
from jaxbayes.vi._bnn_forward import METHODS as METHODS
from jaxbayes.vi._bnn_forward import bnn_apply as bnn_apply
from jaxbayes.vi._elbo import ELBO as ELBO
from jaxbayes.vi._families import FAMILIES as FAMILIES
from jaxbayes.vi._families import as_family as as_family
from jaxbayes.vi._family import VariationalFamily as VariationalFamily
from jaxbayes.vi._flow import Flow as Flow
from jaxbayes.vi._flow import FlowNormal as FlowNormal
from jaxbayes.vi._fullrank import FullRank as FullRank
from jaxbayes.vi._fullrank import FullRankNormal as FullRankNormal
from jaxbayes.vi._fullrank import fullrank_init as fullrank_init
from jaxbayes.vi._gaussian_vi import VIAlgorithm as VIAlgorithm
from jaxbayes.vi._gaussian_vi import flow_vi as flow_vi
from jaxbayes.vi._gaussian_vi import fullrank_vi as fullrank_vi
from jaxbayes.vi._gaussian_vi import gaussian_vi as gaussian_vi
from jaxbayes.vi._gaussian_vi import gaussian_vi_objective as gaussian_vi_objective
from jaxbayes.vi._gaussian_vi import lowrank_vi as lowrank_vi
from jaxbayes.vi._gaussian_vi import meanfield_vi as meanfield_vi
from jaxbayes.vi._laplace import diagonal_fisher as diagonal_fisher
from jaxbayes.vi._laplace import fisher_merge as fisher_merge
from jaxbayes.vi._laplace import laplace as laplace
from jaxbayes.vi._laplace_kfac import DenseLayer as DenseLayer
from jaxbayes.vi._laplace_kfac import KFACCurvature as KFACCurvature
from jaxbayes.vi._laplace_kfac import LaplaceKFAC as LaplaceKFAC
from jaxbayes.vi._laplace_map import MAPResult as MAPResult
from jaxbayes.vi._laplace_map import find_map as find_map
from jaxbayes.vi._laplace_posterior import LaplacePosterior as LaplacePosterior
from jaxbayes.vi._laplace_posterior import PriorPrecisionResult as PriorPrecisionResult
from jaxbayes.vi._laplace_posterior import laplace_posterior as laplace_posterior
from jaxbayes.vi._laplace_posterior import tune_prior_precision as tune_prior_precision
from jaxbayes.vi._laplace_predictive import glm_predictive_moments as glm_predictive_moments
from jaxbayes.vi._laplace_predictive import laplace_predictive as laplace_predictive
from jaxbayes.vi._laplace_structure import LaplaceStructure as LaplaceStructure
from jaxbayes.vi._laplace_structures import STRUCTURES as STRUCTURES
from jaxbayes.vi._laplace_structures import DiagCurvature as DiagCurvature
from jaxbayes.vi._laplace_structures import FullCurvature as FullCurvature
from jaxbayes.vi._laplace_structures import LaplaceDiag as LaplaceDiag
from jaxbayes.vi._laplace_structures import LaplaceFull as LaplaceFull
from jaxbayes.vi._laplace_structures import LaplaceLastLayer as LaplaceLastLayer
from jaxbayes.vi._laplace_structures import as_structure as as_structure
from jaxbayes.vi._lowrank import LowRank as LowRank
from jaxbayes.vi._lowrank import LowRankNormal as LowRankNormal
from jaxbayes.vi._lowrank import lowrank_init as lowrank_init
from jaxbayes.vi._meanfield import MeanField as MeanField
from jaxbayes.vi._meanfield import MeanFieldNormal as MeanFieldNormal
from jaxbayes.vi._meanfield import meanfield_init as meanfield_init
from jaxbayes.vi._niw import NIW as NIW
from jaxbayes.vi._niw import NIWFit as NIWFit
from jaxbayes.vi._niw import NIWPredictive as NIWPredictive
from jaxbayes.vi._niw import fit_niw_prior as fit_niw_prior
from jaxbayes.vi._niw import moment_matched_prior as moment_matched_prior
from jaxbayes.vi._niw import niw_few_shot_log_probs as niw_few_shot_log_probs
from jaxbayes.vi._niw import niw_log_marginal_likelihood as niw_log_marginal_likelihood
from jaxbayes.vi._niw import niw_posterior as niw_posterior
from jaxbayes.vi._niw import niw_predictive as niw_predictive
from jaxbayes.vi._objective import Objective as Objective
from jaxbayes.vi._objective import ObjectiveTerms as ObjectiveTerms
from jaxbayes.vi._objectives import OBJECTIVES as OBJECTIVES
from jaxbayes.vi._objectives import as_objective as as_objective
from jaxbayes.vi._objectives import elbo as elbo
from jaxbayes.vi._objectives import objective_terms as objective_terms
from jaxbayes.vi._prior import GaussianPrior as GaussianPrior
from jaxbayes.vi._renyi import Renyi as Renyi
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
from jaxbayes.vi._state import VIInfo as VIInfo
from jaxbayes.vi._state import VIState as VIState
from jaxbayes.vi._state import variational_step as variational_step

__all__ = [
    "BNNAlgorithm",
    "CRITERIA",
    "DenseLayer",
    "DiagCurvature",
    "ELBO",
    "FAMILIES",
    "FullCurvature",
    "Flow",
    "FlowNormal",
    "FullRank",
    "FullRankNormal",
    "GaussianPrior",
    "KFACCurvature",
    "LIKELIHOODS",
    "LaplaceDiag",
    "LaplaceFull",
    "LaplaceKFAC",
    "LaplaceLastLayer",
    "LaplacePosterior",
    "LaplaceStructure",
    "LowRank",
    "LowRankNormal",
    "MAPResult",
    "METHODS",
    "MeanField",
    "MeanFieldNormal",
    "OBJECTIVES",
    "Objective",
    "ObjectiveTerms",
    "PriorPrecisionResult",
    "Renyi",
    "SSVIAlgorithm",
    "SSVIInfo",
    "SSVIState",
    "STRUCTURES",
    "VIAlgorithm",
    "VIInfo",
    "VIState",
    "VariationalFamily",
    "as_family",
    "as_objective",
    "as_structure",
    "bnn_apply",
    "bnn_init",
    "bnn_objective",
    "bnn_step_objective",
    "bnn_vi",
    "diagonal_fisher",
    "drop_fraction_schedule",
    "elbo",
    "find_map",
    "fisher_merge",
    "fit",
    "folded_normal_moments",
    "fullrank_init",
    "flow_vi",
    "fullrank_vi",
    "gaussian_vi",
    "gaussian_vi_objective",
    "glm_predictive_moments",
    "guarded_update",
    "laplace",
    "laplace_posterior",
    "laplace_predictive",
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
    "tune_prior_precision",
    "variational_step",
    "NIW",
    "NIWFit",
    "NIWPredictive",
    "fit_niw_prior",
    "moment_matched_prior",
    "niw_few_shot_log_probs",
    "niw_log_marginal_likelihood",
    "niw_posterior",
    "niw_predictive",
    "BayesCapAlgorithm",
    "BayesCapMLP",
    "GGD",
    "bayescap",
    "bayescap_loss",
    "ggd_from_outputs",
    "ggd_log_prob",
    "interval_coverage",
]
