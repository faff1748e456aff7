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
from jaxbayes.vi._algorithms import lowrank_vi as lowrank_vi
from jaxbayes.vi._algorithms import meanfield_vi as meanfield_vi
from jaxbayes.vi._algorithms import minibatch as minibatch
from jaxbayes.vi._algorithms import raise_if_nonfinite as raise_if_nonfinite
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

__all__ = [
    "FullRank",
    "GaussianPrior",
    "LowRank",
    "MeanField",
    "ObjectiveTerms",
    "VIAlgorithm",
    "VIInfo",
    "VIState",
    "elbo",
    "fit",
    "fullrank_init",
    "fullrank_vi",
    "gaussian_vi",
    "lowrank_init",
    "lowrank_vi",
    "meanfield_init",
    "meanfield_vi",
    "metrics",
    "minibatch",
    "objective_terms",
    "raise_if_nonfinite",
]
