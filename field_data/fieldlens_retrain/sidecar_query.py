"""A dataset manifest built where the field data is: one SQL query over the sidecars in the bucket.

``dataset build --from s3://`` with the mirror engine downloads every pair to one host. At fleet
scale the images stay where they are: one query over the sidecars and the label objects
(:mod:`fieldlens_fielddata.bucket_labels`) says which images are labelled and with what, S3's own
SHA-256 of each of those images (verified by S3 when the uploader put it) gives the content hash
the split and de-duplication need, and the manifest's entries point at ``s3://`` URIs.

The query (:func:`query_text`) reads two relations, ``fieldlens_sidecars`` and
``fieldlens_labels``, each with a ``"$path"`` column (the object's ``s3://`` URI: Athena's own
pseudo-column). The same text runs on:

- DuckDB (:class:`DuckDBSidecars`), embedded, reading ``s3://`` directly: the two relations are
  views over ``read_json`` of the globs, ``filename`` renamed ``"$path"``. Its httpfs extension
  is loaded from the ``duckdb-ext-httpfs`` wheel's file, never downloaded (autoinstall and
  autoload are off, the repository is unreachable by configuration);
- Athena (:class:`AthenaSidecars`), at fleet scale: the two relations are external tables of
  the same columns (OpenX JSON SerDe) whose data are symlink files listing exactly the JSON
  objects, so Athena never scans an image.

The query does the joining and the selection (labelled images, and pseudo-label candidates when
asked); :func:`bucket_images` applies the rest of the mirror's rules to its rows in Python,
identically for both engines, so the manifest equals the one the mirror builds (same entries,
labels and split; see the README for the few sidecars they judge differently).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import logging
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from pydantic import TypeAdapter, ValidationError

from fieldlens_core.atomic import atomic_write
from fieldlens_core.errors import ConfigurationError, FieldlensError, InvalidInputError
from fieldlens_core.model_package import sha256_file
from fieldlens_core.safe_paths import resolve_inside
from fieldlens_fielddata.bucket_labels import DEFAULT_LABELS_PREFIX
from fieldlens_fielddata.directory import date_path, image_key, image_time, s3_key
from fieldlens_fielddata.sidecar import SCHEMA_VERSION
from fieldlens_retrain.dataset import Found, Manifest, Source, base_images, manifest_of
from fieldlens_retrain.labels import match_label_keys

log = logging.getLogger(__name__)

SIDECARS = "fieldlens_sidecars"
LABELS = "fieldlens_labels"
SIDECAR_COLUMNS = ("image_id", "thing", "s3_key", "schema_version", "confidence", "prediction")
LABEL_COLUMNS = ("image_id", "label", "excluded")
RESULT_COLUMNS = (
    "thing",
    "image_id",
    "day",
    "schema_version",
    "confidence",
    "prediction",
    "label",
    "excluded",
)
MAX_LABEL = 100  # LabelRecord.label's max_length: a longer one makes the label object invalid
HTTPFS_DISTRIBUTION = "duckdb-ext-httpfs"
ATHENA_TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
_BOOL: TypeAdapter[bool] = TypeAdapter(bool)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX = re.compile(r"[A-Za-z0-9!_.*'()/-]*")  # S3's safe key characters: no quote, no regex trouble


class SidecarQueryError(FieldlensError, RuntimeError):
    """The query could not run (the engine's reason), or returned what it should not."""


@dataclass(frozen=True)
class FieldDataLocation:
    """``s3://bucket/prefix`` of the devices' pairs, and where the label objects are (bucket_labels)."""

    bucket: str
    prefix: str
    labels_prefix: str = DEFAULT_LABELS_PREFIX

    @classmethod
    def parse(cls, url: str, labels_prefix: str = DEFAULT_LABELS_PREFIX) -> FieldDataLocation:
        """InvalidInputError for anything the query could not quote safely (the names go into SQL text)."""
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        prefix, labels_prefix = prefix.strip("/"), labels_prefix.strip("/")
        if not url.startswith("s3://") or not _BUCKET.fullmatch(bucket):
            raise InvalidInputError(f"{url} is not s3://BUCKET/PREFIX", "Pass the field data's s3:// URL")
        for name in (prefix, labels_prefix):
            if not _PREFIX.fullmatch(name) or "//" in name:
                raise InvalidInputError(
                    f"the prefix {name!r} has characters the sidecar query does not take",
                    "Keep prefixes to letters, digits and !_.*'()/- (the stack's default is field-data)",
                )
        return cls(bucket, prefix, labels_prefix)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def sidecar_root(self) -> str:
        """``s3://bucket/prefix/``: every sidecar is ``<this><thing>/<yyyy>/<mm>/<dd>/<id>.json``."""
        return f"s3://{self.bucket}/{self.prefix + '/' if self.prefix else ''}"

    @property
    def labels_root(self) -> str:
        """``s3://bucket/<labels prefix>/``: a label object is this plus its sidecar's key."""
        return f"s3://{self.bucket}/{self.labels_prefix}/"

    @property
    def sidecar_glob(self) -> str:
        return f"{self.sidecar_root}*/*/*/*/*.json"

    @property
    def labels_glob(self) -> str:
        return f"{self.labels_root}{self.prefix + '/' if self.prefix else ''}*/*/*/*/*.json"


def _regex_literal(text: str) -> str:
    """``text`` matched literally by RE2 (DuckDB) and Java's regex (Athena): the validated names'
    only metacharacters escaped the way both read them."""
    return re.sub(r"([.*()])", r"\\\1", text)


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def query_text(location: FieldDataLocation, pseudo_threshold: float | None = None, everything: bool = False) -> str:
    """The one query both engines run: per sidecar filed where its id says (the thing and day from
    its key, never from its fields), the label object's label and excluded flag beside it, for the
    labelled ones (and the pseudo-label candidates with ``pseudo_threshold``; every pair with
    ``everything``, which a labels file needs to match its keys). Every column is text: the rows
    are judged in Python (:func:`bucket_images`), the same for both engines.

    Written in the SQL that DuckDB and Athena (Trino) both take: ``regexp_extract`` with a group
    (no match is '' in DuckDB and NULL in Trino: both fail ``<> ''``), ``substr``, ``TRY_CAST``,
    ``coalesce``, a LEFT JOIN.
    """
    root = location.sidecar_root
    pattern = "^" + _regex_literal(root) + r"([^/]+)/([0-9]{4})/([0-9]{2})/([0-9]{2})/([^/]+)\.json$"
    sidecar_from = len(f"s3://{location.bucket}/") + 1
    label_from = len(location.labels_root) + 1
    labelled = "(l.image_id = s.path_id AND coalesce(l.label, '') <> '')"
    if everything:
        selected = "1 = 1"
    elif pseudo_threshold is not None:
        selected = (
            f"{labelled} OR (coalesce(s.prediction, '') <> '' "
            f"AND TRY_CAST(s.confidence AS DOUBLE) >= {float(pseudo_threshold)!r})"
        )
    else:
        selected = labelled
    regex = _sql_string(pattern)
    return f"""SELECT
  s.path_thing AS thing,
  s.path_id AS image_id,
  s.path_day AS day,
  s.schema_version AS schema_version,
  s.confidence AS confidence,
  s.prediction AS prediction,
  CASE WHEN l.image_id = s.path_id THEN l.label END AS label,
  CASE WHEN l.image_id = s.path_id THEN l.excluded END AS excluded
FROM (
  SELECT
    regexp_extract("$path", {regex}, 1) AS path_thing,
    regexp_extract("$path", {regex}, 2) || '/' || regexp_extract("$path", {regex}, 3)
      || '/' || regexp_extract("$path", {regex}, 4) AS path_day,
    regexp_extract("$path", {regex}, 5) AS path_id,
    substr("$path", {sidecar_from}) AS sidecar_key,
    image_id, thing, s3_key, schema_version, confidence, prediction
  FROM {SIDECARS}
) s
LEFT JOIN (
  SELECT substr("$path", {label_from}) AS sidecar_key, image_id, label, excluded
  FROM {LABELS}
) l ON l.sidecar_key = s.sidecar_key
WHERE coalesce(s.path_thing, '') <> '' AND s.path_thing <> 'quarantine'
  AND s.image_id = s.path_id AND s.thing IS NOT NULL AND s.s3_key IS NOT NULL
  AND ({selected})
ORDER BY 1, 3, 2"""


Row = tuple[str | None, ...]


class SidecarEngine(Protocol):
    """Runs :func:`query_text` over one location's sidecars and label objects; rows of RESULT_COLUMNS."""

    name: str

    def run(self, location: FieldDataLocation, sql: str) -> list[Row]: ...


# -- DuckDB -----------------------------------------------------------------------------------------


def httpfs_extension() -> Path:
    """The httpfs extension file the ``duckdb-ext-httpfs`` wheel installed (DuckDB would otherwise
    download it at run time, which fails where only package registries are reachable)."""
    try:
        files = importlib.metadata.distribution(HTTPFS_DISTRIBUTION).files or []
    except importlib.metadata.PackageNotFoundError:
        raise ConfigurationError(
            "DuckDB's httpfs extension is not installed",
            "pip install 'fieldlens[fleet]' (duckdb and duckdb-ext-httpfs), or use --engine mirror",
        ) from None
    found = [f for f in files if f.name == "httpfs.duckdb_extension"]
    if not found:
        raise ConfigurationError(f"{HTTPFS_DISTRIBUTION} has no httpfs.duckdb_extension for this platform")
    return Path(str(found[0].locate()))


@dataclass(frozen=True)
class S3Access:
    """What DuckDB needs to reach S3 as boto3 does: the credentials boto3's chain resolved (env,
    profile, SSO, instance role), the region, and ``--endpoint-url`` where one is given."""

    key_id: str
    secret: str = field(repr=False)  # never in a log line or a traceback's locals
    token: str | None = field(repr=False)
    region: str = "us-east-1"
    endpoint_url: str | None = None

    @classmethod
    def from_boto(cls, region: str | None, endpoint_url: str | None) -> S3Access:
        import boto3

        session = boto3.session.Session(region_name=region)
        credentials = session.get_credentials()
        if credentials is None:
            raise ConfigurationError(
                "no AWS credentials for reading the bucket", "Configure them as for the AWS CLI (aws configure)"
            )
        frozen = credentials.get_frozen_credentials()
        return cls(frozen.access_key, frozen.secret_key, frozen.token, session.region_name or "us-east-1", endpoint_url)

    def secret_sql(self) -> str:
        options = [
            "TYPE s3",
            f"KEY_ID {_sql_string(self.key_id)}",
            f"SECRET {_sql_string(self.secret)}",
            f"REGION {_sql_string(self.region)}",
        ]
        if self.token:
            options.append(f"SESSION_TOKEN {_sql_string(self.token)}")
        if self.endpoint_url:  # moto, MinIO, a VPC endpoint: path-style, http where it says so
            parts = urlsplit(self.endpoint_url)
            options += [
                f"ENDPOINT {_sql_string(parts.netloc)}",
                "URL_STYLE 'path'",
                f"USE_SSL {'true' if parts.scheme == 'https' else 'false'}",
            ]
        return f"CREATE TEMPORARY SECRET fieldlens_s3 ({', '.join(options)})"


class DuckDBSidecars:
    """The query on embedded DuckDB, reading the sidecars from S3 itself (httpfs from the wheel)."""

    name = "duckdb"

    def __init__(self, access: S3Access) -> None:
        self._access = access

    def connect(self) -> Any:
        """A connection that can read s3:// and can fetch nothing: the extension is loaded from the
        wheel's file; autoinstall, autoload and community extensions are off, the extension
        directory is an empty one of its own and the repository a closed port, so any attempt to
        install would fail rather than reach out; then the configuration is locked."""
        import duckdb

        extensions = tempfile.mkdtemp(prefix="fieldlens-duckdb-ext-")
        connection = duckdb.connect(
            config={
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "allow_community_extensions": False,
                "extension_directory": extensions,
                "custom_extension_repository": "http://127.0.0.1:9/none",
            }
        )
        connection.execute(f"LOAD {_sql_string(str(httpfs_extension()))}")
        connection.execute(self._access.secret_sql())
        connection.execute("SET lock_configuration = true")
        return connection

    def run(self, location: FieldDataLocation, sql: str) -> list[Row]:
        import duckdb

        connection = self.connect()
        try:
            for view, glob, columns in (
                (SIDECARS, location.sidecar_glob, SIDECAR_COLUMNS),
                (LABELS, location.labels_glob, LABEL_COLUMNS),
            ):
                connection.execute(self._view(connection, view, glob, columns))
            return [tuple(row) for row in connection.execute(sql).fetchall()]
        except duckdb.Error as exc:
            raise SidecarQueryError(f"DuckDB could not query {location.url}: {exc}") from None
        finally:
            connection.close()

    @staticmethod
    def _view(connection: Any, view: str, glob: str, columns: Sequence[str]) -> str:
        """``view`` over the JSON objects ``glob`` matches, every column text, ``"$path"`` the object's
        URI; an empty relation of the same columns where nothing matches (read_json would refuse)."""
        if not connection.execute(f"SELECT count(*) FROM glob({_sql_string(glob)})").fetchone()[0]:
            nulls = ", ".join(f"NULL::VARCHAR AS {name}" for name in ('"$path"', *columns))
            log.debug("no objects match %s", glob)
            return f"CREATE TEMP VIEW {view} AS SELECT {nulls} WHERE false"
        struct = ", ".join(f"{_sql_string(name)}: 'VARCHAR'" for name in columns)
        return (
            f'CREATE TEMP VIEW {view} AS SELECT filename AS "$path", {", ".join(columns)} '
            f"FROM read_json({_sql_string(glob)}, columns={{{struct}}}, filename=true, "
            "format='newline_delimited', ignore_errors=true)"
        )


# -- Athena -----------------------------------------------------------------------------------------


def athena_ddl(table: str, columns: Sequence[str], location: str) -> str:
    """An external table of JSON objects, every column text, whose data are the objects the symlink
    files under ``location`` list (SymlinkTextInputFormat): never the images beside the sidecars."""
    listed = ",\n  ".join(f"`{name}` string" for name in columns)
    return (
        f"CREATE EXTERNAL TABLE IF NOT EXISTS {table} (\n  {listed}\n)\n"
        "ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'\n"
        "WITH SERDEPROPERTIES ('ignore.malformed.json' = 'true')\n"
        "STORED AS INPUTFORMAT 'org.apache.hadoop.hive.ql.io.SymlinkTextInputFormat'\n"
        "OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat'\n"
        f"LOCATION {_sql_string(location)}"
    )


class AthenaSidecars:
    """The query on Athena: the two tables are (re)pointed at symlink files listing this location's
    JSON objects, then the query runs in ``workgroup`` and its result pages are read."""

    name = "athena"

    def __init__(
        self,
        athena: Any,
        s3: Any,
        database: str = "fieldlens",
        workgroup: str = "primary",
        output_location: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        poll_s: float = 1.0,
    ) -> None:
        if not re.fullmatch(r"[a-z0-9_]{1,255}", database):
            raise InvalidInputError(f"{database!r} is not an Athena database name", "Use lower case, digits and _")
        self._athena, self._s3, self.database, self.workgroup = athena, s3, database, workgroup
        self._output, self._sleep, self._poll_s = output_location, sleep, poll_s

    def output_location(self, location: FieldDataLocation) -> str:
        return self._output or f"s3://{location.bucket}/fieldlens/athena/results/"

    def table_location(self, location: FieldDataLocation, table: str) -> str:
        """Where ``table``'s symlink file for this location goes: one folder per field-data URL."""
        digest = hashlib.sha256(location.url.encode()).hexdigest()[:12]
        return f"s3://{location.bucket}/fieldlens/athena/{digest}/{table}/"

    def run(self, location: FieldDataLocation, sql: str) -> list[Row]:
        self._execute(f"CREATE DATABASE IF NOT EXISTS {self.database}", location, database=False)
        for table, columns, root in (
            (SIDECARS, SIDECAR_COLUMNS, location.sidecar_root),
            (LABELS, LABEL_COLUMNS, location.labels_root + (location.prefix + "/" if location.prefix else "")),
        ):
            where = self.table_location(location, table)
            self._write_symlinks(location.bucket, root, where)
            self._execute(athena_ddl(table, columns, where), location)
            self._execute(f"ALTER TABLE {table} SET LOCATION {_sql_string(where)}", location)
        return self._results(self._execute(sql, location), location)

    def _write_symlinks(self, bucket: str, root: str, where: str) -> None:
        """``symlink.txt`` under ``where``: the s3:// URI of every JSON object under ``root`` (a listing:
        no object is read)."""
        prefix = root.removeprefix(f"s3://{bucket}/")
        lines = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            lines += [
                f"s3://{bucket}/{item['Key']}" for item in page.get("Contents", []) if item["Key"].endswith(".json")
            ]
        key = where.removeprefix(f"s3://{bucket}/") + "symlink.txt"
        self._s3.put_object(Bucket=bucket, Key=key, Body=("\n".join(lines) + "\n").encode(), ContentType="text/plain")
        log.info("listed %d JSON objects under %s for Athena", len(lines), root)

    def _execute(self, sql: str, location: FieldDataLocation, database: bool = True) -> str:
        """Start ``sql`` and wait for it; its execution id. SidecarQueryError with Athena's reason."""
        arguments: dict[str, Any] = {
            "QueryString": sql,
            "WorkGroup": self.workgroup,
            "ResultConfiguration": {"OutputLocation": self.output_location(location)},
        }
        if database:
            arguments["QueryExecutionContext"] = {"Database": self.database}
        execution_id: str = self._athena.start_query_execution(**arguments)["QueryExecutionId"]
        while True:
            status = self._athena.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]["Status"]
            if status["State"] in ATHENA_TERMINAL:
                break
            self._sleep(self._poll_s)
        if status["State"] != "SUCCEEDED":
            raise SidecarQueryError(
                f"Athena query {execution_id} {status['State']}: {status.get('StateChangeReason', 'no reason given')}"
            )
        return execution_id

    def _results(self, execution_id: str, location: FieldDataLocation) -> list[Row]:
        """Every result row, page by page; the first row of a SELECT's results is its header."""
        rows: list[Row] = []
        header_seen = False
        paginator = self._athena.get_paginator("get_query_results")
        for page in paginator.paginate(QueryExecutionId=execution_id):
            for row in page["ResultSet"]["Rows"]:
                values = tuple(cell.get("VarCharValue") for cell in row["Data"])
                if not header_seen:
                    header_seen = True
                    if values != RESULT_COLUMNS:
                        raise SidecarQueryError(f"Athena's result for {location.url} has the columns {values}")
                    continue
                rows.append(values)
        return rows


