"""Small copies of field images for the grid, made once and kept in a cache directory.

The cache key is the image's key (:attr:`Pair.key`, ``<thing>/<image_id>`` below a bucket's
mirror, where two devices' images may share an id) and the image file's size and modification
time, so a replaced image gets a new thumbnail. The page makes thumbnails on several worker
threads at once: files are written atomically (each thread its own temporary file), so
concurrent requests for the same thumbnail at worst make it twice.

Only what a device writes is decoded: JPEG (every camera source hands the store JPEG, and a
pair's image is ``<id>.jpg``), within the pixel budget the inference service holds images to
(:data:`fieldlens_core.model.MAX_PIXELS`, and :data:`~fieldlens_core.model.MAX_DECODED_PIXELS`
once draft mode has scaled it). Anything else in a pair's place (an EPS file named ``.jpg``,
for which Pillow would start Ghostscript; a PNG claiming 196 Mpx) is refused by a
:class:`ThumbnailError` naming why, before a decoder runs; the page answers it with a 4xx.
The same holds for the image itself (:func:`device_image`): the page sends only a regular file
it opened without following a link (a ``.jpg`` symlink could point anywhere on the machine),
whose header says JPEG within the budget.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from fieldlens_core.atomic import atomic_write
from fieldlens_core.errors import FieldlensError
from fieldlens_core.model import FORMATS, MAX_DECODED_PIXELS, MAX_PIXELS
from fieldlens_fielddata.directory import Pair

log = logging.getLogger(__name__)

SIZE = 224
DEVICE_FORMATS = [FORMATS["image/jpeg"]]
"""What a device writes; Pillow is told to try no other decoder."""


class ThumbnailError(FieldlensError):
    """A field image the page makes no thumbnail of; the message says why."""


class NotADeviceImageError(ThumbnailError):
    """The file is not a JPEG (whatever its name says)."""


class OverPixelBudgetError(ThumbnailError):
    """The JPEG is larger than the inference service would decode."""


class UnreadableImageError(ThumbnailError):
    """A JPEG that does not decode (truncated, corrupt)."""


def device_image(path: Path) -> bytes:
    """The bytes of a field image the page may send: a regular file opened without following a
    link, whose header says JPEG within the pixel budget (nothing is decoded). A ThumbnailError
    says why not; FileNotFoundError when it is gone."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotADeviceImageError("the image is a link, and the page sends only files a device wrote") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise NotADeviceImageError("the image is not a regular file, which is all a device writes")
        with os.fdopen(os.dup(descriptor), "rb") as file:
            data = file.read()
    finally:
        os.close(descriptor)
    with opened(io.BytesIO(data)):
        return data


@contextmanager
def opened(source: Path | io.BytesIO) -> Iterator[Image.Image]:
    """The image opened (its header read, nothing decoded), if it is a JPEG within the pixel budget."""
    try:
        with warnings.catch_warnings():  # Pillow's own bomb warning: MAX_PIXELS below is the guard
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source, formats=DEVICE_FORMATS)
    except UnidentifiedImageError:
        raise NotADeviceImageError("the image is not a JPEG, the only format a device writes") from None
    except OSError as exc:  # a JPEG whose header is cut short
        raise UnreadableImageError(f"the image cannot be read: {exc}") from None
    except Image.DecompressionBombError as exc:  # over twice Pillow's own limit: far over ours
        raise OverPixelBudgetError(
            f"the image is over the {MAX_PIXELS} pixels a device image may have: {exc}"
        ) from None
    with image:
        if image.width * image.height > MAX_PIXELS:
            raise OverPixelBudgetError(
                f"the image is {image.width}x{image.height} pixels, over the {MAX_PIXELS} a device image may have"
            )
        yield image


class Thumbnails:
    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self._cache_failing = False

    def get(self, pair: Pair) -> bytes:
        """The pair's thumbnail as JPEG bytes; a ThumbnailError when the image is not one to decode,
        FileNotFoundError when it is gone."""
        stat = pair.image_path.stat()
        name = pair.key.replace("/", "~")  # two devices' images may share an id: not their thumbnail
        cached = self.cache_dir / f"{name}-{stat.st_size}-{stat.st_mtime_ns}.jpg"
        try:
            return cached.read_bytes()
        except FileNotFoundError:
            pass
        body = _thumbnail(device_image(pair.image_path))
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(cached, body, durable=False)
        except OSError as exc:  # a full disk: the grid still shows, each thumbnail made again
            if not self._cache_failing:
                log.warning("cannot cache thumbnails in %s (%s): making them on every request", self.cache_dir, exc)
            self._cache_failing = True
        else:
            self._cache_failing = False
        return body


def _thumbnail(data: bytes) -> bytes:
    with opened(io.BytesIO(data)) as image:
        try:
            image.draft("RGB", (SIZE, SIZE))  # decode at 1/2, 1/4 or 1/8 of full size
            if image.width * image.height > MAX_DECODED_PIXELS:  # a long strip: draft cannot scale it
                raise OverPixelBudgetError(
                    f"the image is {image.width}x{image.height} pixels even decoded at reduced size, "
                    f"over the {MAX_DECODED_PIXELS} that decode at once"
                )
            small = image.convert("RGB")
        except (OSError, SyntaxError, ValueError) as exc:
            raise UnreadableImageError(f"the image cannot be read: {exc}") from None
    small.thumbnail((SIZE, SIZE))
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()
