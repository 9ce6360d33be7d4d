"""Test stand-ins for the kernel features a container lacks, so that the real picamera2 runs on
libcamera's virtual camera. Only run inside the libcamera test root (tests/realparts).

They replace nothing of picamera2's own logic (configuration, requests, the arrays and JPEGs it
makes); only what a Pi's kernel provides and a container does not:

- **Buffers.** picamera2's default ``DmaAllocator`` allocates from ``/dev/dma_heap``, which a
  container has no driver for; ``Picamera2.close()`` builds one again. :class:`MemfdAllocator`
  hands libcamera memfd-backed frame buffers instead: the virtual pipeline handler only mmaps
  them, as a Pi's ISP would DMA into a dma-buf.
- **Sensor modes.** At open picamera2 lists sensor modes from a ``Raw`` stream. The virtual
  camera has no sensor and no ``Raw`` role, so the modes are listed from its ``Viewfinder``
  formats (the sizes the camera offers), which is what the listing is used for off a Pi sensor.
- **Frame timing** (only with ``FIELDLENS_TEST_SENSOR_FPS``). A sensor exposes one frame per
  frame period; the virtual camera completes a request the moment it is queued, about 1,000 a
  second, and moves to its next photo every 4 frames, so a folder played as a scene flashes by
  faster than anything can watch it. :class:`SensorClock` hands the queued requests to libcamera
  one per period instead, as a sensor fills them: a played photo then stays in view for 4 periods.

:func:`install` swaps them in; call it before the first ``Picamera2()``.
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
import time
from collections import deque
from typing import Any

import libcamera  # type: ignore[import-not-found]  # only inside the test root
import picamera2.picamera2
from picamera2.allocators.allocator import Allocator, Sync


class MemfdSync(Sync):  # type: ignore[misc]
    """Maps a frame buffer's whole memfd while picamera2 reads or writes it.

    libcamera holds its own duplicate of the fd for each plane, so picamera2's base ``Sync``, which
    maps a buffer only when all its planes share one fd number, refuses NV12's two planes as
    non-contiguous. They are one memfd: this maps all of it, by the file's size, through the first.
    """

    def __init__(self, allocator: Any, fb: Any, write: bool) -> None:
        self._fb = fb
        self._write = write
        self._map: mmap.mmap | None = None

    def __enter__(self) -> mmap.mmap:
        fd = self._fb.planes[0].fd
        protection = mmap.PROT_READ | (mmap.PROT_WRITE if self._write else 0)
        self._map = mmap.mmap(fd, os.fstat(fd).st_size, mmap.MAP_SHARED, protection)
        return self._map

    def __exit__(self, *exc: object) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None


# Chroma planes after the luma plane, as fractions of its size: what libcamera's pipeline handlers
# expect of a multi-planar buffer (the virtual one writes NV12's chroma through its second plane).
CHROMA_PLANES = {"NV12": (0.5,), "NV21": (0.5,), "YUV420": (0.25, 0.25), "YVU420": (0.25, 0.25)}


def planes(fd: int, stream_config: Any) -> list[Any]:
    """One memfd described as the format's planes, back to back. The virtual camera writes each
    plane through the buffer's plane list; a Pi's V4L2 driver takes one plane and knows the layout."""
    luma = stream_config.stride * stream_config.size.height
    lengths = [luma] + [int(luma * part) for part in CHROMA_PLANES.get(str(stream_config.pixel_format), ())]
    if len(lengths) == 1:
        lengths = [stream_config.frame_size]
    result, offset = [], 0
    for length in lengths:
        plane = libcamera.FrameBuffer.Plane()
        plane.fd, plane.offset, plane.length = fd, offset, length
        result.append(plane)
        offset += length
    return result


class MemfdAllocator(Allocator):  # type: ignore[misc]
    """Allocates each stream's buffers as memfds (what ``/dev/dma_heap`` gives on a Pi)."""

    def __init__(self) -> None:
        super().__init__()
        self.sync = MemfdSync
        self.frame_buffers: dict[Any, list[Any]] = {}
        self._fds: list[int] = []

    def allocate(self, libcamera_config: Any, use_case: Any) -> None:
        self.close()
        for stream_config in libcamera_config:
            buffers = []
            for index in range(stream_config.buffer_count):
                fd = os.memfd_create(f"fieldlens-test-frame-{index}")
                self._fds.append(fd)
                os.ftruncate(fd, stream_config.frame_size)
                buffers.append(libcamera.FrameBuffer(planes(fd, stream_config)))
            self.frame_buffers[stream_config.stream] = buffers

    def buffers(self, stream: Any) -> list[Any]:
        return self.frame_buffers[stream]

    def close(self) -> None:
        """Closes this allocator's fds; libcamera's duplicates keep its buffers valid until it drops them."""
        for fd in self._fds:
            os.close(fd)
        self._fds, self.frame_buffers = [], {}


