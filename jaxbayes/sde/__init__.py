"""jaxbayes.sde: score-based SDEs, samplers, exact likelihoods, training and conditional sampling.

Every sampler draws one sample per key and takes a per-point ``score_fn(x, t)``; batch with
:func:`sample_batch` (per-sample keys, identical results for any batch size and device count).
"""

from jaxbayes.sde import analytic as analytic
from jaxbayes.sde import nets as nets
from jaxbayes.sde._batch import sample_batch as sample_batch
from jaxbayes.sde._conditional import classifier_guidance as classifier_guidance
from jaxbayes.sde._conditional import color_transform as color_transform
from jaxbayes.sde._conditional import colorize as colorize
from jaxbayes.sde._conditional import dps_sampler as dps_sampler
from jaxbayes.sde._conditional import inpaint as inpaint
from jaxbayes.sde._consistency import ConsistencyInfo as ConsistencyInfo
from jaxbayes.sde._consistency import ConsistencySchedule as ConsistencySchedule
from jaxbayes.sde._consistency import consistency_distance as consistency_distance
from jaxbayes.sde._consistency import consistency_fn as consistency_fn
from jaxbayes.sde._consistency import consistency_loss as consistency_loss
from jaxbayes.sde._consistency import consistency_sampler as consistency_sampler
from jaxbayes.sde._consistency import consistency_step as consistency_step
from jaxbayes.sde._consistency import consistency_trainer as consistency_trainer
from jaxbayes.sde._correctors import AnnealedLangevin as AnnealedLangevin
from jaxbayes.sde._correctors import Corrector as Corrector
from jaxbayes.sde._correctors import Langevin as Langevin
from jaxbayes.sde._correctors import NoCorrector as NoCorrector
from jaxbayes.sde._correctors import as_corrector as as_corrector
from jaxbayes.sde._ddim import ddim_sampler as ddim_sampler
from jaxbayes.sde._dpm_solver import dpm_solver_pp_2m as dpm_solver_pp_2m
from jaxbayes.sde._dpm_solver import logsnr_grid as logsnr_grid
from jaxbayes.sde._edm import Precond as Precond
from jaxbayes.sde._edm import edm_denoiser as edm_denoiser
from jaxbayes.sde._edm import edm_precond as edm_precond
from jaxbayes.sde._edm import edm_sampler as edm_sampler
from jaxbayes.sde._edm import karras_sigmas as karras_sigmas
from jaxbayes.sde._interpolants import Interpolant as Interpolant
from jaxbayes.sde._interpolants import gaussian_velocity as gaussian_velocity
from jaxbayes.sde._interpolants import interpolant_loss as interpolant_loss
from jaxbayes.sde._interpolants import interpolant_sampler as interpolant_sampler
from jaxbayes.sde._likelihood import LikelihoodOutput as LikelihoodOutput
from jaxbayes.sde._likelihood import bits_per_dim as bits_per_dim
from jaxbayes.sde._likelihood import decode as decode
from jaxbayes.sde._likelihood import encode as encode
from jaxbayes.sde._likelihood import log_likelihood as log_likelihood
from jaxbayes.sde._losses import ddpm_loss as ddpm_loss
from jaxbayes.sde._losses import dsm_loss as dsm_loss
from jaxbayes.sde._losses import edm_loss as edm_loss
from jaxbayes.sde._losses import smld_loss as smld_loss
from jaxbayes.sde._metrics import energy_distance as energy_distance
from jaxbayes.sde._metrics import median_bandwidth as median_bandwidth
from jaxbayes.sde._metrics import mmd2 as mmd2
from jaxbayes.sde._metrics import sinkhorn_divergence as sinkhorn_divergence
from jaxbayes.sde._metrics import sliced_w2 as sliced_w2
from jaxbayes.sde._ode_sampler import ode_sampler as ode_sampler
from jaxbayes.sde._param import convert_fn as convert_fn
from jaxbayes.sde._param import denoiser_from_score as denoiser_from_score
from jaxbayes.sde._param import from_score as from_score
from jaxbayes.sde._param import score_from_denoiser as score_from_denoiser
from jaxbayes.sde._param import to_score as to_score
from jaxbayes.sde._pc import pc_sampler as pc_sampler
from jaxbayes.sde._pfgm import PFGMpp as PFGMpp
from jaxbayes.sde._posterior_mean_transport import GaussianTransport as GaussianTransport
from jaxbayes.sde._posterior_mean_transport import deep_ot_map as deep_ot_map
from jaxbayes.sde._posterior_mean_transport import gaussian_w2_map as gaussian_w2_map
from jaxbayes.sde._posterior_mean_transport import pmrf_loss as pmrf_loss
from jaxbayes.sde._posterior_mean_transport import pmrf_sampler as pmrf_sampler
from jaxbayes.sde._posterior_mean_transport import pmrf_trainer as pmrf_trainer
from jaxbayes.sde._predictors import Ancestral as Ancestral
from jaxbayes.sde._predictors import EulerMaruyama as EulerMaruyama
from jaxbayes.sde._predictors import NoPredictor as NoPredictor
from jaxbayes.sde._predictors import Predictor as Predictor
from jaxbayes.sde._predictors import ReverseDiffusion as ReverseDiffusion
from jaxbayes.sde._predictors import as_predictor as as_predictor
from jaxbayes.sde._red_diff import RedDiffOutput as RedDiffOutput
from jaxbayes.sde._red_diff import red_diff as red_diff
from jaxbayes.sde._sampling import SamplerOutput as SamplerOutput
from jaxbayes.sde._sampling import tweedie_denoise as tweedie_denoise
from jaxbayes.sde._sdes import VESDE as VESDE
from jaxbayes.sde._sdes import VPSDE as VPSDE
from jaxbayes.sde._sdes import SubVPSDE as SubVPSDE
from jaxbayes.sde._sdes import get_sde as get_sde
from jaxbayes.sde._trainer import Trainer as Trainer
from jaxbayes.sde._trainer import TrainInfo as TrainInfo
from jaxbayes.sde._trainer import TrainState as TrainState
from jaxbayes.sde._trainer import score_trainer as score_trainer
from jaxbayes.sde._trainer import trainer_init as trainer_init
from jaxbayes.sde._trainer import trainer_step as trainer_step
from jaxbayes.sde.analytic import gaussian_logpdf as gaussian_logpdf
from jaxbayes.sde.analytic import gaussian_score as gaussian_score
from jaxbayes.sde.analytic import gmm_denoiser as gmm_denoiser
from jaxbayes.sde.analytic import gmm_logpdf as gmm_logpdf
from jaxbayes.sde.analytic import gmm_score as gmm_score

