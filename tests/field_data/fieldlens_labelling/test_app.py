"""The labelling page's HTTP API through Starlette's test client (the browser tests drive the page itself)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from fieldlens_labelling.app import Settings, create_app
from fieldlens_labelling.index import LabelIndex
from fieldlens_labelling.models import DeskPaths, ModelDesk
from fieldlens_labelling.security import Credentials
from fieldlens_labelling.thumbnails import Thumbnails
from tests.helpers.labelling import LABELS, import_csv, keep_predicted

TOKEN = "s3cret-token"
BASE = "http://127.0.0.1:8080"


def make_client(root: Path, cache: Path) -> TestClient:
    settings = Settings(
        labels=list(LABELS),
        blank_label="blank",
        labeller="ana",
        model={"name": "m", "version": "1.0.0"},
        token=TOKEN,
        host="127.0.0.1",
        port=8080,
    )
    return TestClient(create_app(LabelIndex.load(root), settings, Thumbnails(cache)), base_url=BASE)


@pytest.fixture
def field(tmp_path: Path) -> tuple[Path, list[str]]:
    ids = keep_predicted(tmp_path / "field", [("hen", 0.95), ("egg", 0.40), ("fox", 0.70), ("hen", 0.55)])
    return tmp_path / "field", ids


@pytest.fixture
def client(field: tuple[Path, list[str]], tmp_path: Path) -> TestClient:
    client = make_client(field[0], tmp_path / "cache")
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    return client


def write(client: TestClient, body: Any, **headers: str) -> Any:
    return client.post("/api/labels", content=json.dumps(body), headers={"Content-Type": "application/json", **headers})


def item(client: TestClient, image_id: str) -> dict[str, Any]:
    items = client.get("/api/items?show=all").json()["items"]
    found: dict[str, Any] = next(i for i in items if i["id"] == image_id)
    return found


def test_the_printed_url_signs_in_and_nothing_works_without_it(field: tuple[Path, list[str]], tmp_path: Path) -> None:
    client = make_client(field[0], tmp_path / "cache")
    assert client.get("/api/state").status_code == 401
    assert client.get("/").status_code == 401
    assert client.get("/?token=guess", follow_redirects=False).status_code == 401
    signed_in = client.get(f"/?token={TOKEN}", follow_redirects=False)
    assert signed_in.status_code == 200 and "<title>fieldlens" in signed_in.text  # the page, with its session key
    cookie = signed_in.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    key = Credentials(TOKEN, 8080).session_key  # test_security.py: what the cookie and the key each do
    assert client.get("/api/state", headers={"X-Fieldlens-Session": key}).status_code == 200
    assert "<title>fieldlens" in client.get("/").text


def test_a_foreign_host_header_is_refused(client: TestClient) -> None:
    """A DNS-rebinding page reaches 127.0.0.1 under its own name."""
    response = client.get("/api/state", headers={"Host": "evil.example:8080"})
    assert response.status_code == 400 and "Host" in response.json()["error"]


def test_orders_put_what_is_done_last(client: TestClient, field: tuple[Path, list[str]]) -> None:
    ids = field[1]
    uncertain = [i["id"] for i in client.get("/api/items?order=uncertain").json()["items"]]
    assert uncertain == [ids[1], ids[3], ids[2], ids[0]]  # confidences 0.40, 0.55, 0.70, 0.95
    random = [i["id"] for i in client.get("/api/items?order=random").json()["items"]]
    assert [i["id"] for i in client.get("/api/items").json()["items"]] == random  # no label has judged the model
    assert client.get("/api/state").json()["progress"]["useful"]["is"] == "random"
    assert [i["id"] for i in client.get("/api/items?order=newest").json()["items"]] == ids[::-1]
    assert write(client, {"items": [{"id": ids[1], "revision": 0}], "label": "egg"}).status_code == 200
    assert [i["id"] for i in client.get("/api/items?order=uncertain").json()["items"]] == [ids[3], ids[2], ids[0]]
    everything = client.get("/api/items?show=all").json()["items"]
    assert everything[-1]["id"] == ids[1] and everything[-1]["label"] == "egg"  # done goes last


def test_a_label_goes_into_the_sidecar_with_who_and_when(client: TestClient, field: tuple[Path, list[str]]) -> None:
    root, ids = field
    response = write(client, {"items": [{"id": ids[0], "revision": 0}], "label": "hen"})
    assert response.status_code == 200 and response.json()["updated"][0]["revision"] == 1
    sidecar = json.loads(next(root.rglob(f"{ids[0]}.json")).read_text())
    assert (sidecar["label"], sidecar["label_source"], sidecar["labeller"]) == ("hen", "human", "ana")
    assert sidecar["labelled_at"].endswith("Z") and sidecar["prediction"] == "hen"  # what the device wrote stays
    progress = client.get("/api/state").json()["progress"]
    assert progress["labelled"] == 1 and progress["per_class"]["hen"] == 1 and progress["weakest"] in ("egg", "fox")


def test_a_second_tab_cannot_overwrite_a_newer_label(client: TestClient, field: tuple[Path, list[str]]) -> None:
    image_id = field[1][2]
    assert write(client, {"items": [{"id": image_id, "revision": 0}], "label": "fox"}).status_code == 200
    stale = write(client, {"items": [{"id": image_id, "revision": 0}], "label": "hen"})
    assert stale.status_code == 409
    assert (
        "changed since you loaded it" in stale.json()["error"]
        and stale.json()["conflicts"][0]["item"]["label"] == "fox"
    )
    assert item(client, image_id)["label"] == "fox"


def test_undo_is_a_write_back_to_what_was_there(client: TestClient, field: tuple[Path, list[str]]) -> None:
    image_id = field[1][0]
    write(client, {"items": [{"id": image_id, "revision": 0}], "label": "hen"})
    assert write(client, {"items": [{"id": image_id, "revision": 1}], "label": None}).status_code == 200
    assert item(client, image_id)["label"] is None and item(client, image_id)["revision"] == 2


def test_blank_unusable_and_bulk(client: TestClient, field: tuple[Path, list[str]]) -> None:
    a, b, c, d = field[1]
    assert write(client, {"items": [{"id": a, "revision": 0}], "label": "blank"}).status_code == 200
    assert write(client, {"items": [{"id": b, "revision": 0}], "label": None, "excluded": True}).status_code == 200
    bulk = write(client, {"items": [{"id": c, "revision": 0}, {"id": d, "revision": 0}], "label": "hen"})
    assert bulk.status_code == 200 and len(bulk.json()["updated"]) == 2
    states = {i["id"]: (i["label"], i["excluded"]) for i in client.get("/api/items?show=all").json()["items"]}
    assert states == {a: ("blank", False), b: (None, True), c: ("hen", False), d: ("hen", False)}
    assert client.get("/api/items").json()["total"] == 0


def test_a_new_class_name_is_accepted_and_offered_but_not_a_control_character(
    field: tuple[Path, list[str]], tmp_path: Path
) -> None:
    client = make_client(field[0], tmp_path / "c1")
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    assert write(client, {"items": [{"id": field[1][0], "revision": 0}], "label": "duck"}).status_code == 200
    assert "duck" in client.get("/api/state").json()["labels"]
    refused = write(client, {"items": [{"id": field[1][1], "revision": 0}], "label": "du\x00ck"})
    assert refused.status_code == 400 and "control character" in refused.json()["error"]


@pytest.mark.parametrize(
    ("body", "headers", "status", "says"),
    [
        ("{not json", {}, 400, "not JSON"),
        ("[]", {}, 400, "expected"),
        (json.dumps({"items": [{"id": "x"}], "label": "hen"}), {}, 400, "revision"),
        (json.dumps({"items": [{"id": "x", "revision": True}], "label": "hen"}), {}, 400, "revision"),
        (json.dumps({"items": [{"id": "x", "revision": 0}], "label": "\u0000"}), {}, 400, "control character"),
        (json.dumps({"items": [{"id": "x", "revision": 0}], "label": "h" * 201}), {}, 400, "characters long"),
        (json.dumps({"items": [], "label": "hen"}), {}, 400, "items per write"),
        (
            json.dumps({"items": [{"id": "x", "revision": 0}], "label": "hen"}),
            {"Origin": "http://evil.example"},
            403,
            "cross-site",
        ),
        (
            json.dumps({"items": [{"id": "x", "revision": 0}], "label": "hen"}),
            {"Content-Type": "text/plain"},
            415,
            "JSON",
        ),
        ("x" * 70_000, {}, 413, "at most"),
        (
            json.dumps({"items": [{"id": "../../../etc/passwd", "revision": 0}], "label": "hen"}),
            {},
            404,
            "no field image",
        ),
    ],
)
def test_hostile_writes_get_a_clear_4xx_and_the_server_goes_on(
    client: TestClient, body: str, headers: dict[str, str], status: int, says: str
) -> None:
    response = client.post("/api/labels", content=body, headers={"Content-Type": "application/json", **headers})
    assert response.status_code == status and says in response.json()["error"]
    assert client.get("/api/state").status_code == 200


@pytest.mark.parametrize("name", ["../../etc/passwd", "%2e%2e%2fsecret", "20261120T080000000Z-ffff", "x" * 300])
def test_only_field_images_are_served(client: TestClient, name: str) -> None:
    for route in ("images", "thumbnails"):
        response = client.get(f"/api/{route}/{name}")
        assert response.status_code == 404


def test_thumbnails_are_made_once_and_a_corrupt_image_is_a_clear_error(
    client: TestClient, field: tuple[Path, list[str]], tmp_path: Path
) -> None:
    a, b = field[1][:2]
    first = client.get(f"/api/thumbnails/{a}")
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1
    cached[0].write_bytes(b"\xff\xd8 stands for the cached copy")
    assert client.get(f"/api/thumbnails/{a}").content == b"\xff\xd8 stands for the cached copy"  # not made again
    next(field[0].rglob(f"{b}.jpg")).write_bytes(b"not a jpeg")
    broken = client.get(f"/api/thumbnails/{b}")
    assert broken.status_code == 415 and "not a JPEG" in broken.json()["error"]  # test_app_errors.py: the rest


def test_bad_query_parameters_are_400(client: TestClient) -> None:
    for query in ("order=loudest", "show=some", "limit=0", "limit=x", "offset=-1"):
        assert client.get(f"/api/items?{query}").status_code == 400


def desk_client(root: Path, tmp_path: Path) -> tuple[TestClient, ModelDesk]:
    settings = Settings(
        labels=[],
        blank_label="blank",
        labeller="ana",
        model=None,
        token=TOKEN,
        host="127.0.0.1",
        port=8080,
    )
    desk = ModelDesk(DeskPaths(root, tmp_path / "model", tmp_path / "models", tmp_path / "cache"))
    client = TestClient(create_app(LabelIndex.load(root), settings, Thumbnails(tmp_path / "t"), desk), base_url=BASE)
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    return client, desk


def test_the_desk_refuses_what_it_cannot_do(field: tuple[Path, list[str]], tmp_path: Path) -> None:
    client, desk = desk_client(field[0], tmp_path)
    expected: dict[str, Any] = {"current": None, "reports": [], "decisions": [], "retrain": desk.status.to_json()}
    assert client.get("/api/models").json() == expected
    refused = write_to(client, "/api/install", {"version": "1.0.0"})
    assert refused.status_code == 409 and "not a candidate that passed the gate" in refused.json()["error"]
    assert write_to(client, "/api/install", {"version": "../../etc"}).status_code == 409
    assert write_to(client, "/api/install", ["1.0.0"]).status_code == 400
    for path in ("/api/reports/../x/confusion-candidate.png", "/api/reports/1.0.0/report.json"):
        assert client.get(path).status_code == 404
    desk.status.state = "running"  # as while a retrain runs
    busy = write_to(client, "/api/retrain", {})
    assert busy.status_code == 409 and "running already" in busy.json()["error"]


def write_to(client: TestClient, path: str, body: Any) -> Any:
    return client.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})


def test_state_and_items_take_in_labels_label_import_wrote(client: TestClient, field: tuple[Path, list[str]]) -> None:
    root, ids = field
    assert client.get("/api/state").json()["progress"]["labelled"] == 0
    import_csv(root, {ids[0]: "hen", ids[1]: "fox"})  # under the running page
    progress = client.get("/api/state").json()["progress"]
    assert progress["labelled"] == 2 and progress["per_class"] == {"egg": 0, "fox": 1, "hen": 1}
    assert sorted(i["id"] for i in client.get("/api/items").json()["items"]) == sorted([ids[2], ids[3]])
    assert write(client, {"items": [{"id": ids[1], "revision": 1}], "label": "egg"}).status_code == 200
