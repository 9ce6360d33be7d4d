"""Where the page used to answer a bare 500: each attack now gets its 4xx (or 507) with the reason.

A full disk is an ENOSPC injected at the file layer (the temporary file a sidecar write makes),
and a real 1 MiB tmpfs filled to the last byte where this machine lets a test mount one.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from fieldlens_core.atomic import TEMP_SUFFIX
from fieldlens_labelling.app import MAX_JSON_DEPTH
from fieldlens_labelling.index import LabelIndex
from tests.field_data.fieldlens_labelling.test_app import BASE, TOKEN, desk_client, make_client, write
from tests.field_data.fieldlens_labelling.test_thumbnails import EPS, jpeg_claiming, png_claiming
from tests.helpers.images import solid_jpeg
from tests.helpers.labelling import keep_predicted
from tests.helpers.small_disk import fill, small_disk

JSON = {"Content-Type": "application/json"}


def signed_in(root: Path, cache: Path) -> TestClient:
    client = make_client(root, cache)
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    return client


@pytest.fixture
def field(tmp_path: Path) -> tuple[Path, list[str]]:
    return tmp_path / "field", keep_predicted(tmp_path / "field", [("hen", 0.9), ("egg", 0.4), ("fox", 0.7)])


@pytest.fixture
def client(field: tuple[Path, list[str]], tmp_path: Path) -> TestClient:
    return signed_in(field[0], tmp_path / "cache")


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (EPS, 415, "not a JPEG"),  # Pillow would have started Ghostscript
        (png_claiming(14_000, 14_000), 415, "not a JPEG"),  # was DecompressionBombError: a bare 500
        (jpeg_claiming(14_000, 14_000), 422, "pixels a device image may have"),  # was a bare 500 too
        (jpeg_claiming(8_000, 6_000), 422, "8000x6000 pixels"),
        (solid_jpeg((1, 2, 3), (400, 300))[:200], 422, "cannot be read"),
    ],
    ids=["eps-named-jpg", "png-196-mpx", "jpeg-196-mpx", "jpeg-48-mpx", "truncated-jpeg"],
)
def test_a_thumbnail_the_page_will_not_make_is_a_4xx_with_the_reason(
    client: TestClient, field: tuple[Path, list[str]], body: bytes, status: int, says: str
) -> None:
    image_id = field[1][0]
    next(field[0].rglob(f"{image_id}.jpg")).write_bytes(body)
    refused = client.get(f"/api/thumbnails/{image_id}")
    assert refused.status_code == status and says in refused.json()["error"]
    assert refused.headers["x-content-type-options"] == "nosniff"  # the Guard's headers, as on every answer
    assert client.get(f"/api/thumbnails/{field[1][1]}").status_code == 200  # and the page goes on


def test_the_image_itself_is_sent_only_as_a_device_wrote_it(
    client: TestClient, field: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """A `.jpg` link out of the directory served any file of the machine; a PNG went out as a JPEG."""
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    linked = next(field[0].rglob(f"{field[1][0]}.jpg"))
    linked.unlink()
    linked.symlink_to(secret)
    for route in ("images", "thumbnails"):
        refused = client.get(f"/api/{route}/{field[1][0]}")
        assert refused.status_code == 415 and "is a link" in refused.json()["error"], refused.text
        assert "root:x" not in refused.text
    next(field[0].rglob(f"{field[1][1]}.jpg")).write_bytes(png_claiming(20, 20))
    assert client.get(f"/api/images/{field[1][1]}").status_code == 415
    next(field[0].rglob(f"{field[1][2]}.jpg")).write_bytes(jpeg_claiming(14_000, 14_000))
    assert client.get(f"/api/images/{field[1][2]}").status_code == 422


def test_an_image_kept_after_the_last_listing_is_served(client: TestClient, field: tuple[Path, list[str]]) -> None:
    """A Label Studio task may ask for an image before anyone opened the page again."""
    assert client.get("/api/items").status_code == 200
    [later] = keep_predicted(field[0], [("owl", 0.5)])
    answer = client.get(f"/api/images/{later}")
    assert answer.status_code == 200 and answer.content[:2] == b"\xff\xd8"


def test_a_retrain_body_is_checked_and_starlettes_own_refusals_are_json(
    field: tuple[Path, list[str]], tmp_path: Path
) -> None:
    desk, _ = desk_client(field[0], tmp_path)
    for body in ("not json", "[" * 40 + "]" * 40, "[]"):
        refused = desk.post("/api/retrain", content=body, headers=JSON)
        assert refused.status_code == 400 and refused.json()["error"], body
    for method, path, status in (("GET", "/api/nosuch", 404), ("GET", "/api/retrain", 405)):
        answer = desk.request(method, path)
        assert answer.status_code == status and path in answer.json()["error"]


def test_an_image_removed_under_the_page_is_404(client: TestClient, field: tuple[Path, list[str]]) -> None:
    next(field[0].rglob(f"{field[1][0]}.jpg")).unlink()
    gone = client.get(f"/api/thumbnails/{field[1][0]}")
    assert gone.status_code == 404 and "no such file" in gone.json()["error"]


NESTED = [
    "[" * 60_000,  # under the 64 KiB a body may have; json.loads ended in RecursionError
    '{"items": ' + "[" * 30_000 + "]" * 30_000 + "}",
    '{"version": ' + '{"a": ' * 5_000 + "1" + "}" * 5_001,
]


@pytest.mark.parametrize("body", NESTED)
def test_deeply_nested_json_to_labels_and_install_is_a_400(
    field: tuple[Path, list[str]], tmp_path: Path, body: str
) -> None:
    desk, _ = desk_client(field[0], tmp_path)
    for path in ("/api/labels", "/api/install"):
        refused = desk.post(path, content=body, headers=JSON)
        assert refused.status_code == 400 and f"nests deeper than {MAX_JSON_DEPTH} levels" in refused.json()["error"]
    assert desk.get("/api/state").status_code == 200


def test_brackets_inside_strings_are_not_levels(client: TestClient, field: tuple[Path, list[str]]) -> None:
    """The depth is JSON's, not the bracket count: a label may say anything printable."""
    nested_enough = {"items": [{"id": field[1][0], "revision": 0}], "label": "hen", "note": [[[[1]]]]}
    assert write(client, nested_enough).status_code == 200
    escaped = '{"items": [{"id": "' + field[1][1] + '", "revision": 0}], "label": "[[[\\"[[[" }'
    answer = client.post("/api/labels", content=escaped, headers=JSON)
    assert answer.status_code == 200, answer.json()
    assert answer.json()["updated"][0]["label"] == '[[["[[['


