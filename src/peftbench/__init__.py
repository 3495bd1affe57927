"""peftbench: benchmark parameter-efficient fine-tuning methods uniformly.

The library's entry points (peftbench.api): `run` a suite, read `results`, `load` a trained run to predict."""

__version__ = "0.1.0"

from peftbench.api import Predictor, RunSummary, load, results, run  # noqa: E402

__all__ = ["Predictor", "RunSummary", "load", "results", "run"]
