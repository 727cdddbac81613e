"""What a run's clusters follow: nuisance (density, nucleus size, stain levels, plate position) and treatment
variables scored side by side against the clustering and the embedding (``phenossl report RUN``).

``variables`` computes each per-cell variable from the tile store, ``association`` scores it (AMI / eta^2, a
linear probe with whole wells held out), ``reading`` says the result in words, ``write`` writes the files and
``run`` ties them to a run folder. No Qt here.
"""

from phenossl.report.run import Report, run_report

__all__ = ["Report", "run_report"]
