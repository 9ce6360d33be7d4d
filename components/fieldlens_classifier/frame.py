"""A classified frame: the image, what the model said of it, when it was taken, and for whom.

A request's frame and a continuous-mode frame travel the same way (the sampling policy decides
on it, the smoother reads its ranking, the keeper files it), so they are one value: what differs
is its context, a classify request (its id, whether it asked to ``save``) or the event in view (and
the role the frame is kept in for that event). The policy and the smoother read its ranked
predictions as they came from the inference service (one type from the model to the wire).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from fieldlens_core.camera import Frame
from fieldlens_core.inference.client import InferenceResult
from fieldlens_core.messages import ModelInfo, Prediction

EventRole = Literal["best", "boundary"]


@dataclass(frozen=True)
class RequestContext:
    """A frame captured for a classify request; ``save``: the request asked that it be kept."""

    request_id: str
    save: bool = False


@dataclass(frozen=True)
class EventContext:
    """A continuous-mode frame: the event in view when it was taken (None: nothing was), and, for a
    frame kept for an event, its role there and the reason its sidecar gives instead of the policy's."""

    event_id: str | None = None
    role: EventRole | None = None
    reason: str | None = None

    @property
    def save(self) -> bool:
        """An event's own frame (its best, or where the model hesitated) is kept within the save caps."""
        return self.role is not None


@dataclass(frozen=True)
class ClassifiedFrame:
    frame: Frame
    result: InferenceResult
    captured: datetime  # wall clock, UTC: the image id, the sidecar's and the messages' timestamps
    context: RequestContext | EventContext

    @property
    def predictions(self) -> list[Prediction]:
        return self.result.predictions

    @property
    def model(self) -> ModelInfo:
        return self.result.model
