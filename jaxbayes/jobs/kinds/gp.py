"""Pod-job kinds of Gaussian and Student-t process regression on a user's table (``jaxbayes run``)."""

from __future__ import annotations

JOB_KINDS: dict = {}
