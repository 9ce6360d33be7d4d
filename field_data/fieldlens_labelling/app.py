"""The labelling page's HTTP API and static files (Starlette).

    GET  /                      the page
    GET  /api/state             label set, orders, progress, model, who labels
    GET  /api/items             ?order=useful&show=todo|all&offset=0&limit=200; in the default order an
                                item may carry a ``stack``: its near-duplicates ({id, revision}), not
                                listed themselves, which the page labels with it in one write
    GET  /api/images/{id}       the field image           GET /api/thumbnails/{id}   its thumbnail
    POST /api/labels            {"items": [{"id", "revision"}], "label": str|null, "excluded": bool}

An ``id`` is the image's key (Item.key): ``<thing>/<image_id>`` over a bucket's mirror, where
two devices' images may share an image id.
    GET  /api/models            the current model, every gate report, the retrain's progress
    GET  /api/reports/{version}/{picture}                  a confusion matrix
    POST /api/retrain           dataset build -> retrain -> gate, on a thread (409 while one runs)
    POST /api/install           {"version": ...}: a candidate that passed the gate becomes current

State and items first take in what other writers changed in the directory (LabelIndex.refresh).
A write names the revision of each sidecar it was made against; one that someone else has
replaced since is refused (409) with the label it now has, and nothing is lost.

Where the work runs. The event loop only reads requests and sends answers: every route's work
blocks (a locked sidecar write, an S3 round trip, a JPEG decode, a directory walk, a model
package copied into place), and on the loop one slow S3 put would stall every other request.
So each route reads its body on the loop and runs the rest on a worker thread of its lane
(:func:`off_loop`), each lane a bounded :class:`Lanes` limiter: a flood of requests waits for a
thread of its own lane, it never starts a thread each, and it never takes another lane's.

- ``reads`` (READ_THREADS): state, items, the model desk's reports and report pictures;
- ``pictures`` (PICTURE_THREADS): finding an image, making a thumbnail; a grid of 200
  thumbnails, or a script asking for thousands, leaves state, items and writes answering;
- ``writes`` (one thread): label writes, one at a time in the order they came, as the loop
  ran them before; so an image's sidecar and its label object in the bucket are written in
  the same order, and two writes never race between the sidecar and the bucket;
- ``desk`` (one thread): install, and starting a retrain (which then runs on its own thread).

The page itself, its static files and the image bytes are Starlette's file responses, which
read on anyio's own threads; the sign-in page is one small local file the Guard reads.
Everything the workers share is thread-safe: :class:`LabelIndex` holds its lock for each
change and publishes a new Item for each write; a sidecar write holds the directory's lock file
(flock, which two threads of one process contend for as two processes do); the model desk's
status changes under its lock; thumbnails are written atomically under per-thread temporary
names; a boto3 client may be shared by threads.
"""

from __future__ import annotations

import errno
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
from anyio import CapacityLimiter
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from fieldlens_core.errors import FieldlensError, ModelPackageError, NotFoundError, PayloadTooLargeError
from fieldlens_core.model_package import MAX_LABEL_CHARS
from fieldlens_core.outside_errors import translate
from fieldlens_core.safe_paths import UnsafePathError
from fieldlens_fielddata.bucket_labels import BucketLabelError, BucketLabels
from fieldlens_fielddata.sidecar import SidecarError, StaleSidecarError
from fieldlens_labelling.index import ORDERS, LabelIndex, Order
from fieldlens_labelling.models import DeskError, ModelDesk
from fieldlens_labelling.security import HEADERS, MAX_BODY, Guard, refuse
from fieldlens_labelling.thumbnails import NotADeviceImageError, ThumbnailError, Thumbnails, device_image
from fieldlens_retrain.labels import LabelError, check_label_text

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
MAX_ITEMS_PER_WRITE = 1000
MAX_PAGE = 1000
READ_THREADS = 8
"""Threads for state, items and reports: more than a browser's six connections to one host."""
PICTURE_THREADS = 8
"""Threads for images and thumbnails: a browser loads six at a time; more would only share the CPUs."""


@dataclass
class Settings:
    labels: list[str]
    """The model's label set (empty without a model: then the labels its predictions named stand in).
    Labels already given are offered too, and any new class name is accepted: the person's classes
    become the next candidate's (fieldlens_retrain.dataset.class_set)."""
    blank_label: str
    labeller: str
    model: dict[str, str] | None
    token: str
    host: str
    port: int
    target_per_class: int = 30
    allow_hosts: tuple[str, ...] = ()
    """Host names the page answers to besides its address (`--allow-host`: LAN mode)."""


class BadInput(FieldlensError, ValueError):
    """A request that does not say what it must: 400 with this message."""