def viewfinder_modes(camera: Any) -> list[dict[str, Any]]:
    """The camera's modes as picamera2 lists them from a sensor, read off the Viewfinder formats."""
    formats = camera.camera.generate_configuration([libcamera.StreamRole.Viewfinder]).at(0).formats
    return [
        {"format": str(pixel_format), "size": (size.width, size.height)}
        for pixel_format in formats.pixel_formats
        for size in formats.sizes(pixel_format)
    ]


log = logging.getLogger("picamera2_container")
SENSOR_FPS = "FIELDLENS_TEST_SENSOR_FPS"  # the environment variable that turns the clock on


class SensorClock:
    """Queues requests to libcamera at a sensor's frame rate: one per frame period, the oldest
    first; a period with no request waiting is a frame the sensor had no buffer for (dropped, as
    on a Pi). A camera's stop drops what it had waiting: libcamera cancels what it holds itself.

    It patches ``libcamera.Camera`` (picamera2 calls ``queue_request`` on start and whenever a
    request is released, ``stop`` on stop), so it serves every camera object of the process.
    """

    def __init__(self, fps: float) -> None:
        self._period = 1 / fps
        self._waiting: deque[tuple[Any, Any]] = deque()  # (camera, request)
        self._lock = threading.Lock()
        self._queue = libcamera.Camera.queue_request
        self._stop = libcamera.Camera.stop
        threading.Thread(target=self._run, name="sensor-clock", daemon=True).start()

    def install(self) -> None:
        clock = self

        def queue_request(camera: Any, request: Any) -> None:
            with clock._lock:
                clock._waiting.append((camera, request))

        def stop(camera: Any) -> Any:
            with clock._lock:  # nothing of this camera's reaches libcamera after its stop
                clock._waiting = deque(item for item in clock._waiting if item[0] is not camera)
                return clock._stop(camera)

        libcamera.Camera.queue_request = queue_request
        libcamera.Camera.stop = stop

    def _run(self) -> None:
        """One tick per frame period, kept to the clock; the ticks a stalled process missed are
        frames not taken, not a burst of them afterwards."""
        tick = threading.Event()  # never set: its wait is the period's timer
        due = time.monotonic()
        while True:
            due += self._period
            tick.wait(max(0.0, due - time.monotonic()))
            due = max(due, time.monotonic() - self._period)
            with self._lock:
                if not self._waiting:
                    continue
                camera, request = self._waiting.popleft()
                try:
                    self._queue(camera, request)
                except Exception:  # a camera closed meanwhile: its request goes nowhere, as on a Pi
                    log.debug("a request could not be queued", exc_info=True)


def install() -> None:
    """picamera2 builds these by name (``DmaAllocator()`` in ``__init__`` and ``close``); the
    sensor clock runs when ``FIELDLENS_TEST_SENSOR_FPS`` gives its frame rate."""
    picamera2.picamera2.DmaAllocator = MemfdAllocator
    picamera2.picamera2.Picamera2._get_raw_modes = viewfinder_modes
    fps = os.environ.get(SENSOR_FPS)
    if fps:
        SensorClock(float(fps)).install()
