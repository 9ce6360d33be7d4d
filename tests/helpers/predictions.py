"""Ranked predictions written as (label, probability) pairs, most probable first."""

from __future__ import annotations

from fieldlens_core.messages import Prediction


def ranked(*pairs: tuple[str, float]) -> list[Prediction]:
    return [Prediction(label=label, confidence=confidence) for label, confidence in pairs]
