"""The manifest built in the bucket: one query over the sidecars, on DuckDB (reading moto's S3
server itself) and on Athena (moto's: it runs no SQL, so its results are seeded with the rows
DuckDB gave for the same query), equal to the one the mirror builds after downloading."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import duckdb
import pytest
from botocore.stub import Stubber

from fieldlens_cli.main import main
from fieldlens_fielddata.bucket_labels import BucketLabels, LabelRecord
from fieldlens_fielddata.destination import S3Destination
from fieldlens_fielddata.directory import new_image_id, s3_key
from fieldlens_fielddata.sidecar import Observation
from fieldlens_fielddata.store import FieldStore
from fieldlens_fielddata.uploader import Uploader
from fieldlens_retrain.dataset import Manifest, build_manifest, read_manifest
from fieldlens_retrain.sagemaker import SageMakerRetrain
from fieldlens_retrain.sidecar_query import (
    RESULT_COLUMNS,
    AthenaSidecars,
    DuckDBSidecars,
    FieldDataLocation,
    Row,
    S3Access,
    SidecarQueryError,
    build_bucket_manifest,
    httpfs_extension,
    localise,
    query_text,
)
from tests.helpers.images import solid_jpeg
from tests.helpers.s3_server import moto_s3

BUCKET = "fl-fleet"
URL = f"s3://{BUCKET}/field-data"
LOCATION = FieldDataLocation.parse(URL)
START = datetime(2026, 11, 20, 8, 0, 0, tzinfo=UTC)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    with moto_s3(monkeypatch, BUCKET) as (endpoint, s3):
        yield endpoint, s3


class Recording:
    """An engine that records the SQL it is given, then runs it on the real one."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.name, self.queries, self.rows = engine, engine.name, list[str](), list[Row]()

    def run(self, location: FieldDataLocation, sql: str) -> list[Row]:
        self.queries.append(sql)
        self.rows = self.engine.run(location, sql)
        return self.rows


def keep(root: Path, thing: str, n: int, colour: tuple[int, int, int], prediction: str, confidence: float) -> str:
    when = START + timedelta(minutes=n)
    image_id = new_image_id(when)
    FieldStore(root, thing).keep(
        image_id, when, solid_jpeg(colour), Observation(prediction=prediction, confidence=confidence)
    )
    return image_id


def label(s3: Any, thing: str, image_id: str, text: str | None, excluded: bool = False, named: str = "") -> None:
    key = BucketLabels(s3, URL).key_of(thing, image_id)
    record = LabelRecord(image_id=named or image_id, label=text, excluded=excluded, labeller="ana")
    s3.put_object(Bucket=BUCKET, Key=key, Body=record.model_dump_json().encode())


