"""Infinite-width kernels of deep networks (NNGP/NTK), GP and Student-t process posteriors, deep kernel machines.

Layers compose in the stax style (``serial(Dense(...), ReLU(), ...)``); each carries a finite random
network for Monte-Carlo checks and a closed-form kernel map. See the module docstrings for the maths.
"""

from jaxbayes.kernels._bar_distribution import BarDistribution as BarDistribution
from jaxbayes.kernels._bar_distribution import bar_borders as bar_borders
from jaxbayes.kernels._bbmm import LMLEstimate as LMLEstimate
from jaxbayes.kernels._bbmm import OperatorConditioned as OperatorConditioned
from jaxbayes.kernels._bbmm import QuadLogdet as QuadLogdet
from jaxbayes.kernels._bbmm import lml_and_stderr as lml_and_stderr
from jaxbayes.kernels._bbmm import pivoted_cholesky as pivoted_cholesky
from jaxbayes.kernels._bbmm import quad_and_logdet as quad_and_logdet
from jaxbayes.kernels._combinators import FanInSum as FanInSum
from jaxbayes.kernels._combinators import FanOut as FanOut
from jaxbayes.kernels._combinators import parallel as parallel
from jaxbayes.kernels._combinators import serial as serial
from jaxbayes.kernels._dkm import DKM as DKM
from jaxbayes.kernels._dkm import DKMInfo as DKMInfo
from jaxbayes.kernels._dkm import DKMParams as DKMParams
from jaxbayes.kernels._dkm import DKMPrediction as DKMPrediction
from jaxbayes.kernels._dkm import DKMState as DKMState
from jaxbayes.kernels._dkm import dkm as dkm
from jaxbayes.kernels._dkm import dkm_layers as dkm_layers
from jaxbayes.kernels._elementwise import GELU as GELU
from jaxbayes.kernels._elementwise import ABReLU as ABReLU
from jaxbayes.kernels._elementwise import Abs as Abs
from jaxbayes.kernels._elementwise import Cos as Cos
from jaxbayes.kernels._elementwise import Erf as Erf
from jaxbayes.kernels._elementwise import Exp as Exp
from jaxbayes.kernels._elementwise import LeakyReLU as LeakyReLU
from jaxbayes.kernels._elementwise import Rbf as Rbf
from jaxbayes.kernels._elementwise import ReLU as ReLU
from jaxbayes.kernels._elementwise import Sin as Sin
from jaxbayes.kernels._gp import FitResult as FitResult
from jaxbayes.kernels._gp import GPPosterior as GPPosterior
from jaxbayes.kernels._gp import fit_hyperparameters as fit_hyperparameters
from jaxbayes.kernels._gp import gp_condition as gp_condition
from jaxbayes.kernels._gp import gp_posterior as gp_posterior
from jaxbayes.kernels._gp import gp_predict as gp_predict
from jaxbayes.kernels._gp import gp_predict_batched as gp_predict_batched
from jaxbayes.kernels._gp import infinite_ensemble_posterior as infinite_ensemble_posterior
from jaxbayes.kernels._gp import log_marginal_likelihood as log_marginal_likelihood
from jaxbayes.kernels._gram import KernelMatrices as KernelMatrices
from jaxbayes.kernels._gram import gram as gram
from jaxbayes.kernels._kernel import DiagonalKernel as DiagonalKernel
from jaxbayes.kernels._kernel import Kernel as Kernel
from jaxbayes.kernels._kernel import Layer as Layer
from jaxbayes.kernels._kernel import gram_kernel as gram_kernel
from jaxbayes.kernels._kernel import input_kernel as input_kernel
from jaxbayes.kernels._laplace_classification import LaplaceMulticlass as LaplaceMulticlass
from jaxbayes.kernels._laplace_classification import StudentTClassification as StudentTClassification
from jaxbayes.kernels._laplace_classification import laplace_binary as laplace_binary
from jaxbayes.kernels._laplace_classification import laplace_multiclass as laplace_multiclass
from jaxbayes.kernels._laplace_classification import student_t_classify as student_t_classify
from jaxbayes.kernels._laplace_classification import student_t_classify_multiclass as student_t_classify_multiclass
from jaxbayes.kernels._linalg import CGResult as CGResult
from jaxbayes.kernels._linalg import CholeskyResult as CholeskyResult
from jaxbayes.kernels._linalg import cg_solve as cg_solve
from jaxbayes.kernels._linalg import jittered_cholesky as jittered_cholesky
from jaxbayes.kernels._linear import Conv as Conv
from jaxbayes.kernels._linear import Dense as Dense
from jaxbayes.kernels._linear import Flatten as Flatten
from jaxbayes.kernels._linear import GlobalAvgPool as GlobalAvgPool
from jaxbayes.kernels._linear import Identity as Identity
from jaxbayes.kernels._math import safe_arccos as safe_arccos
from jaxbayes.kernels._math import safe_sqrt as safe_sqrt
from jaxbayes.kernels._monte_carlo import MonteCarloKernel as MonteCarloKernel
from jaxbayes.kernels._monte_carlo import empirical_ntk as empirical_ntk
from jaxbayes.kernels._monte_carlo import monte_carlo_kernel as monte_carlo_kernel
from jaxbayes.kernels._operator import CrossOperator as CrossOperator
from jaxbayes.kernels._operator import KernelOperator as KernelOperator
from jaxbayes.kernels._operator import kernel_operator as kernel_operator
from jaxbayes.kernels._operator import matern52 as matern52
from jaxbayes.kernels._operator import nngp_pair_fn as nngp_pair_fn
from jaxbayes.kernels._operator import rbf as rbf
from jaxbayes.kernels._pfn import PFN as PFN
from jaxbayes.kernels._pfn import DataPrior as DataPrior
from jaxbayes.kernels._pfn import GPPrior as GPPrior
from jaxbayes.kernels._pfn import GPPriorDraw as GPPriorDraw
from jaxbayes.kernels._pfn import PFNInfo as PFNInfo
from jaxbayes.kernels._pfn import PFNState as PFNState
from jaxbayes.kernels._pfn import PFNTransformer as PFNTransformer
from jaxbayes.kernels._pfn import pfn as pfn
from jaxbayes.kernels._pfn import sample_datasets as sample_datasets
from jaxbayes.kernels._solvers import CG as CG
from jaxbayes.kernels._solvers import Cholesky as Cholesky
from jaxbayes.kernels._solvers import GPConditioned as GPConditioned
from jaxbayes.kernels._solvers import GPSolver as GPSolver
from jaxbayes.kernels._solvers import as_solver as as_solver
from jaxbayes.kernels._student_t import ScaleMixturePosterior as ScaleMixturePosterior
from jaxbayes.kernels._student_t import StudentTPosterior as StudentTPosterior
from jaxbayes.kernels._student_t import fit_student_t as fit_student_t
from jaxbayes.kernels._student_t import scale_mixture_posterior as scale_mixture_posterior
from jaxbayes.kernels._student_t import student_t_joint_predictive_logpdf as student_t_joint_predictive_logpdf
from jaxbayes.kernels._student_t import student_t_log_marginal_likelihood as student_t_log_marginal_likelihood
from jaxbayes.kernels._student_t import student_t_posterior as student_t_posterior
from jaxbayes.kernels._student_t import student_t_predictive_logpdf as student_t_predictive_logpdf

