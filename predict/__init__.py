"""Weight-space prediction: model zoos and predictors of a network's accuracy from its weights.

* :mod:`predict.zoo` builds zoos of trained 8x8-digit classifiers (``python -m predict.zoo``).
* :mod:`predict.models` holds the GMN predictor and the DeepSets / DMC / StatNN baselines.
* :mod:`predict.train` trains them and writes the results table (``python -m predict.train``).
* :func:`load_predictor` returns a shipped GMN predictor: ``load_predictor("cnn")(module)``.
"""

from predict.shipped import AccuracyPredictor, UnreadableNetworkError, load_predictor

__all__ = ["AccuracyPredictor", "UnreadableNetworkError", "load_predictor"]