def fill_bucket(s3: Any, tmp_path: Path) -> dict[str, str]:
    """Two devices' pairs uploaded by the real uploader, labelled by label objects, with every case
    the mirror judges: copies of one photo (one agreeing, one conflicting), an excluded image, a
    device's forged label, a label object naming another image, an empty label, a sidecar without
    its image, a pair filed under another day, a sidecar that is not JSON, a pseudo candidate."""
    red, green, blue, grey = (200, 30, 30), (30, 200, 30), (30, 30, 200), (128, 128, 128)
    ids = {
        "a0": keep(tmp_path / "a", "coop-1", 0, red, "hen", 0.6),
        "a1": keep(tmp_path / "a", "coop-1", 1, green, "egg", 0.5),
        "a2": keep(tmp_path / "a", "coop-1", 2, blue, "fox", 0.7),
        "a3": keep(tmp_path / "a", "coop-1", 3, (200, 200, 30), "hen", 0.4),
        "a4": keep(tmp_path / "a", "coop-1", 4, (30, 200, 200), "egg", 0.3),
        "a5": keep(tmp_path / "a", "coop-1", 5, (90, 10, 160), "egg", 0.8),
        "a6": keep(tmp_path / "a", "coop-1", 6, grey, "hen", 0.97),  # pseudo at 0.9
        "a7": keep(tmp_path / "a", "coop-1", 7, (10, 90, 10), "egg", 0.2),
        "b0": keep(tmp_path / "b", "coop-2", 0, red, "hen", 0.9),  # the same photo as a0
        "b1": keep(tmp_path / "b", "coop-2", 1, green, "fox", 0.9),  # the same photo as a1
        "b2": keep(tmp_path / "b", "coop-2", 2, (250, 120, 10), "fox", 0.6),
        "b3": keep(tmp_path / "b", "coop-2", 3, (10, 120, 250), "hen", 0.6),
        "b4": keep(tmp_path / "b", "coop-2", 4, (160, 60, 90), "hen", 0.6),
    }
    for root, thing in ((tmp_path / "a", "coop-1"), (tmp_path / "b", "coop-2")):
        uploader = Uploader(root, S3Destination(s3, BUCKET), thing)
        assert uploader.drain().uploaded == len(list(root.rglob("*.json")))
        uploader.close()
    for name, text in (("a0", "hen"), ("b0", "hen"), ("a1", "egg"), ("b1", "fox"), ("a5", "egg")):
        label(s3, "coop-1" if name[0] == "a" else "coop-2", ids[name], text)
    for name, text in (("b2", "fox"), ("b3", "hen"), ("b4", "fox"), ("a7", "hen")):
        label(s3, "coop-2" if name[0] == "b" else "coop-1", ids[name], text)
    label(s3, "coop-1", ids["a2"], "fox", excluded=True)
    label(s3, "coop-1", ids["a4"], "egg", named=ids["a3"])  # names another image: not a label of a4
    label(s3, "coop-1", ids["a3"], "")
    forged = json.loads(
        s3.get_object(Bucket=BUCKET, Key=s3_key("field-data", "coop-1", START, ids["a0"], ".json"))["Body"].read()
    )
    sidecar_a3 = s3_key("field-data", "coop-1", START + timedelta(minutes=3), ids["a3"], ".json")
    s3.put_object(
        Bucket=BUCKET,
        Key=sidecar_a3,
        Body=json.dumps({**forged, "image_id": ids["a3"], "label": "fox", "label_source": "human"}),
    )
    orphan = new_image_id(START + timedelta(minutes=30))
    s3.put_object(
        Bucket=BUCKET,
        Key=s3_key("field-data", "coop-3", START, orphan, ".json"),
        Body=json.dumps({**forged, "image_id": orphan}),
    )
    label(s3, "coop-3", orphan, "hen")
    misfiled = new_image_id(START + timedelta(minutes=31))
    wrong_day = s3_key("field-data", "coop-2", START - timedelta(days=1), misfiled)
    s3.put_object(Bucket=BUCKET, Key=wrong_day, Body=solid_jpeg((1, 2, 3)))
    s3.put_object(Bucket=BUCKET, Key=wrong_day[:-4] + ".json", Body=json.dumps({**forged, "image_id": misfiled}))
    s3.put_object(
        Bucket=BUCKET,
        Key=f"labels/{wrong_day[:-4]}.json",
        Body=LabelRecord(image_id=misfiled, label="hen").model_dump_json(),
    )
    junk = new_image_id(START + timedelta(minutes=32))
    s3.put_object(Bucket=BUCKET, Key=s3_key("field-data", "coop-2", START, junk), Body=solid_jpeg((5, 5, 5)))
    s3.put_object(Bucket=BUCKET, Key=s3_key("field-data", "coop-2", START, junk, ".json"), Body=b"{not json")
    label(s3, "coop-2", junk, "hen")
    return ids


def comparable(manifest: Manifest, key_of: Any = str) -> Any:
    return (
        manifest.sha256,
        manifest.labels,
        [(key_of(e.key), e.sha256, e.label, e.split, e.source) for e in manifest.entries],
        [(sorted(key_of(k) for k in c.keys), c.sha256, c.labels) for c in manifest.conflicts],
        manifest.untrained_classes,
        manifest.dropped_classes,
    )


def mirrored(s3: Any, tmp_path: Path, pseudo: float | None, labels: dict[str, str]) -> tuple[Manifest, Any]:
    """What `dataset build --from s3://` builds today (download, then the directory's rules)."""
    cache = tmp_path / "mirror"
    root = BucketLabels(s3, URL).mirror(cache)
    manifest = build_manifest(root, labels, None, ["hen", "egg"], pseudo, val_percent=30)
    return manifest, lambda key: Path(key).relative_to(cache).as_posix()


