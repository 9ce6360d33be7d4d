from __future__ import annotations

from pathlib import Path

import pytest

from fieldlens_inference.model_manager import ModelManager
from fieldlens_inference.service import InferenceService
from tests.helpers.images import solid_jpeg, solid_png


@pytest.fixture
def service(tiny_package: Path) -> InferenceService:
    manager = ModelManager(tiny_package)
    manager.load_initial()
    return InferenceService(manager, {"tiny"})


@pytest.mark.parametrize(("body", "label"), [(solid_jpeg((240, 10, 10)), "red"), (solid_png((10, 10, 240)), "blue")])
def test_classify(service: InferenceService, body: bytes, label: str) -> None:
    content_type = "image/png" if body.startswith(b"\x89PNG") else "image/jpeg"
    reply = service.handle({"op": "classify", "service": "tiny", "content_type": content_type, "top_k": 1}, body)
    assert reply["ok"] and [p["label"] for p in reply["predictions"]] == [label]
    assert reply["model"]["version"] == "1.0.0"


def test_ping_reports_the_model_and_services(service: InferenceService) -> None:
    reply = service.handle({"op": "ping"}, b"")
    assert reply["ok"] and reply["services"] == ["tiny"] and reply["model"]["name"] == "tiny-colour"
    assert reply["variant"] == "fp32" and reply["variant_reason"] == "auto: the package has no int8 graph"


@pytest.mark.parametrize(
    ("header", "body", "code"),
    [
        ({"op": "train"}, b"", "UNKNOWN_OP"),
        ({"op": "classify", "service": "other"}, b"", "UNKNOWN_SERVICE"),
        ({"op": "classify", "service": "tiny", "content_type": "text/plain"}, b"", "UNSUPPORTED_CONTENT_TYPE"),
        ({"op": "classify", "service": "tiny", "top_k": 0}, b"", "BAD_FRAME"),
        ({"op": "classify", "service": "tiny", "top_k": True}, b"", "BAD_FRAME"),
        ({"op": "classify", "service": "tiny"}, b"not an image", "BAD_IMAGE"),
    ],
)
def test_bad_requests_get_their_code(
    service: InferenceService, header: dict[str, object], body: bytes, code: str
) -> None:
    reply = service.handle(header, body)
    assert reply == {"ok": False, "error": {"code": code, "message": reply["error"]["message"]}}
    assert reply["error"]["message"]
