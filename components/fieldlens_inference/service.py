"""Answers one protocol request: checks it, then LoadedModel.classify on the lanes (lanes.py).

Kept apart from the socket server so that its behaviour is tested without a socket.
"""

from __future__ import annotations

import logging
from typing import Any

from fieldlens_core.inference.protocol import CONTENT_TYPES, WireCode
from fieldlens_core.model import BadImageError
from fieldlens_core.model_package import OPERATING_POINT
from fieldlens_inference.lanes import LaneRunner
from fieldlens_inference.model_manager import ModelManager

log = logging.getLogger(__name__)

MAX_TOP_K = 100


def failure(code: WireCode, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


class InferenceService:
    def __init__(self, manager: ModelManager, service_names: set[str], runner: LaneRunner | None = None) -> None:
        self._manager = manager
        self._services = service_names
        self._runner = runner or LaneRunner()

    def handle(self, header: dict[str, Any], body: bytes) -> dict[str, Any]:
        op = header.get("op")
        model = self._manager.current  # this request's model, whatever reloads meanwhile
        if model is None:
            return failure(WireCode.NO_MODEL, "no model is loaded")
        if op == "ping":
            return {
                "ok": True,
                "model": model.info,
                "variant": model.package.variant,
                "variant_reason": model.choice,
                "services": sorted(self._services),
                "operating_point": model.package.card.metrics.get(OPERATING_POINT),  # the classifier's defaults
            }
        if op != "classify":
            return failure(WireCode.UNKNOWN_OP, f"unknown op {op!r}; expected classify or ping")
        service = header.get("service")
        if service not in self._services:
            return failure(
                WireCode.UNKNOWN_SERVICE, f"service {service!r} is not served here ({sorted(self._services)})"
            )
        content_type = header.get("content_type", "image/jpeg")
        if content_type not in CONTENT_TYPES:
            return failure(
                WireCode.UNSUPPORTED_CONTENT_TYPE, f"content_type {content_type!r}; expected one of {CONTENT_TYPES}"
            )
        k = header.get("top_k", 5)
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_TOP_K:
            return failure(WireCode.BAD_FRAME, f"top_k must be an integer from 1 to {MAX_TOP_K}")

        try:
            result = self._runner.classify(model, body, k, content_type)
        except BadImageError as exc:
            return failure(WireCode.BAD_IMAGE, str(exc))
        # the socket's JSON, the one conversion (by hand: model_dump costs several times more, per request)
        predictions = [{"label": p.label, "confidence": p.confidence} for p in result.predictions]
        return {"ok": True, "predictions": predictions, "model": model.info, "timing_ms": result.timing_ms}
