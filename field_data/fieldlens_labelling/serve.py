"""`fieldlens label serve`: the page under uvicorn, on 127.0.0.1 unless told otherwise.

LAN mode is explicit: ``--host 0.0.0.0`` with one ``--allow-host`` for each name other machines
open the page by (security.page_hosts); the printed URLs use the first.

:class:`LabelServer` runs it on a thread too: the loop demo and the tests label through the
same HTTP API a person's browser uses.
"""

from __future__ import annotations

import errno
import getpass
import logging
import secrets
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from fieldlens_core.errors import InUseError, InvalidInputError
from fieldlens_core.model_package import current_package
from fieldlens_fielddata.bucket_labels import BucketLabels
from fieldlens_labelling.app import Settings, create_app
from fieldlens_labelling.embedded import PageEmbeddings, backbone_embed
from fieldlens_labelling.index import LabelIndex
from fieldlens_labelling.models import DeskPaths, ModelDesk
from fieldlens_labelling.security import Credentials, page_hosts
from fieldlens_labelling.thumbnails import Thumbnails
from fieldlens_retrain.gate import DEFAULT_RULES, GateRules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PageOptions:
    field_data: Path
    model_dir: Path | None
    cache_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    blank_label: str = "blank"
    labeller: str | None = None
    token: str | None = None
    models_dir: Path | None = None
    """Where the page's retrains write candidates and reports (default: beside the model directory)."""
    base: Path | None = None
    rules: GateRules = DEFAULT_RULES
    """What the page's Retrain asks of a candidate before publishing it."""
    """A folder of class folders trained on as well (as `dataset build --base`)."""
    bucket: BucketLabels | None = None
    """When ``field_data`` is the mirror of a bucket (BucketLabels.mirror): labels go there too."""
    allow_hosts: tuple[str, ...] = ()
    """Host names the page answers to besides its address (needed with --host 0.0.0.0)."""
    embeddings: bool = True
    """Embed the images (lazily, on a thread) for the default order's typical phase and stacks."""


class LabelServer:
    """The page on its own thread; ``url`` carries the token, ``image_url`` only the image token."""

    def __init__(self, options: PageOptions) -> None:
        self.token = options.token or secrets.token_urlsafe(24)
        self._name = page_hosts(options.host, options.allow_hosts)[0]  # refuses LAN mode without a name
        family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((options.host, options.port))
        except OSError as exc:
            self._socket.close()
            kind = InUseError if exc.errno == errno.EADDRINUSE else InvalidInputError
            raise kind(
                f"cannot listen on {options.host}:{options.port}: {exc.strerror}",
                "Another page there? Pass --port with a free port, or --port 0 for any free port",
            ) from None
        self.host, self.port = options.host, self._socket.getsockname()[1]
        self.index = LabelIndex()
        self.index.start_loading(options.field_data)
        # the default order's typical phase and duplicate stacks: embedded lazily, on a thread of its
        # own, into the cache the page's Retrain embeds into (fieldlens_labelling.embedded)
        cache_dir = options.cache_dir
        self.embeddings = PageEmbeddings(lambda: backbone_embed(cache_dir))
        if options.embeddings:
            self.index.embeddings = self.embeddings
            self.embeddings.start(self.index.embedding_candidates)
        package = current_package(options.model_dir)
        settings = Settings(
            labels=sorted(set(package.labels) - {options.blank_label}) if package else [],
            blank_label=options.blank_label,
            labeller=options.labeller or getpass.getuser(),
            model={"name": package.card.name, "version": package.card.version} if package else None,
            token=self.token,
            host=options.host,
            port=self.port,
            allow_hosts=options.allow_hosts,
        )
        desk = None
        if options.model_dir is not None:
            paths = DeskPaths(
                field_data=options.field_data,
                model_dir=options.model_dir,
                models_dir=options.models_dir or options.model_dir.absolute().parent / "models",
                cache_dir=options.cache_dir,
                base=options.base,
                rules=options.rules,
            )
            desk = ModelDesk(paths)
        self.desk = desk
        thumbnails = Thumbnails(options.cache_dir / "thumbnails")
        self.app = create_app(self.index, settings, thumbnails, desk, options.bucket)
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The page's address as it is reached: its first Host name (in LAN mode, --allow-host's)."""
        return f"http://{self._name}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/?token={self.token}"

    @property
    def image_url(self) -> str:
        """`label export --image-url` for Label Studio: this page's real address and a token that
        only reads images (security.Credentials.image_token), valid until the page stops."""
        image_token = Credentials(self.token, self.port).image_token
        return f"{self.base_url}/api/images/{{id}}?token={image_token}"

    def run(self) -> None:
        """Serve in this thread until SIGINT/SIGTERM (uvicorn installs the handlers)."""
        self._server.run(sockets=[self._socket])

    def start(self) -> LabelServer:
        # uvicorn installs signal handlers on the main thread only: this one leaves them alone
        self._thread = threading.Thread(target=self.run, name="label-page", daemon=True)
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            threading.Event().wait(0.02)
        return self

    def stop(self) -> None:
        self.embeddings.stop()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> LabelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
