"""How unsure a prediction is: the scores that the sampling strategies, the store's eviction order
and the labelling page's order all read, computed here and nowhere else.

A prediction is the ranked list the inference service returns (:class:`~fieldlens_core.messages.Prediction`,
most confident first), usually its top-k rather than every class: the probability outside the
top-k counts as one more bucket in the entropy, so a model spreading its mass over 990 other
classes does not look sure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cached_property

from fieldlens_core.messages import Prediction


class Uncertainty:
    """Scores of one ranked prediction; each of ``least_confidence``, ``margin`` and ``entropy`` is 0
    (sure) to 1 (unsure). An empty prediction is as unsure as can be."""

    def __init__(self, ranked: Sequence[Prediction]) -> None:
        self._ranked = ranked
        self.top = ranked[0].confidence if ranked else 0.0
        self.second = ranked[1].confidence if len(ranked) > 1 else 0.0

    @property
    def least_confidence(self) -> float:
        return 1.0 - self.top

    @property
    def gap(self) -> float:
        """Top-1 minus top-2 confidence: small when the model hesitates between two classes."""
        return self.top - self.second

    @property
    def margin(self) -> float:
        return 1.0 - self.gap

    @cached_property
    def entropy(self) -> float:
        """Normalised entropy over the top-k and the rest, by the log of the bucket count."""
        probabilities = [p.confidence for p in self._ranked if p.confidence > 0]
        rest = 1.0 - sum(probabilities)
        if rest > 1e-6:
            probabilities.append(rest)
        if len(probabilities) < 2:
            return 0.0
        return -sum(p * math.log(p) for p in probabilities) / math.log(len(probabilities))

    def scores(self) -> dict[str, float]:
        """The three scores and their mean (``uncertain``), as the labelling page orders by them."""
        scores = {"least_confidence": self.least_confidence, "margin": self.margin, "entropy": self.entropy}
        scores["uncertain"] = sum(scores.values()) / 3
        return scores