__all__ = [
    "ABReLU", "Abs", "CG", "CGResult", "Cholesky", "CholeskyResult", "Conv", "Cos", "CrossOperator", "DKM",
    "DKMInfo", "DKMParams", "DKMPrediction", "DKMState", "Dense", "DiagonalKernel", "Erf", "Exp", "FanInSum",
    "FanOut", "FitResult", "Flatten", "GELU", "GPConditioned", "GPPosterior", "GPSolver", "GlobalAvgPool", "Identity",
    "Kernel",
    "KernelMatrices", "KernelOperator", "LMLEstimate", "LaplaceMulticlass", "Layer", "LeakyReLU",
    "MonteCarloKernel", "OperatorConditioned", "QuadLogdet", "Rbf", "ReLU", "ScaleMixturePosterior", "Sin",
    "StudentTClassification", "StudentTPosterior", "as_solver", "cg_solve", "dkm", "dkm_layers", "empirical_ntk",
    "fit_hyperparameters", "fit_student_t", "gp_condition", "gp_posterior", "gp_predict", "gp_predict_batched",
    "gram", "gram_kernel", "infinite_ensemble_posterior", "input_kernel", "jittered_cholesky", "kernel_operator",
    "laplace_binary", "laplace_multiclass", "lml_and_stderr", "log_marginal_likelihood", "matern52",
    "monte_carlo_kernel", "nngp_pair_fn", "parallel", "pivoted_cholesky", "quad_and_logdet", "rbf", "safe_arccos",
    "safe_sqrt",
    "scale_mixture_posterior", "serial", "student_t_classify", "student_t_classify_multiclass",
    "student_t_joint_predictive_logpdf", "student_t_log_marginal_likelihood", "student_t_posterior",
    "student_t_predictive_logpdf",
    "BarDistribution",
    "DataPrior",
    "GPPrior",
    "GPPriorDraw",
    "PFN",
    "PFNInfo",
    "PFNState",
    "PFNTransformer",
    "bar_borders",
    "pfn",
    "sample_datasets",
]
