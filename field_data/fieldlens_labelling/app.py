"""The labelling page's HTTP API and static files (Starlette).

    GET  /                      the page
    GET  /api/state             label set, orders, progress, model, who labels
    GET  /api/items             ?order=useful&show=todo|all&offset=0&limit=200
    GET  /api/images/{id}       the field image           GET /api/thumbnails/{id}   its thumbnail
    POST /api/labels            {"items": [{"id", "revision"}], "label": str|null, "excluded": bool}
    GET  /api/models            the current model, every gate report, the retrain's progress
    GET  /api/reports/{version}/{picture}                  a confusion matrix
    POST /api/retrain           dataset build -> retrain -> gate, on a thread (409 while one runs)
    POST /api/install           {"version": ...}: a candidate that passed the gate becomes current

State and items first take in what other writers changed in the directory (LabelIndex.refresh).
A write names the revision of each sidecar it was made against; one that someone else has
replaced since is refused (409) with the label it now has, and nothing is lost.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from fieldlens_core.errors import FieldlensError, ModelPackageError
from fieldlens_core.safe_paths import UnsafePathError
from fieldlens_fielddata.sidecar import SidecarError, StaleSidecarError
from fieldlens_labelling.index import ORDERS, LabelIndex, Order
from fieldlens_labelling.models import DeskError, ModelDesk
from fieldlens_labelling.security import Guard, refuse
from fieldlens_labelling.thumbnails import Thumbnails
from fieldlens_retrain.bucket_labels import BucketLabelError, BucketLabels

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
MAX_LABEL = 100
MAX_ITEMS_PER_WRITE = 1000
MAX_PAGE = 1000


@dataclass
class Settings:
    labels: list[str]
    """The model's label set (empty without a model: then the labels its predictions named stand in).
    Labels already given, and new ones the page accepts, are offered too."""
    allow_new_labels: bool
    blank_label: str
    labeller: str
    model: dict[str, str] | None
    token: str
    host: str
    port: int
    target_per_class: int = 30


class BadInput(FieldlensError, ValueError):
    """A request that does not say what it must: 400 with this message."""


def label_set(settings: Settings, index: LabelIndex) -> set[str]:
    return set(settings.labels) | index.label_names(suggested=not settings.labels) | {settings.blank_label}


def check_label(given: Any, settings: Settings, known: set[str]) -> str | None:
    if given is None:
        return None
    if not isinstance(given, str) or not given.strip() or len(given) > MAX_LABEL or not given.isprintable():
        raise BadInput(f"a label is a printable string of 1 to {MAX_LABEL} characters")
    label = given.strip()
    if label not in known:
        if not settings.allow_new_labels:
            raise BadInput(f"{label!r} is not one of the model's labels (start the page with --new-labels to add one)")
        log.info("new label %r", label)
    return label


def parse_write(body: bytes, settings: Settings, known: set[str]) -> tuple[list[tuple[str, int]], str | None, bool]:
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise BadInput(f"the body is not JSON: {exc}") from None
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


def create_app(
    index: LabelIndex,
    settings: Settings,
    thumbnails: Thumbnails,
    desk: ModelDesk | None = None,
    bucket: BucketLabels | None = None,
) -> Starlette:
    """``bucket``: the images are a mirror of a bucket's; each label is also written there, as its
    own object (:mod:`fieldlens_retrain.bucket_labels`), before the write is answered."""

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def state(request: Request) -> Response:
        index.refresh()  # labels `label import` (or anyone) wrote meanwhile count too
        return JSONResponse(
            {
                "labels": sorted(label_set(settings, index) - {settings.blank_label}),
                "blank_label": settings.blank_label,
                "allow_new_labels": settings.allow_new_labels,
                "orders": list(ORDERS),
                "labeller": settings.labeller,
                "model": desk.current() if desk is not None else settings.model,
                "desk": desk is not None,
                "progress": index.progress(
                    sorted(label_set(settings, index) - {settings.blank_label}), settings.target_per_class
                ),
            }
        )

    async def items(request: Request) -> Response:
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
        ordered = index.ordered(_order(order))
        if show == "todo":
            ordered = [i for i in ordered if not i.done]
        page_items = ordered[offset : offset + limit]
        return JSONResponse({"total": len(ordered), "offset": offset, "items": [i.to_json() for i in page_items]})

    def _pair(image_id: str) -> Any:
        item = index.get(image_id)
        return item.directory.find(image_id) if item is not None else None

    async def image(request: Request) -> Response:
        pair = _pair(request.path_params["image_id"])
        if pair is None or not pair.image_path.exists():
            return refuse(404, "no such field image")
        return FileResponse(pair.image_path, media_type="image/jpeg")

    async def thumbnail(request: Request) -> Response:
        pair = _pair(request.path_params["image_id"])
        if pair is None:
            return refuse(404, "no such field image")
        try:
            body = thumbnails.get(pair)
        except OSError as exc:
            return refuse(422, f"the image cannot be read: {exc}")
        return Response(body, media_type="image/jpeg")

    async def write_labels(request: Request) -> Response:
        try:
            wanted, label, excluded = parse_write(await request.body(), settings, label_set(settings, index))
        except BadInput as exc:
            return refuse(400, str(exc))
        updated: list[dict[str, object]] = []
        conflicts: list[dict[str, Any]] = []
        missing: list[str] = []
        for image_id, revision in wanted:
            item = index.get(image_id)
            if item is None:
                missing.append(image_id)
                continue
            try:
                sidecar = item.directory.label(
                    image_id, label, "human", settings.labeller, expected_revision=revision, excluded=excluded
                )
            except StaleSidecarError as exc:
                conflicts.append({"id": image_id, "message": str(exc)})
                continue
            except (FileNotFoundError, SidecarError) as exc:
                missing.append(image_id)
                log.warning("cannot label %s: %s", image_id, exc)
                continue
            if bucket is not None:
                try:
                    bucket.put(sidecar)
                except BucketLabelError as exc:  # undo the mirror's copy: the bucket is where labels live
                    labeller = settings.labeller
                    index.update(item.directory.label(image_id, item.label, "human", labeller, excluded=item.excluded))
                    done = f"the {len(updated)} before it were labelled" if updated else "nothing was labelled"
                    message = f"{exc}; {image_id} and any after it were not, {done}: try again"
                    return JSONResponse({"updated": updated, "error": message}, status_code=502)
            updated.append(index.update(sidecar).to_json())
        for conflict in conflicts:  # the page shows what the image has now
            current = index.get(str(conflict["id"]))
            if current is not None:
                fresh = current.directory.find(current.image_id)
                if fresh is not None:
                    conflict["item"] = index.update(current.directory.read(fresh)).to_json()
        status = 200 if not conflicts and not missing else 409 if conflicts else 404
        body: dict[str, Any] = {"updated": updated, "conflicts": conflicts, "missing": missing}
        if status != 200:
            body["error"] = (
                conflicts[0]["message"] if conflicts else f"no field image {missing[0]!r} (removed, or never here)"
            )
        return JSONResponse(body, status_code=status)

    async def models(request: Request) -> Response:
        if desk is None:
            return refuse(404, "start the page with --model to see and retrain models")
        return JSONResponse({"current": desk.current(), "reports": desk.reports(), "retrain": desk.status.to_json()})

    async def report_file(request: Request) -> Response:
        if desk is None:
            return refuse(404, "no model desk")
        try:
            path = desk.report_file(request.path_params["version"], request.path_params["name"])
        except DeskError as exc:
            return refuse(404, str(exc))
        return FileResponse(path, media_type="image/png")

    async def retrain(request: Request) -> Response:
        if desk is None:
            return refuse(404, "start the page with --model to retrain")
        try:
            desk.start_retrain()
        except DeskError as exc:
            return refuse(409, str(exc))
        return JSONResponse({"retrain": desk.status.to_json()}, status_code=202)

    async def install(request: Request) -> Response:
        if desk is None:
            return refuse(404, "start the page with --model to install")
        try:
            version = json.loads(await request.body()).get("version")
        except (ValueError, AttributeError):
            return refuse(400, 'expected {"version": "..."}')
        if not isinstance(version, str):
            return refuse(400, 'expected {"version": "..."}')
        try:
            installed = desk.install(version)
        except (DeskError, UnsafePathError, ModelPackageError) as exc:
            return refuse(409, str(exc))
        return JSONResponse({"installed": installed})

    routes = [
        Route("/", page),
        Route("/api/state", state),
        Route("/api/items", items),
        Route("/api/images/{image_id}", image),
        Route("/api/thumbnails/{image_id}", thumbnail),
        Route("/api/labels", write_labels, methods=["POST"]),
        Route("/api/models", models),
        Route("/api/reports/{version}/{name}", report_file),
        Route("/api/retrain", retrain, methods=["POST"]),
        Route("/api/install", install, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    guard = Guard(settings.token, settings.host, settings.port)
    return Starlette(routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=guard)])


def _order(name: str) -> Order:
    for order in ORDERS:
        if order == name:
            return order
    raise BadInput(name)
