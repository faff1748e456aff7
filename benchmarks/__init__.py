"""jaxbayes benchmark suite: one ``bench_<pillar>.py`` per pillar, run by ``jaxbayes bench``."""
