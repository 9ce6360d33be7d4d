from __future__ import annotations

import json

import pytest

from fieldlens_fielddata.sidecar import SCHEMA_VERSION, Sidecar, SidecarError

V1 = {  # what the first devices wrote: no schema_version, no saved
    "request_id": "r1",
    "timestamp": "2026-11-20T08:00:00.000Z",
    "prediction": "hen",
    "confidence": 0.8,
    "predictions": [{"label": "hen", "confidence": 0.8}],
    "model": {"name": "m", "version": "1.0.0", "sha256": "ab"},
    "capture": {"source": "folder"},
    "reason": "request: save",
    "image_id": "20261120T080000000Z-aaaa",
    "s3_key": "field-data/coop-1/2026/11/20/20261120T080000000Z-aaaa.jpg",
    "thing": "coop-1",
    "score": 0.3,
}


def test_a_version_1_sidecar_reads_as_the_current_version() -> None:
    sidecar = Sidecar.decode(json.dumps(V1).encode(), "v1.json")
    assert sidecar.schema_version == SCHEMA_VERSION
    assert sidecar.saved is True  # version 1 said so through its reason
    assert Sidecar.decode(json.dumps({**V1, "reason": "least confidence"}).encode(), "x").saved is False


def test_fields_a_newer_writer_added_survive_a_rewrite() -> None:
    sidecar = Sidecar.decode(json.dumps({**V1, "schema_version": 2, "event_id": "e-7"}).encode(), "x")
    assert json.loads(sidecar.model_copy(update={"label": "hen"}).encode())["event_id"] == "e-7"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "is not JSON"),
        (b"[1, 2]", "document"),
        (json.dumps({**V1, "confidence": "high"}).encode(), "confidence"),
        (json.dumps({k: v for k, v in V1.items() if k != "s3_key"}).encode(), "s3_key"),
        (json.dumps({**V1, "schema_version": SCHEMA_VERSION + 1}).encode(), "newer than this fieldlens"),
    ],
)
def test_what_is_not_a_sidecar_says_why(body: bytes, reason: str) -> None:
    with pytest.raises(SidecarError, match=reason):
        Sidecar.decode(body, "bad.json")


def test_only_labels_the_labelling_step_wrote_are_trusted() -> None:
    assert Sidecar.model_validate({**V1, "label": "fox"}).trusted_label is None  # a device wrote it
    assert Sidecar.model_validate({**V1, "label": "fox", "label_source": "device"}).trusted_label is None
    assert Sidecar.model_validate({**V1, "label": "fox", "label_source": "human"}).trusted_label == "fox"
