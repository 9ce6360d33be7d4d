"""The bench's reference: a hand-rolled, single-process classify handler (paho + ONNX Runtime + Pillow).

What a person would write in an afternoon without fieldlens: subscribe, and for each request
read the next photo of a folder, decode and resize it with Pillow, run ONNX Runtime (default
session options; the graph fieldlens serves in the same run, ``--variant``), take the softmax
top 5 and publish ``{"request_id", "predictions"}`` at QoS 1 with TCP_NODELAY, on the network
thread. No validation beyond JSON, no field store, no second
process, no queue. `fieldlens bench --baseline` measures fieldlens against it with the same
client in the same run (README, "Benchmark").

Only the model package's files are found through fieldlens (the ONNX file, the labels and the
input spec); everything on the request path is written out here.

    python -m fieldlens_bench.baseline_handler --broker mqtt://127.0.0.1:1883 --model-dir DIR --photos DIR \
        [--variant int8]
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import onnxruntime as ort
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from PIL import Image

from fieldlens_core.model_package import load_package

REQUESTS = "/request/classify/baseline"
RESPONSES = "/response/prediction/baseline"


class Handler:
    def __init__(self, model_dir: Path, photos: Path, variant: str = "fp32") -> None:
        package = load_package(model_dir, variant)
        self.session = ort.InferenceSession(str(package.model_path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.labels = package.labels
        spec = package.card.input
        self.size, self.resize = spec.size, spec.resize
        self.mean = np.asarray(spec.mean, np.float32).reshape(3, 1, 1)
        self.std = np.asarray(spec.std, np.float32).reshape(3, 1, 1)
        self.photos = sorted(p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
        self.next = 0

    def tensor(self, jpeg: bytes) -> np.ndarray:
        image = Image.open(io.BytesIO(jpeg)).convert("RGB")
        scale = self.resize / min(image.size)
        width, height = round(image.width * scale), round(image.height * scale)
        left, top = (width - self.size) // 2, (height - self.size) // 2
        image = image.resize((width, height), Image.Resampling.BILINEAR)
        image = image.crop((left, top, left + self.size, top + self.size))
        array = np.asarray(image, np.float32).transpose(2, 0, 1)
        return ((array - self.mean) / self.std)[None]

    def answer(self, payload: bytes) -> bytes:
        request = json.loads(payload or b"{}")
        jpeg = self.photos[self.next % len(self.photos)].read_bytes()
        self.next += 1
        logits = self.session.run(None, {self.input_name: self.tensor(jpeg)})[0][0]
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        top = np.argsort(probabilities)[::-1][:5]
        predictions = [{"label": self.labels[i], "confidence": float(probabilities[i])} for i in top]
        return json.dumps({"request_id": request.get("request_id"), "predictions": predictions}).encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="baseline-handler", description=__doc__)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--variant", choices=["fp32", "int8"], default="fp32", help="the graph fieldlens serves")
    args = parser.parse_args(argv)
    handler = Handler(args.model_dir, args.photos, args.variant)
    url = urlparse(args.broker)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fieldlens-baseline", protocol=mqtt.MQTTv5)

    def on_socket_open(client: mqtt.Client, userdata: Any, sock: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        client.subscribe(REQUESTS, qos=1)

    def on_subscribe(client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        sys.stdout.write("baseline ready\n")  # the bench waits for this line
        sys.stdout.flush()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        client.publish(RESPONSES, handler.answer(bytes(message.payload)), qos=1)

    client.on_socket_open = on_socket_open
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(url.hostname or "127.0.0.1", url.port or 1883)
    client.loop_forever()  # until the bench's SIGTERM
    return 0


if __name__ == "__main__":
    sys.exit(main())