class WriteStopped(FieldlensError):
    """A label write that stopped part-way (a full disk): the labels before it stand, in ``updated``."""

    def __init__(self, message: str, updated: list[dict[str, object]]) -> None:
        super().__init__(message)
        self.updated = updated


# -- how an exception becomes an answer ----------------------------------------------------------
STATUS: dict[type[FieldlensError], int] = {
    BadInput: 400,
    NotFoundError: 404,  # translate()'s FileNotFoundError: an image removed under the page
    PayloadTooLargeError: 413,
    NotADeviceImageError: 415,  # not a JPEG, whatever its name
    ThumbnailError: 422,  # over the inference service's pixel budget, or a JPEG that does not decode
}
"""The status each kind of the project's error gets, by its nearest listed class. Any other
FieldlensError is the page's own failure (500, with its reason); one caused by a full disk is 507
Insufficient Storage. A pixel budget is 422, not 413: the request has no body to make smaller."""
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT})


async def answer_starlette(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, a method a route lacks) as JSON with a reason,
    like every other answer of the page."""
    status = getattr(exc, "status_code", 500)
    return refuse(status, f"{request.method} {request.url.path}: {getattr(exc, 'detail', 'refused')}")


async def answer_error(request: Request, exc: Exception) -> Response:
    """The one place where an exception a route raises becomes the page's answer: its status and,
    in ``error``, its reason (the page shows it), so that no known failure is a bare 500.

    Outside errors (OSError and the like) go through :func:`fieldlens_core.outside_errors.translate`
    first. What it does not know is a bug: 500 saying so, and Starlette re-raises it, so the
    server logs the traceback.
    """
    error = translate(exc)
    if error is None:
        return refuse(500, f"internal error ({type(exc).__name__}): the page's log has the traceback")
    status = 507 if _no_room(exc) else next((STATUS[k] for k in type(error).__mro__ if k in STATUS), 500)
    if status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, error.one_line())
    body: dict[str, object] = {"error": error.one_line()}
    if isinstance(error, WriteStopped):
        body["updated"] = error.updated
    return JSONResponse(body, status_code=status, headers=HEADERS)


def _no_room(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in NO_ROOM:
            return True
        exc = exc.__cause__
    return False


MAX_JSON_DEPTH = 32
"""Ten times the depth of the page's own bodies. json.loads recurses once a level, so 64 KiB of
``[`` ended in a RecursionError (a bare 500); the levels are counted before it runs."""
_JSON_TOKENS = re.compile(rb'(?s)"(?:[^"\\]|\\.)*"?|[\[\]{}]')  # an unclosed string runs to the end: linear


def parse_json(body: bytes) -> Any:
    """A request body as JSON, within MAX_BODY bytes (the Guard refuses a longer Content-Length
    before the body is read; this holds for any caller) and MAX_JSON_DEPTH levels."""
    if len(body) > MAX_BODY:
        raise PayloadTooLargeError(f"a request body of at most {MAX_BODY} bytes")
    depth = 0
    for token in _JSON_TOKENS.finditer(body):
        opening = token.group() in (b"[", b"{")
        if opening or token.group() in (b"]", b"}"):
            depth += 1 if opening else -1
            if depth > MAX_JSON_DEPTH:
                raise BadInput(f"the body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise BadInput(f"the body is not JSON: {exc}") from None


def label_set(settings: Settings, index: LabelIndex) -> set[str]:
    return set(settings.labels) | index.label_names(suggested=not settings.labels) | {settings.blank_label}


def check_label(given: Any, settings: Settings, known: set[str]) -> str | None:
    if given is None:
        return None
    if not isinstance(given, str):
        raise BadInput(f"a label is a string of 1 to {MAX_LABEL_CHARS} characters")
    try:
        label = check_label_text(given)
    except LabelError as exc:
        raise BadInput(exc.message) from None
    if label not in known:
        log.info("new class %r", label)
    return label


def parse_write(body: bytes, settings: Settings, known: set[str]) -> tuple[list[tuple[str, int]], str | None, bool]:
    document = parse_json(body)
    if not isinstance(document, dict) or not isinstance(document.get("items"), list):
        raise BadInput('expected {"items": [{"id": ..., "revision": ...}], "label": ..., "excluded": ...}')
    items = document["items"]
    if not 1 <= len(items) <= MAX_ITEMS_PER_WRITE:
        raise BadInput(f"from 1 to {MAX_ITEMS_PER_WRITE} items per write")
    wanted = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise BadInput("each item needs an id (a string)")
        revision = item.get("revision")
        if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
            raise BadInput("each item needs the revision it was labelled against (an integer)")
        wanted.append((item["id"], revision))
    excluded = document.get("excluded", False)
    if not isinstance(excluded, bool):
        raise BadInput("excluded is true or false")
    return wanted, check_label(document.get("label"), settings, known), excluded


Work = Callable[[Request, bytes], Response]
"""A route's work: the request and its body (read on the loop), to the answer, on a worker thread."""


@dataclass(frozen=True)
class Lanes:
    """The page's worker threads, one bounded limiter per kind of work (the module's docstring)."""

    reads: CapacityLimiter = field(default_factory=lambda: CapacityLimiter(READ_THREADS))
    pictures: CapacityLimiter = field(default_factory=lambda: CapacityLimiter(PICTURE_THREADS))
    writes: CapacityLimiter = field(default_factory=lambda: CapacityLimiter(1))
    desk: CapacityLimiter = field(default_factory=lambda: CapacityLimiter(1))


def off_loop(lane: CapacityLimiter, work: Work) -> Callable[[Request], Awaitable[Response]]:
    """The route that reads a POST's body on the event loop (the Guard has bounded its length)
    and runs ``work`` on a thread of ``lane``; what it raises reaches :func:`answer_error`."""

    async def endpoint(request: Request) -> Response:
        body = await request.body() if request.method == "POST" else b""
        return await anyio.to_thread.run_sync(work, request, body, limiter=lane)

    return endpoint


def create_app(
    index: LabelIndex,
    settings: Settings,
    thumbnails: Thumbnails,
    desk: ModelDesk | None = None,
    bucket: BucketLabels | None = None,
) -> Starlette:
    """``bucket``: the images are a mirror of a bucket's; each label is also written there, as its
    own object (:mod:`fieldlens_fielddata.bucket_labels`), before the write is answered."""

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    def state(request: Request, body: bytes) -> Response:
        index.refresh()  # labels `label import` (or anyone) wrote meanwhile count too
        return JSONResponse(
            {
                "labels": sorted(label_set(settings, index) - {settings.blank_label}),
                "blank_label": settings.blank_label,
                "orders": list(ORDERS),
                "labeller": settings.labeller,
                "model": desk.current() if desk is not None else settings.model,
                "desk": desk is not None,
                "progress": index.progress(
                    sorted(label_set(settings, index) - {settings.blank_label}), settings.target_per_class
                ),
            }
        )

    def items(request: Request, body: bytes) -> Response:
        order = request.query_params.get("order", "useful")
        show = request.query_params.get("show", "todo")
        if order not in ORDERS:
            return refuse(400, f"order is one of {', '.join(ORDERS)}")
        if show not in ("todo", "all"):
            return refuse(400, "show is todo or all")
        try:
            offset = int(request.query_params.get("offset", "0"))
            limit = int(request.query_params.get("limit", "200"))
        except ValueError:
            return refuse(400, "offset and limit are integers")
        if offset < 0 or not 1 <= limit <= MAX_PAGE:
            return refuse(400, f"offset >= 0 and limit from 1 to {MAX_PAGE}")
        index.refresh()
        ordered, stacks = index.planned(_order(order))
        if show == "todo":
            ordered = [i for i in ordered if not i.done]
        page_items = ordered[offset : offset + limit]
        listed = []
        for item in page_items:
            shown = item.to_json()
            if item.key in stacks:  # its near-duplicates: label them with it (one POST /api/labels)
                shown["stack"] = [{"id": s.key, "revision": s.revision} for s in stacks[item.key]]
            listed.append(shown)
        stacked = sum(len(stack) for stack in stacks.values())
        return JSONResponse({"total": len(ordered), "offset": offset, "stacked": stacked, "items": listed})

    def _pair(key: str) -> Any:
        item = index.get(key)
        if item is None:  # kept since the last look (a Label Studio task may ask before the page does)
            index.refresh()
            item = index.get(key)
        return item.directory.find(item.image_id) if item is not None else None

    def image(request: Request, body: bytes) -> Response:
        pair = _pair(request.path_params["key"])
        if pair is None or not pair.image_path.exists():
            return refuse(404, "no such field image")
        return Response(device_image(pair.image_path), media_type="image/jpeg")  # what it refuses: answer_error

    def thumbnail(request: Request, body: bytes) -> Response:
        pair = _pair(request.path_params["key"])
        if pair is None:
            return refuse(404, "no such field image")
        return Response(thumbnails.get(pair), media_type="image/jpeg")  # what it refuses: answer_error

    def write_labels(request: Request, body: bytes) -> Response:
        wanted, label, excluded = parse_write(body, settings, label_set(settings, index))
        updated: list[dict[str, object]] = []
        conflicts: list[dict[str, Any]] = []
        missing: list[str] = []
        for key, revision in wanted:
            item = index.get(key)
            if item is None:
                missing.append(key)
                continue
            directory, image_id = item.directory, item.image_id
            try:
                sidecar = directory.label(
                    image_id, label, "human", settings.labeller, expected_revision=revision, excluded=excluded
                )
            except StaleSidecarError as exc:
                conflicts.append({"id": key, "message": str(exc)})
                continue
            except (FileNotFoundError, SidecarError) as exc:
                missing.append(key)
                log.warning("cannot label %s: %s", key, exc)
                continue
            except OSError as exc:  # a full disk: its sidecar is as it was (atomic_write), 507 says so
                message = f"cannot write {key}'s label ({exc.strerror or exc}); it and any after it were not"
                raise WriteStopped(f"{message}, {_done(updated)}", updated) from exc
            if bucket is not None:
                try:
                    bucket.put(sidecar, directory.thing)
                except BucketLabelError as exc:  # undo the mirror's copy: the bucket is where labels live
                    labeller = settings.labeller
                    undone = directory.label(image_id, item.label, "human", labeller, excluded=item.excluded)
                    index.update(undone, key)
                    message = f"{exc}; {key} and any after it were not, {_done(updated)}: try again"
                    return JSONResponse({"updated": updated, "error": message}, status_code=502)
            updated.append(index.update(sidecar, key).to_json())
        for conflict in conflicts:  # the page shows what the image has now
            current = index.get(str(conflict["id"]))
            if current is not None:
                fresh = current.directory.find(current.image_id)
                if fresh is not None:
                    conflict["item"] = index.update(current.directory.read(fresh), current.key).to_json()
        status = 200 if not conflicts and not missing else 409 if conflicts else 404
        answer: dict[str, Any] = {"updated": updated, "conflicts": conflicts, "missing": missing}
        if status != 200:
            answer["error"] = (
                conflicts[0]["message"] if conflicts else f"no field image {missing[0]!r} (removed, or never here)"
            )
        return JSONResponse(answer, status_code=status)

    def models(request: Request, body: bytes) -> Response:
        if desk is None:
            return refuse(404, "start the page with --model to see and retrain models")
        return JSONResponse(
            {
                "current": desk.current(),
                "reports": desk.reports(),
                "decisions": desk.decisions(),
                "retrain": desk.retrain_status(),
            }
        )

    def report_file(request: Request, body: bytes) -> Response:
        if desk is None:
            return refuse(404, "no model desk")
        try:
            path = desk.report_file(request.path_params["version"], request.path_params["name"])
        except DeskError as exc:
            return refuse(404, str(exc))
        return FileResponse(path, media_type="image/png")

    def retrain(request: Request, body: bytes) -> Response:
        if desk is None:
            return refuse(404, "start the page with --model to retrain")
        if not isinstance(parse_json(body), dict):
            raise BadInput("expected {} (a Retrain takes no options)")
        try:
            desk.start_retrain()
        except DeskError as exc:
            return refuse(409, str(exc))
        return JSONResponse({"retrain": desk.retrain_status()}, status_code=202)

    def install(request: Request, body: bytes) -> Response:
        if desk is None:
            return refuse(404, "start the page with --model to install")
        document = parse_json(body)
        version = document.get("version") if isinstance(document, dict) else None
        if not isinstance(version, str):
            return refuse(400, 'expected {"version": "..."}')
        try:
            installed = desk.install(version)
        except (DeskError, UnsafePathError, ModelPackageError) as exc:
            return refuse(409, str(exc))
        return JSONResponse({"installed": installed})

    lanes = Lanes()
    routes = [
        Route("/", page),
        Route("/api/state", off_loop(lanes.reads, state)),
        Route("/api/items", off_loop(lanes.reads, items)),
        Route("/api/images/{key:path}", off_loop(lanes.pictures, image)),  # a key has a slash: <thing>/<image_id>
        Route("/api/thumbnails/{key:path}", off_loop(lanes.pictures, thumbnail)),
        Route("/api/labels", off_loop(lanes.writes, write_labels), methods=["POST"]),
        Route("/api/models", off_loop(lanes.reads, models)),
        Route("/api/reports/{version}/{name}", off_loop(lanes.reads, report_file)),
        Route("/api/retrain", off_loop(lanes.desk, retrain), methods=["POST"]),
        Route("/api/install", off_loop(lanes.desk, install), methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    guard = Guard(settings.token, settings.host, settings.port, settings.allow_hosts, page=STATIC / "index.html")
    return Starlette(
        routes=routes,
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=guard)],
        exception_handlers={
            HTTPException: answer_starlette,
            FieldlensError: answer_error,
            OSError: answer_error,
            Exception: answer_error,
        },
    )


def _done(updated: list[dict[str, object]]) -> str:
    """What a write that stopped part-way did, for its message."""
    return f"the {len(updated)} before it were labelled" if updated else "nothing was labelled"


def _order(name: str) -> Order:
    for order in ORDERS:
        if order == name:
            return order
    raise BadInput(name)