# -- from rows to the manifest -----------------------------------------------------------------------


@dataclass(frozen=True)
class BucketImage:
    """One pair the query found, judged as the mirror judges it: its image's key and trusted label."""

    thing: str
    image_id: str
    key: str  # the image object's key, from where the pair was found (never the sidecar's s3_key)
    label: str | None
    prediction: str | None
    confidence: float

    @property
    def image_key(self) -> str:
        return image_key(self.thing, self.image_id)


def bucket_images(location: FieldDataLocation, rows: Sequence[Row]) -> Iterator[BucketImage]:
    """The rows the mirror would also have: a valid image id filed under its own day, a sidecar of a
    known version with a confidence in [0, 1], and the label a valid label object gives (none
    when it is excluded), in the mirror's order (thing, then day, then id)."""
    if any(len(row) != len(RESULT_COLUMNS) for row in rows):
        raise SidecarQueryError(f"the sidecar query returned rows of other than {len(RESULT_COLUMNS)} columns")
    for thing, image_id, day, version, confidence, prediction, label, excluded in sorted(
        rows, key=lambda row: (row[0] or "", row[2] or "", row[1] or "")
    ):
        when = image_time(image_id or "")
        if not thing or not image_id or when is None or date_path(when) != day:
            continue
        try:
            if version is not None and int(version) > SCHEMA_VERSION:
                continue
            score = float(confidence) if confidence is not None else 0.0
            if not 0.0 <= score <= 1.0:
                continue
            is_excluded = excluded is not None and _BOOL.validate_python(excluded)
        except (ValueError, ValidationError):
            continue
        trusted = label if label and not is_excluded and len(label) <= MAX_LABEL else None
        yield BucketImage(thing, image_id, s3_key(location.prefix, thing, when, image_id), trusted, prediction, score)