def duckdb_engine(endpoint: str) -> DuckDBSidecars:
    return DuckDBSidecars(S3Access.from_boto("eu-west-1", endpoint))


@pytest.mark.parametrize("pseudo", [None, 0.9])
def test_duckdb_over_the_bucket_builds_the_mirrors_manifest_without_downloading_an_image(
    server: tuple[str, Any], tmp_path: Path, pseudo: float | None
) -> None:
    endpoint, s3 = server
    ids = fill_bucket(s3, tmp_path)
    calls: list[tuple[str, str]] = []
    s3.meta.events.register(
        "provide-client-params.s3", lambda model, params, **_: calls.append((model.name, params.get("Key", "")))
    )
    engine = Recording(duckdb_engine(endpoint))
    built = build_bucket_manifest(LOCATION, engine, s3, {}, None, ["hen", "egg"], pseudo, val_percent=30)

    assert engine.queries == [query_text(LOCATION, pseudo)]
    assert not [c for c in calls if c[0] != "HeadObject"]  # no GetObject: S3's checksums, not the bytes
    assert all(e.path == f"s3://{BUCKET}/{e.key}" for e in built.entries)
    expected, key_of = mirrored(s3, tmp_path, pseudo, {})
    assert comparable(built) == comparable(expected, key_of)
    keys = {e.key for e in built.entries} | {k for c in built.conflicts for k in c.keys}
    given = {"a0": "hen", "a1": "egg", "a5": "egg", "a7": "hen", "b1": "fox", "b2": "fox", "b3": "hen", "b4": "fox"}
    given |= {"a6": "hen"} if pseudo else {}  # b0 is a0's copy; the rest have no trusted label
    conflicting = {"a1", "b1"}
    wanted = {n for n, text in given.items() if n in conflicting or text not in built.untrained_classes}
    assert {k.rsplit("/", 1)[1][:-4] for k in keys} == {ids[n] for n in wanted}
    assert [c.labels for c in built.conflicts] == [["egg", "fox"]]
    assert ("pseudo" in {e.source for e in built.entries}) == (pseudo is not None)


def test_a_labels_file_wins_over_the_label_objects_as_against_the_mirror(
    server: tuple[str, Any], tmp_path: Path
) -> None:
    endpoint, s3 = server
    ids = fill_bucket(s3, tmp_path)
    labels = {f"coop-1/{ids['a3']}": "fox", f"coop-2/{ids['b4']}": "hen", ids["a4"]: "egg"}
    engine = Recording(duckdb_engine(endpoint))
    built = build_bucket_manifest(LOCATION, engine, s3, labels, None, ["hen", "egg"], None, val_percent=30)
    assert engine.queries == [query_text(LOCATION, None, everything=True)]
    expected, key_of = mirrored(s3, tmp_path, None, labels)
    assert comparable(built) == comparable(expected, key_of)
    assert {e.label for e in built.entries if ids["a3"] in e.key or ids["b4"] in e.key} == {"fox", "hen"}


def test_the_extension_is_the_wheels_and_nothing_is_ever_downloaded(server: tuple[str, Any]) -> None:
    endpoint, _ = server
    connection = duckdb_engine(endpoint).connect()
    try:
        path = connection.execute(
            "SELECT loaded, install_path FROM duckdb_extensions() WHERE extension_name = 'httpfs'"
        ).fetchone()
        assert path is not None and path[0] is True
        assert "duckdb_ext" in str(httpfs_extension()) and httpfs_extension().is_file()
        assert connection.execute("SELECT current_setting('autoinstall_known_extensions')").fetchone() == (False,)
        assert connection.execute("SELECT current_setting('autoload_known_extensions')").fetchone() == (False,)
        extension_dir = Path(connection.execute("SELECT current_setting('extension_directory')").fetchone()[0])
        with pytest.raises(duckdb.Error):  # an install would have to download: the repository is a closed port
            connection.execute("INSTALL spatial")
        assert not any(extension_dir.rglob("*.duckdb_extension"))  # nothing installed, from anywhere
        with pytest.raises(duckdb.Error):  # and the query cannot turn it back on
            connection.execute("SET autoinstall_known_extensions = true")
    finally:
        connection.close()


