"""Which field images are worth keeping: strategies (one per file), per-class quotas and rate caps.

A strategy looks at one prediction and says whether it wants the image and why; the policy
(:mod:`.policy`) asks its strategies in order, then applies the per-class quota and the
minute/hour/day caps. Strategies (the v1 ML Feedback connector's and the seed's):

==================  =========================================================
``always``          every image
``random``          each image with probability ``rate``
``least_confidence`` top-1 confidence below ``threshold``
``margin``          top-1 minus top-2 below ``threshold``
``entropy``         normalised entropy of the prediction above ``threshold``
``confidence_band`` top-1 below ``low`` or above ``high`` (the seed: 0.6 / 0.9)
==================  =========================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

Scores = Sequence[tuple[str, float]]
"""A prediction as (label, confidence) pairs, most confident first."""


class Sampler(Protocol):
    def wants(self, scores: Scores) -> str | None:
        """The reason to keep this image, or None."""
