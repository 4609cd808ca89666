"""What libraries may say into the pipeline's progress display."""

from __future__ import annotations

import logging


def quiet_library_logs() -> None:
    """Silence what libraries announce at INFO into the step-by-step progress display:
    PyMC's "Sampling: [...]" line for every prior and posterior predictive draw.

    The CLI calls it, and so does every worker of a concurrent run
    (:func:`analysis.pipeline._worker_init`): a fork server's children do not inherit
    what the CLI set in its own process, and the lines came back with ``--jobs 2``."""
    logging.getLogger("pymc.sampling.forward").setLevel(logging.WARNING)
