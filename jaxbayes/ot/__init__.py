"""jaxbayes.ot: entropic (balanced, unbalanced, partial), sparsity-constrained and quadratic optimal transport.

Geometries (:func:`pointcloud`, :func:`costmatrix`) hold the costs; :func:`sinkhorn` solves entropic OT
(log-domain, dense or matrix-free, implicit gradients); :func:`sinkhorn_divergence` debiases it;
:func:`partial_ot`, :func:`progressive_partial_ot` and :func:`pseudo_labels` transport part of the mass;
:func:`sparse_ot` and :func:`quadratic_ot` solve sparsity-constrained / quadratically regularised OT;
:func:`round_plan` rounds an approximate plan onto the exact marginals, keeping its support;
:func:`exact_ot` solves unregularised OT between uniform measures (assignment, auction algorithm);
:func:`sliced_wasserstein` compares two samples through 1-D projections;
:mod:`jaxbayes.ot.analytic` has Gaussian closed forms.
"""

from jaxbayes.ot import analytic as analytic
from jaxbayes.ot._costs import Cosine as Cosine
from jaxbayes.ot._costs import Cost as Cost
from jaxbayes.ot._costs import Euclidean as Euclidean
from jaxbayes.ot._costs import FunctionCost as FunctionCost
from jaxbayes.ot._costs import SqEuclidean as SqEuclidean
from jaxbayes.ot._costs import as_cost as as_cost
from jaxbayes.ot._divergence import SinkhornDivergenceOutput as SinkhornDivergenceOutput
from jaxbayes.ot._divergence import sinkhorn_divergence as sinkhorn_divergence
from jaxbayes.ot._exact import ExactOTOutput as ExactOTOutput
from jaxbayes.ot._exact import exact_ot as exact_ot
from jaxbayes.ot._geometry import Geometry as Geometry
from jaxbayes.ot._geometry import as_geometry as as_geometry
from jaxbayes.ot._geometry import costmatrix as costmatrix
from jaxbayes.ot._geometry import pointcloud as pointcloud
from jaxbayes.ot._partial import PartialOTOutput as PartialOTOutput
from jaxbayes.ot._partial import PseudoLabels as PseudoLabels
from jaxbayes.ot._partial import mass_schedule as mass_schedule
from jaxbayes.ot._partial import partial_ot as partial_ot
from jaxbayes.ot._partial import progressive_partial_ot as progressive_partial_ot
from jaxbayes.ot._partial import pseudo_labels as pseudo_labels
from jaxbayes.ot._problem import Problem as Problem
from jaxbayes.ot._problem import as_problem as as_problem
from jaxbayes.ot._projections import sparse_simplex_projection as sparse_simplex_projection
from jaxbayes.ot._projections import top_k as top_k
from jaxbayes.ot._projections import top_k_positive as top_k_positive
from jaxbayes.ot._rounding import RoundedPlan as RoundedPlan
from jaxbayes.ot._rounding import round_plan as round_plan
from jaxbayes.ot._sinkhorn import SinkhornNotConverged as SinkhornNotConverged
from jaxbayes.ot._sinkhorn import SinkhornOutput as SinkhornOutput
from jaxbayes.ot._sinkhorn import sinkhorn as sinkhorn
from jaxbayes.ot._sliced import sliced_wasserstein as sliced_wasserstein
from jaxbayes.ot._sparse import SparseOTOutput as SparseOTOutput
from jaxbayes.ot._sparse import quadratic_ot as quadratic_ot
from jaxbayes.ot._sparse import sparse_ot as sparse_ot

__all__ = [
    "Cosine",
    "Cost",
    "Euclidean",
    "ExactOTOutput",
    "FunctionCost",
    "Geometry",
    "PartialOTOutput",
    "Problem",
    "PseudoLabels",
    "RoundedPlan",
    "SinkhornDivergenceOutput",
    "SinkhornNotConverged",
    "SinkhornOutput",
    "SparseOTOutput",
    "SqEuclidean",
    "analytic",
    "as_cost",
    "as_geometry",
    "as_problem",
    "costmatrix",
    "exact_ot",
    "mass_schedule",
    "partial_ot",
    "pointcloud",
    "progressive_partial_ot",
    "pseudo_labels",
    "quadratic_ot",
    "round_plan",
    "sinkhorn",
    "sinkhorn_divergence",
    "sliced_wasserstein",
    "sparse_ot",
    "sparse_simplex_projection",
    "top_k",
    "top_k_positive",
]