def s3_sha256(s3: Any, bucket: str, key: str) -> str | None:
    """The image's SHA-256, hex: S3's own checksum (verified by S3 against the bytes when the uploader
    put the object with it), else the bytes hashed as they stream by (nothing is written); None
    when the image is not there (a sidecar without its image, as the mirror skips)."""
    from botocore.exceptions import ClientError

    try:
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    checksum = head.get("ChecksumSHA256")
    if checksum and "-" not in checksum and head.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT":
        return base64.b64decode(checksum).hex()
    log.debug("s3://%s/%s has no full-object SHA-256: hashing its bytes", bucket, key)
    digest = hashlib.sha256()
    for chunk in s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def build_bucket_manifest(
    location: FieldDataLocation,
    engine: SidecarEngine,
    s3: Any,
    labels: dict[str, str],
    base: Path | None,
    parent_labels: list[str] | None,
    pseudo_threshold: float | None = None,
    val_percent: int = 20,
    concurrency: int = 16,
) -> Manifest:
    """:func:`~fieldlens_retrain.dataset.build_manifest` for field data in a bucket, no image moved:
    the rows of the one query, each labelled image's SHA-256 from S3, entries at ``s3://`` URIs.
    ``labels`` (a labels file's) are matched as against a mirror, and win over the label objects."""
    sql = query_text(location, pseudo_threshold, everything=bool(labels))
    rows = engine.run(location, sql)
    images = list(bucket_images(location, rows))
    log.info("%s: %d rows, %d pairs the mirror would keep, in %s", engine.name, len(rows), len(images), location.url)
    keys_of: dict[str, list[str]] = {}
    for image in images:
        keys_of.setdefault(image.image_id, []).append(image.image_key)
    matched, _ = match_label_keys(keys_of, labels)
    chosen: list[tuple[BucketImage, str, Source]] = []
    for image in images:
        label = matched.get(image.image_key) or image.label
        if label:
            chosen.append((image, label, "field"))
        elif pseudo_threshold is not None and image.prediction and image.confidence >= pseudo_threshold:
            chosen.append((image, image.prediction, "pseudo"))
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3-sha256") as pool:
        hashes = list(pool.map(lambda item: s3_sha256(s3, location.bucket, item[0].key), chosen))
    based = base_images(base) if base is not None else iter(())
    found = [Found(str(path), str(path.absolute()), sha256_file(path), label, "base") for path, label in based]
    missing = 0
    for (image, label, source), sha256 in zip(chosen, hashes, strict=True):
        if sha256 is None:
            missing += 1
            continue
        found.append(Found(image.key, f"s3://{location.bucket}/{image.key}", sha256, label, source))
    if missing:
        log.warning("%d sidecars in %s have no image beside them: left out", missing, location.url)
    return manifest_of(found, parent_labels, val_percent)


# -- a manifest in S3, on a host that trains locally ------------------------------------------------


def in_s3(path: str) -> bool:
    return path.startswith("s3://")


def localise(
    manifest: Manifest, s3: Any, cache: Path, entries_wanted: Callable[[str], bool] = lambda _: True
) -> Manifest:
    """The manifest with its ``s3://`` entries (those ``entries_wanted`` by sha256) downloaded into
    ``cache`` by sha256 and pointing there, each download checked against the entry's sha256 (a
    local retrain, and the gate's evaluation, read files). Its digest is unchanged: paths are not in it."""
    entries = []
    for entry in manifest.entries:
        if not in_s3(entry.path) or not entries_wanted(entry.sha256):
            entries.append(entry)
            continue
        bucket, _, key = entry.path.removeprefix("s3://").partition("/")
        target = resolve_inside(cache, f"{entry.sha256}{Path(key).suffix.lower()}")
        if not target.exists():
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            if hashlib.sha256(body).hexdigest() != entry.sha256:
                raise SidecarQueryError(f"{entry.path} changed since the manifest was built (its sha256 differs)")
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, body, durable=False)
        entries.append(entry.model_copy(update={"path": str(target.absolute())}))
    return manifest.model_copy(update={"entries": entries})