class FullDisk:
    """ENOSPC for every temporary file written under ``root`` once ``room`` of them have been
    written: the file is created, as on a full disk, and nothing fits in it."""

    def __init__(self, root: Path, room: int = 0) -> None:
        self.root, self.room = root, room
        self.real_open = Path.open

    def open(self, path: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "w" in mode and path.name.endswith(TEMP_SUFFIX) and self.root in path.parents:
            if self.room == 0:
                self.real_open(path, mode).close()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            self.room -= 1
        return self.real_open(path, mode, *args, **kwargs)


def sidecars(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.rglob("*.json"))}


def test_a_label_write_on_a_full_disk_is_507_and_nothing_is_half_written(
    client: TestClient, field: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, ids = field
    before = sidecars(root)
    disk = FullDisk(root)
    monkeypatch.setattr(Path, "open", lambda path, *a, **k: disk.open(path, *a, **k))
    refused = write(client, {"items": [{"id": ids[0], "revision": 0}], "label": "hen"})
    assert refused.status_code == 507
    assert refused.json() == {
        "error": f"cannot write {ids[0]}'s label (No space left on device); it and any after it were not, "
        "nothing was labelled",
        "updated": [],
    }
    assert sidecars(root) == before and not list(root.rglob(f"*{TEMP_SUFFIX}"))
    monkeypatch.undo()  # room again: the same write, against the same revision, goes through
    assert write(client, {"items": [{"id": ids[0], "revision": 0}], "label": "hen"}).status_code == 200


def test_a_bulk_write_that_fills_the_disk_part_way_says_what_was_labelled(
    client: TestClient, field: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, ids = field
    disk = FullDisk(root, room=1)
    monkeypatch.setattr(Path, "open", lambda path, *a, **k: disk.open(path, *a, **k))
    items = [{"id": image_id, "revision": 0} for image_id in ids]
    refused = write(client, {"items": items, "label": "egg"})
    assert refused.status_code == 507 and "the 1 before it were labelled" in refused.json()["error"]
    assert [u["id"] for u in refused.json()["updated"]] == [ids[0]]
    monkeypatch.undo()
    labels = {i["id"]: (i["label"], i["revision"]) for i in client.get("/api/items?show=all").json()["items"]}
    assert labels == {ids[0]: ("egg", 1), ids[1]: (None, 0), ids[2]: (None, 0)}
    assert not list(root.rglob(f"*{TEMP_SUFFIX}"))


def test_on_a_really_full_tmpfs_a_label_write_is_507(tmp_path: Path) -> None:
    """The same on a real 1 MiB tmpfs filled to the last byte (root only; skipped where mounting is not allowed)."""
    with small_disk(tmp_path / "small-disk") as mount:
        ids = keep_predicted(mount / "field", [("hen", 0.9)])
        client = signed_in(mount / "field", tmp_path / "cache")
        assert client.get("/api/state").status_code == 200  # indexed, and the lock file made, while there is room
        write(client, {"items": [{"id": ids[0], "revision": 0}], "label": None})
        before = sidecars(mount / "field")
        fill(mount)
        refused = write(client, {"items": [{"id": ids[0], "revision": 1}], "label": "hen"})
        assert refused.status_code == 507 and "No space left on device" in refused.json()["error"]
        assert sidecars(mount / "field") == before and not list(mount.rglob(f"*{TEMP_SUFFIX}"))


def test_a_bug_is_a_500_that_says_so_in_json(
    field: tuple[Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(LabelIndex, "planned", broken)  # what /api/items asks for its order
    page = TestClient(make_client(field[0], tmp_path / "cache").app, base_url=BASE, raise_server_exceptions=False)
    page.headers["Authorization"] = f"Bearer {TOKEN}"
    answer = page.get("/api/items")
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal error (RuntimeError): the page's log has the traceback"}
