from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fieldlens_core.model_package import InputSpec
from fieldlens_core.preprocess import BadImageError, preprocess
from tests.helpers.images import solid_jpeg, solid_png

SPEC = InputSpec(size=32, resize=36, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))


def test_tensor_shape_scaling_and_channel_order() -> None:
    tensor = preprocess(solid_png((255, 0, 127)), SPEC)
    assert tensor.shape == (1, 3, 32, 32) and tensor.dtype == np.float32
    assert tensor[0, :, 5, 5] == pytest.approx([(255 - 127) / 128, -127 / 128, 0.0], abs=1e-6)


def test_wide_images_are_center_cropped() -> None:
    image = Image.new("RGB", (300, 100), (0, 0, 0))
    image.paste((255, 255, 255), (100, 0, 200, 100))  # white middle third
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    tensor = preprocess(buffer.getvalue(), SPEC)
    assert tensor.min() > 0.9  # only the white middle survives the crop


def test_large_jpegs_decode_through_draft_mode() -> None:
    tensor = preprocess(solid_jpeg((10, 200, 10), size=(2000, 1500)), SPEC)
    assert tensor.shape == (1, 3, 32, 32)
    assert tensor[0, 1].mean() > 0.5


@pytest.mark.parametrize("body", [b"", b"hello", b"\xff\xd8\xff\xe0garbage", solid_jpeg((1, 2, 3))[:40]])
def test_corrupt_images_are_bad_image_errors(body: bytes) -> None:
    with pytest.raises(BadImageError):
        preprocess(body, SPEC)


def test_decompression_bombs_are_refused() -> None:
    buffer = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buffer, format="PNG")  # 100 MP, a few KB
    with pytest.raises(BadImageError, match="pixels"):
        preprocess(buffer.getvalue(), SPEC)


def test_a_large_png_is_refused_before_it_is_decoded() -> None:
    """A PNG decodes at full size: 39.7 Mpx ones once peaked the service at 1,257 MB."""
    import io

    from PIL import Image

    from fieldlens_core.preprocess import MAX_DECODED_PIXELS, BadImageError

    buffer = io.BytesIO()
    Image.new("L", (5000, 4000)).save(buffer, format="PNG")  # 20 Mpx, a few KB compressed
    with pytest.raises(BadImageError, match=str(MAX_DECODED_PIXELS)):
        preprocess(buffer.getvalue(), SPEC, "image/png")


def test_a_large_jpeg_decodes_scaled_down_in_draft_mode() -> None:
    from fieldlens_core.preprocess import decode

    image = decode(solid_jpeg((10, 200, 10), size=(6000, 4000)), SPEC, "image/jpeg")  # 24 Mpx, a Pi HQ frame is 12
    assert image.width * image.height <= 1_000_000