def moto_api(endpoint: str, path: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"{endpoint}/moto-api/{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=10).read()


def seed_athena(endpoint: str, ddl_statements: int, rows: list[Row]) -> None:
    """moto's Athena runs no SQL: each query started takes the next of the results it is given (the
    DDL's empty, then the SELECT's: a header row, then ``rows``), and no execution is done at its
    first poll (moto's manual progression)."""
    cells = [{"Data": [{"VarCharValue": name} for name in RESULT_COLUMNS]}]
    cells += [{"Data": [{} if value is None else {"VarCharValue": value} for value in row]} for row in rows]
    selected: dict[str, Any] = {"rows": cells, "column_info": [{"Name": n, "Type": "varchar"} for n in RESULT_COLUMNS]}
    results: list[dict[str, Any]] = [{"rows": [], "column_info": []}] * ddl_statements + [selected]
    moto_api(
        endpoint,
        "static/athena/query-results",
        {"account_id": "123456789012", "region": "eu-west-1", "results": results},
    )
    transition = {"progression": "manual", "times": 1}
    moto_api(endpoint, "state-manager/set-transition", {"model_name": "athena::execution", "transition": transition})


def test_athena_is_sent_the_same_query_and_its_result_pages_build_the_same_manifest(
    server: tuple[str, Any], tmp_path: Path
) -> None:
    endpoint, s3 = server
    fill_bucket(s3, tmp_path)
    duck = Recording(duckdb_engine(endpoint))
    from_duckdb = build_bucket_manifest(LOCATION, duck, s3, {}, None, ["hen", "egg"], 0.9, val_percent=30)
    seed_athena(endpoint, 5, duck.rows)  # DuckDB's rows stand in for Athena running the same query
    athena: Any = boto3.client("athena", endpoint_url=endpoint, region_name="eu-west-1")
    calls: list[tuple[str, dict[str, Any]]] = []
    athena.meta.events.register(
        "provide-client-params.athena", lambda model, params, **_: calls.append((model.name, params))
    )
    sleeps: list[float] = []
    engine = Recording(AthenaSidecars(athena, s3, database="fieldlens_test", workgroup="primary", sleep=sleeps.append))
    from_athena = build_bucket_manifest(LOCATION, engine, s3, {}, None, ["hen", "egg"], 0.9, val_percent=30)

    assert engine.queries == duck.queries == [query_text(LOCATION, 0.9)]
    started = [params for name, params in calls if name == "StartQueryExecution"]
    assert started[-1]["QueryString"] == duck.queries[0]
    assert [p["QueryString"].split(" (")[0].split(" SET")[0] for p in started[:-1]] == [
        "CREATE DATABASE IF NOT EXISTS fieldlens_test",
        "CREATE EXTERNAL TABLE IF NOT EXISTS fieldlens_sidecars",
        "ALTER TABLE fieldlens_sidecars",
        "CREATE EXTERNAL TABLE IF NOT EXISTS fieldlens_labels",
        "ALTER TABLE fieldlens_labels",
    ]
    output = f"s3://{BUCKET}/fieldlens/athena/results/"
    assert all(p["WorkGroup"] == "primary" and p["ResultConfiguration"]["OutputLocation"] == output for p in started)
    assert started[-1]["QueryExecutionContext"] == {"Database": "fieldlens_test"}
    polled = [p["QueryExecutionId"] for name, p in calls if name == "GetQueryExecution"]
    results = [p["QueryExecutionId"] for name, p in calls if name == "GetQueryResults"]
    assert sleeps and len(polled) == len(started) + len(sleeps)  # polled until done, a sleep after each not done
    assert len(set(polled)) == len(started)  # each execution waited for
    assert results == polled[-1:]  # the SELECT's rows read, nothing else's
    assert comparable(from_athena) == comparable(from_duckdb)
    symlinks = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="fieldlens/athena/")["Contents"]]
    listed = s3.get_object(Bucket=BUCKET, Key=next(k for k in symlinks if "/fieldlens_sidecars/" in k))["Body"].read()
    assert listed and all(line.endswith(".json") for line in listed.decode().split())  # Athena never reads an image


