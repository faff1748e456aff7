"""Pod jobs: ``jaxbayes run JOB.toml`` on every host, with orbax checkpoints and ``--resume``.

A job file names a ``kind`` (built in, from :mod:`jaxbayes.jobs.kinds`, or added with :func:`register_job_kind`),
its ``[params]`` and, for kinds that read data, a ``[data]`` table naming the user's files (see
:mod:`jaxbayes.jobs._data`); it is validated completely, data included, before anything runs
(``jaxbayes validate JOB.toml`` does only that).
"""

from jaxbayes.jobs._config import Field as Field
from jaxbayes.jobs._config import JobConfigError as JobConfigError
from jaxbayes.jobs._config import JobSpec as JobSpec
from jaxbayes.jobs._config import apply_overrides as apply_overrides
from jaxbayes.jobs._config import load_job as load_job
from jaxbayes.jobs._config import non_negative as non_negative
from jaxbayes.jobs._config import one_of as one_of
from jaxbayes.jobs._config import positive as positive
from jaxbayes.jobs._config import required as required
from jaxbayes.jobs._config import validate as validate
from jaxbayes.jobs._data import JobData as JobData
from jaxbayes.jobs._data import open_job_data as open_job_data
from jaxbayes.jobs._kind import JobContext as JobContext
from jaxbayes.jobs._kind import JobKind as JobKind
from jaxbayes.jobs._kind import count_steps as count_steps
from jaxbayes.jobs._loader import HostBatches as HostBatches
from jaxbayes.jobs._runner import plan_lines as plan_lines
from jaxbayes.jobs._runner import run_job as run_job
from jaxbayes.jobs._runner import run_job_file as run_job_file
from jaxbayes.jobs._sources import open_source as open_source
from jaxbayes.jobs.kinds import job_kinds as job_kinds
from jaxbayes.jobs.kinds import register_job_kind as register_job_kind

__all__ = [
    "Field",
    "HostBatches",
    "JobConfigError",
    "JobContext",
    "JobData",
    "JobKind",
    "JobSpec",
    "apply_overrides",
    "count_steps",
    "job_kinds",
    "load_job",
    "non_negative",
    "one_of",
    "open_job_data",
    "open_source",
    "plan_lines",
    "positive",
    "register_job_kind",
    "required",
    "run_job",
    "run_job_file",
    "validate",
]