__all__ = [
    "Ancestral",
    "AnnealedLangevin",
    "Corrector",
    "EulerMaruyama",
    "Interpolant",
    "Langevin",
    "LikelihoodOutput",
    "NoCorrector",
    "NoPredictor",
    "PFGMpp",
    "Precond",
    "Predictor",
    "ReverseDiffusion",
    "SamplerOutput",
    "SubVPSDE",
    "TrainInfo",
    "TrainState",
    "Trainer",
    "VESDE",
    "VPSDE",
    "analytic",
    "as_corrector",
    "as_predictor",
    "bits_per_dim",
    "classifier_guidance",
    "color_transform",
    "colorize",
    "convert_fn",
    "ddim_sampler",
    "ddpm_loss",
    "decode",
    "denoiser_from_score",
    "dpm_solver_pp_2m",
    "dps_sampler",
    "dsm_loss",
    "edm_denoiser",
    "edm_loss",
    "edm_precond",
    "edm_sampler",
    "encode",
    "energy_distance",
    "from_score",
    "gaussian_logpdf",
    "gaussian_score",
    "gaussian_velocity",
    "get_sde",
    "gmm_denoiser",
    "gmm_logpdf",
    "gmm_score",
    "inpaint",
    "interpolant_loss",
    "interpolant_sampler",
    "karras_sigmas",
    "log_likelihood",
    "logsnr_grid",
    "median_bandwidth",
    "mmd2",
    "nets",
    "ode_sampler",
    "pc_sampler",
    "sample_batch",
    "score_from_denoiser",
    "score_trainer",
    "sinkhorn_divergence",
    "sliced_w2",
    "smld_loss",
    "to_score",
    "tweedie_denoise",
    "trainer_init",
    "trainer_step",
    "red_diff",
    "RedDiffOutput",
    "GaussianTransport",
    "deep_ot_map",
    "gaussian_w2_map",
    "pmrf_loss",
    "pmrf_sampler",
    "pmrf_trainer",
    "ConsistencyInfo",
    "ConsistencySchedule",
    "consistency_distance",
    "consistency_fn",
    "consistency_loss",
    "consistency_sampler",
    "consistency_step",
    "consistency_trainer",
]
