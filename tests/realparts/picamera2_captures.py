"""Runs inside the libcamera root (libcamera_root.InRoot.run): the project's Picamera2Camera on the
real picamera2 and libcamera's virtual camera, through a whole life (open, captures, close, a
capture after close), writing what it got for the test on the host to check.

Argument: the output directory. It receives ``<name>.jpg`` (the main image), ``<name>.model.jpg``
(the model input, when there is one) and ``<name>.json`` (the frame's metadata) per capture, the
raw lores array of one request with the format libcamera settled on (``raw-lores.npy``,
``raw-lores.json``, ``raw-main.jpg``), and the log.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fieldlens_core.camera import Frame
from fieldlens_core.camera.picamera2_source import Picamera2Camera

MAIN = (640, 480)
LORES_WIDTH = 256


def save(out: Path, name: str, frame: Frame) -> None:
    (out / f"{name}.jpg").write_bytes(frame.jpeg)
    if frame.model_input is not None:
        (out / f"{name}.model.jpg").write_bytes(frame.model_input)
    (out / f"{name}.json").write_text(json.dumps(frame.metadata))


def raw_request(camera: Picamera2Camera, out: Path) -> None:
    """One request's lores array as picamera2 gives it, from the camera the adapter configured,
    to measure what decoding it in the wrong layout does."""
    device: Any = camera._camera  # the picamera2 object the adapter opened
    request = device.capture_request()
    try:
        np.save(out / "raw-lores.npy", request.make_array("lores"))
        main = io.BytesIO()
        request.save("main", main, format="jpeg")
        (out / "raw-main.jpg").write_bytes(main.getvalue())
    finally:
        request.release()
    lores = device.camera_configuration()["lores"]
    (out / "raw-lores.json").write_text(json.dumps({"format": lores["format"], "size": list(lores["size"])}))


def main(out: Path) -> None:
    logging.basicConfig(filename=out / "log.txt", level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    camera = Picamera2Camera(*MAIN, lores_width=LORES_WIDTH)
    for index in range(3):
        save(out, f"capture-{index}", camera.capture())
    raw_request(camera, out)
    camera.close()
    save(out, "after-close", camera.capture())  # opens the camera again
    camera.close()
    camera.close()  # twice is safe
    still = Picamera2Camera(*MAIN)  # the device was released: another camera object opens it
    save(out, "still", still.capture())
    still.close()
    logging.getLogger(__name__).info("all captures done")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
