"""The uploader's loops: drain the queue (backing off while S3 is away) and publish status."""

from __future__ import annotations

import json
import logging
import threading

from fieldlens_core.bus import Bus
from fieldlens_fielddata.retry import Backoff
from fieldlens_fielddata.uploader import Uploader

log = logging.getLogger(__name__)


class UploaderService:
    def __init__(
        self,
        uploader: Uploader,
        backoff: Backoff,
        bus: Bus,
        status_topic: str,
        poll_interval_s: float,
        status_interval_s: float,
    ) -> None:
        self._uploader = uploader
        self._backoff = backoff
        self._bus = bus
        self._status_topic = status_topic
        self._poll_interval_s = poll_interval_s
        self._status_interval_s = status_interval_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        log.info("uploading %s to %s", self._uploader.root, self._uploader.destination.description)
        for target, name in ((self._drain_loop, "drain"), (self._status_loop, "status")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        self._uploader.close()

    def drain_once(self) -> float:
        """One pass over the queue; returns how long to wait before the next."""
        report = self._uploader.drain()
        if report.uploaded or report.quarantined:
            log.info("uploaded %d (%d bytes), quarantined %d", report.uploaded, report.bytes, report.quarantined)
        if report.outage:
            delay = self._backoff.next_delay()
            log.warning("upload failed, everything stays queued; retrying in %.1fs: %s", delay, report.error)
            return delay
        self._backoff.reset()
        return self._poll_interval_s

    def publish_status(self) -> None:
        try:
            self._bus.publish(self._status_topic, json.dumps(self._uploader.status()).encode())
        except Exception:
            log.exception("could not publish status")

    def _drain_loop(self) -> None:
        while not self._stop.is_set():
            try:
                delay = self.drain_once()
            except Exception:  # a bug in one pass must not end uploading for good
                log.exception("drain failed")
                delay = self._backoff.next_delay()
            self._stop.wait(delay)

    def _status_loop(self) -> None:
        self.publish_status()
        while not self._stop.wait(self._status_interval_s):
            self.publish_status()