def test_athena_is_polled_until_done_and_a_failure_says_why() -> None:
    athena: Any = boto3.client("athena", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    s3: Any = boto3.client("s3", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    sleeps: list[float] = []
    engine = AthenaSidecars(athena, s3, sleep=sleeps.append, poll_s=2.0)
    with Stubber(athena) as stub:
        stub.add_response("start_query_execution", {"QueryExecutionId": "q1"})
        for state in ("QUEUED", "RUNNING", "FAILED"):
            status = {"State": state, **({"StateChangeReason": "Table not found"} if state == "FAILED" else {})}
            stub.add_response("get_query_execution", {"QueryExecution": {"QueryExecutionId": "q1", "Status": status}})
        with pytest.raises(SidecarQueryError, match="q1 FAILED: Table not found"):
            engine._execute("SELECT 1", LOCATION)
    assert sleeps == [2.0, 2.0]


def test_a_manifest_in_s3_is_localised_for_a_local_retrain_and_checked(server: tuple[str, Any], tmp_path: Path) -> None:
    endpoint, s3 = server
    fill_bucket(s3, tmp_path)
    built = build_bucket_manifest(LOCATION, duckdb_engine(endpoint), s3, {}, None, None, val_percent=30)
    local = localise(built, s3, tmp_path / "images")
    assert local.digest() == built.sha256 and all(Path(e.path).is_file() for e in local.entries)
    first = built.entries[0]
    s3.put_object(Bucket=BUCKET, Key=first.key, Body=b"not the same photo")
    with pytest.raises(SidecarQueryError, match="changed since"):
        localise(built, s3, tmp_path / "fresh")


def test_the_command_builds_in_the_bucket_and_says_what_it_needs(
    server: tuple[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint, s3 = server
    fill_bucket(s3, tmp_path)
    out = tmp_path / "dataset.json"
    build = ["dataset", "build", "--from", URL, "--out", str(out), "--val-percent", "30", "--model", str(tmp_path)]
    build += ["--endpoint-url", endpoint, "--region", "eu-west-1", "--cache", str(tmp_path / "cache")]
    assert main([*build, "--engine", "duckdb"]) == 0
    manifest = read_manifest(out)
    assert manifest.entries and all(e.path.startswith(f"s3://{BUCKET}/field-data/") for e in manifest.entries)
    assert not (tmp_path / "cache" / "s3").exists()  # nothing mirrored
    assert "no image was downloaded" in capsys.readouterr().out
    assert main([*build, "--engine", "duckdb", "--from", str(tmp_path)]) == 2
    assert "--from s3://BUCKET/PREFIX" in capsys.readouterr().err


def test_the_gate_after_a_sagemaker_job_downloads_only_the_holdout(server: tuple[str, Any], tmp_path: Path) -> None:
    endpoint, s3 = server
    fill_bucket(s3, tmp_path)
    built = build_bucket_manifest(LOCATION, duckdb_engine(endpoint), s3, {}, None, None, 0.9, val_percent=30)
    runner = SageMakerRetrain(s3, None, BUCKET, "arn:role", "eu-west-1", holdout_cache=tmp_path / "holdout")
    gated = runner.local_holdout(built)
    holdout = {e.sha256 for e in built.holdout()}
    assert holdout and gated.sha256 == built.sha256
    assert {e.sha256 for e in gated.entries if not e.path.startswith("s3://")} == holdout
    assert len(list((tmp_path / "holdout").iterdir())) == len(holdout)


def test_a_bucket_without_label_objects_is_queried_too(server: tuple[str, Any], tmp_path: Path) -> None:
    """No label object yet (read_json refuses a glob that matches nothing): pseudo labels only."""
    endpoint, s3 = server
    image_id = keep(tmp_path / "a", "coop-1", 0, (200, 30, 30), "hen", 0.95)
    uploader = Uploader(tmp_path / "a", S3Destination(s3, BUCKET), "coop-1")
    uploader.drain()
    uploader.close()
    built = build_bucket_manifest(LOCATION, duckdb_engine(endpoint), s3, {}, None, None, 0.9, val_percent=0)
    assert [(e.key.rsplit("/", 1)[1], e.label, e.source) for e in built.entries] == [
        (f"{image_id}.jpg", "hen", "pseudo")
    ]
