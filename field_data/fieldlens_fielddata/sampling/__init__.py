"""Which field images are worth keeping: strategies (one per file), per-class quotas and rate caps.

A strategy looks at one prediction's :class:`~fieldlens_core.uncertainty.Uncertainty` and says
whether it wants the image and why; the policy (:mod:`.policy`) asks its strategies in order,
then applies the per-class quota and the minute/hour/day caps. Each strategy's file holds its
configuration (a ``type`` and its thresholds) and its sampler, which the configuration builds
(``config.sampler(rng)``); :mod:`.config` lists the configurations a policy accepts.
"""

from __future__ import annotations

from typing import Protocol

from fieldlens_core.uncertainty import Uncertainty


class Sampler(Protocol):
    def wants(self, prediction: Uncertainty) -> str | None:
        """The reason to keep this image, or None."""
