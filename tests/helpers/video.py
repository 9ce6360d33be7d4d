"""Scripted "videos" for continuous mode: objects in view one after another, odd frames, blank gaps.

A script is the true label of each frame. :func:`write_video` turns it into a folder of frames
(each label a solid colour, name order = frame order) that the folder camera plays, and
:class:`ColourModel` is the inference service for them: it reads a frame's colour back and
answers that label with ``confidence``, the rest spread over the other labels.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from fieldlens_core.inference.client import InferenceResult
from fieldlens_core.messages import ModelInfo, Prediction
from tests.helpers.images import solid_jpeg

BLANK = "blank"
COLOURS = {BLANK: (128, 128, 128), "hen": (200, 40, 40), "egg": (40, 200, 40), "fox": (40, 40, 200)}


@dataclass(frozen=True)
class Video:
    frames: list[str]  # the true label of each frame
    objects: list[tuple[str, int, int]]  # (label, first frame, last frame) of each object in view


def script(objects: list[str], frames_each: int = 30, gap: int = 10, odd_every: int = 10) -> Video:
    """``gap`` blank frames, then each object for ``frames_each`` frames with every ``odd_every``-th
    frame (from the 5th on) showing another object, then a blank gap after each."""
    frames = [BLANK] * gap
    spans = []
    for n, label in enumerate(objects):
        other = objects[(n + 1) % len(objects)]
        spans.append((label, len(frames), len(frames) + frames_each - 1))
        frames += [other if i % odd_every == 4 else label for i in range(frames_each)]
        frames += [BLANK] * gap
    return Video(frames, spans)


def predictions(label: str, confidence: float = 0.85) -> list[Prediction]:
    others = [name for name in COLOURS if name != label]
    rest = (1 - confidence) / len(others)
    return [Prediction(label=label, confidence=confidence)] + [
        Prediction(label=name, confidence=rest) for name in others
    ]


def write_video(folder: Path, frames: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, label in enumerate(frames):
        (folder / f"{index:05d}.jpg").write_bytes(solid_jpeg(COLOURS[label], (64, 48)))
    return folder


class ColourModel:
    """An inference service for scripted videos (the Inference protocol of the classifier)."""

    MODEL = ModelInfo(name="colours", version="1.0.0", sha256="0" * 64)

    def __init__(self, confidence: float = 0.85) -> None:
        self.confidence = confidence
        self.calls = 0
        self._counting = threading.Lock()  # continuous mode classifies several frames at once

    def label_of(self, jpeg: bytes) -> str:
        with Image.open(io.BytesIO(jpeg)) as image:
            pixel = image.convert("RGB").getpixel((image.width // 2, image.height // 2))
        assert isinstance(pixel, tuple)
        return min(COLOURS, key=lambda name: sum((a - b) ** 2 for a, b in zip(COLOURS[name], pixel, strict=False)))

    def classify(self, body: bytes, content_type: str = "image/jpeg", top_k: int = 5) -> InferenceResult:
        with self._counting:
            self.calls += 1
        return InferenceResult(predictions=predictions(self.label_of(body), self.confidence)[:top_k], model=self.MODEL)
