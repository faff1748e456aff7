"""jaxbayes: scalable Bayesian and generative inference in JAX.

Four pillars share one style (pure functions over pytrees, NamedTuple results, init/step algorithms)
and one parallel layer:

* :mod:`jaxbayes.sde` -- score-based SDEs, samplers, exact likelihood, conditional sampling.
* :mod:`jaxbayes.ot` -- Sinkhorn (balanced, unbalanced, partial) and sparsity-constrained OT.
* :mod:`jaxbayes.kernels` -- NNGP/NTK kernels, GP and Student-t process posteriors, deep kernel machines.
* :mod:`jaxbayes.vi` -- Gaussian VI families, Bayesian neural networks, sparse subspace VI.
* :mod:`jaxbayes.parallel` -- meshes, sharding, per-sample keys, multi-host initialisation.
* :mod:`jaxbayes.datasets` -- offline data sets that ship inside pip packages.
"""

__version__ = "0.1.0.dev0"

from jaxbayes import base as base
from jaxbayes import datasets as datasets
from jaxbayes import kernels as kernels
from jaxbayes import ot as ot
from jaxbayes import parallel as parallel
from jaxbayes import sde as sde
from jaxbayes import vi as vi

__all__ = ["base", "datasets", "kernels", "ot", "parallel", "sde", "vi", "__version__"]
