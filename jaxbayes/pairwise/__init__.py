"""A matrix-free pairwise engine: reductions over all pairs of two point sets, in tiles, sharded over a mesh.

The reductions every pillar needs — soft-min / log-sum-exp along either axis with weights and potentials
(Sinkhorn), kernel–vector and kernel–matrix products (GP solves), row and column sums (sample metrics) — are
computed ``chunk_size`` rows by ``chunk_size`` columns at a time, never forming the ``n x m`` matrix, and on a
mesh each device reduces its own blocks and the engine combines them with a collective (a ring of
``ppermute`` when both sets are split along one axis). See :func:`reduce` for the contract.
"""

from jaxbayes.pairwise._ops import col_sums as col_sums
from jaxbayes.pairwise._ops import logsumexp as logsumexp
from jaxbayes.pairwise._ops import matmul as matmul
from jaxbayes.pairwise._ops import row_sums as row_sums
from jaxbayes.pairwise._placement import Placement as Placement
from jaxbayes.pairwise._placement import placement_of as placement_of
from jaxbayes.pairwise._reduce import reduce as reduce

__all__ = ["Placement", "col_sums", "logsumexp", "matmul", "placement_of", "reduce", "row_sums"]
