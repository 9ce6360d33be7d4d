"""Image bytes -> the model's input tensor, as the card's InputSpec says.

Resize the shorter side to ``resize``, center-crop ``size`` x ``size``, scale 0-255 RGB by
the card's mean and std, NCHW float32. For JPEG, Pillow's draft mode lets the decoder scale
down by 1/2, 1/4 or 1/8 while decoding, which makes large photos cheap.
"""

from __future__ import annotations

import io
import threading
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from fieldlens_core.errors import FieldlensError
from fieldlens_core.model_package import InputSpec

# Decompression-bomb guard: a few-KB PNG can claim 50,000 x 50,000 pixels. A JPEG of up to
# MAX_PIXELS decodes cheaply (draft mode scales by up to 1/8 while decoding); anything decoded at
# full size (PNG) is held to MAX_DECODED_PIXELS, and at most LARGE_DECODES of those over
# LARGE_PIXELS decode at once: four 39.7 Mpx PNGs once peaked the service at 1,257 MB.
MAX_PIXELS = 40_000_000
MAX_DECODED_PIXELS = 16_000_000  # 48 MB of RGB: a 12 Mpx Pi HQ camera frame fits
LARGE_PIXELS = 4_000_000
LARGE_DECODES = threading.BoundedSemaphore(2)
FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG"}


class BadImageError(FieldlensError, ValueError):
    """The body is not an image Pillow can decode, or it is too large to decode safely."""


def decode(body: bytes, spec: InputSpec, content_type: str | None = None) -> Image.Image:
    """Decode ``body`` as the declared content type only (any of JPEG and PNG when None): a TIFF,
    BMP or GIF sent as image/jpeg is a BadImageError, not a job for another decoder."""
    formats = [FORMATS[content_type]] if content_type in FORMATS else list(FORMATS.values())
    try:
        with warnings.catch_warnings():  # Pillow's own bomb warning: MAX_PIXELS below is the guard
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(body), formats=formats)
        if image.width * image.height > MAX_PIXELS:
            raise BadImageError(f"image of {image.width}x{image.height} pixels is over {MAX_PIXELS}")
        image.draft("RGB", (spec.resize, spec.resize))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
        decoded = image.width * image.height
        if decoded > MAX_DECODED_PIXELS:
            raise BadImageError(
                f"{image.format} image of {image.width}x{image.height} pixels is over the "
                f"{MAX_DECODED_PIXELS} that decode at full size"
            )
        if decoded <= LARGE_PIXELS:
            return image.convert("RGB")
        with LARGE_DECODES:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise BadImageError(f"cannot decode image: {exc}") from None


def resize_and_crop(image: Image.Image, spec: InputSpec) -> Image.Image:
    """The center ``size`` square of the image scaled so its shorter side is ``resize``, in one resampling.

    Resampling only the source box that survives the crop costs a third less than resizing
    the whole image and cropping after, and gives the same pixels up to interpolation error.
    """
    side = min(image.size) * spec.size / spec.resize  # the crop, in source pixels
    left, top = (image.width - side) / 2, (image.height - side) / 2
    return image.resize((spec.size, spec.size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))


def to_tensor(image: Image.Image, spec: InputSpec) -> np.ndarray:
    pixels = np.asarray(image).transpose(2, 0, 1)  # HWC uint8 -> CHW view
    tensor = np.empty((1, *pixels.shape), dtype=np.float32)
    np.subtract(pixels, np.asarray(spec.mean, dtype=np.float32)[:, None, None], out=tensor[0])
    tensor[0] /= np.asarray(spec.std, dtype=np.float32)[:, None, None]
    return tensor


def image_tensor(image: Image.Image, spec: InputSpec) -> np.ndarray:
    """A decoded image (any mode) as the model's input: training views and photos go this way."""
    return to_tensor(resize_and_crop(image.convert("RGB"), spec), spec)


def preprocess(body: bytes, spec: InputSpec, content_type: str | None = None) -> np.ndarray:
    """Encoded image bytes as the model's input: what every request goes through."""
    return to_tensor(resize_and_crop(decode(body, spec, content_type), spec), spec)
