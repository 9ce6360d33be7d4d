"""Debian's mosquitto on 127.0.0.1 for the tests that need a real broker (the product's own launcher)."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from fieldlens_cli import brokers
from tests.helpers.waiting import wait_until


class Mosquitto(brokers.Mosquitto):
    def __init__(self, workdir: Path) -> None:
        if brokers.mosquitto_binary() is None:
            message = "mosquitto is not installed: run `make test` (it installs Debian's mosquitto)"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        super().__init__(workdir)

    def publish(self, topic: str, *args: str) -> None:
        """Publish with Debian's own client, `mosquitto_pub -q 1 -t TOPIC ARGS…` (what a user types)."""
        command = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-q", "1", "-t", topic, *args]
        subprocess.run(command, check=True, timeout=10)


@dataclass(frozen=True)
class Certificates:
    """A test PKI made with Debian's openssl: a CA, the broker's certificate for 127.0.0.1 and
    localhost, a client certificate whose CN is the MQTT identity, and an unrelated CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    """Self-signed by a stranger: as ``--ca``, the broker is not trusted; as ``--cert``, we are not."""
    other_key: Path
    client_name: str


def _openssl(*arguments: str) -> None:
    subprocess.run(["openssl", *arguments], check=True, capture_output=True, timeout=60)


def make_certificates(folder: Path, client_name: str = "itest-thing") -> Certificates:
    """Self-signed CA -> server and client certificates (RSA 2048, one day), as AWS IoT Core's are:
    the broker proves itself to the client, the client to the broker."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (Debian: apt-get install openssl)")
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in ("ca.pem", "ca.key", "other-ca.pem", "other-ca.key")}
    for ca, key, subject in (
        ("ca.pem", "ca.key", "/CN=fieldlens test CA"),
        ("other-ca.pem", "other-ca.key", "/CN=other"),
    ):
        new_key = ["-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", str(paths[key])]
        _openssl("req", "-x509", *new_key, "-days", "1", "-out", str(paths[ca]))
    extensions = folder / "server.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, subject, extra in (
        ("server", "/CN=localhost", ["-extfile", str(extensions)]),
        ("client", f"/CN={client_name}", []),
    ):
        private, request, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.pem"
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", str(private), "-out", str(request)
        )
        signer = ["-CA", str(paths["ca.pem"]), "-CAkey", str(paths["ca.key"]), "-CAcreateserial"]
        _openssl("x509", "-req", "-in", str(request), *signer, "-days", "1", "-out", str(cert), *extra)
    return Certificates(
        ca=paths["ca.pem"],
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        other_ca=paths["other-ca.pem"],
        other_key=paths["other-ca.key"],
        client_name=client_name,
    )


class TlsMosquitto:
    """mosquitto with TLS only, as AWS IoT Core is: clients must present a certificate the CA signed
    (``require_certificate``), and its CN is who they are (``use_identity_as_username``)."""

    def __init__(self, workdir: Path, certificates: Certificates) -> None:
        binary = brokers.mosquitto_binary()
        if binary is None:
            pytest.skip("mosquitto is not installed: run `make test` (it installs Debian's mosquitto)")
        self.certificates = certificates
        self.port = brokers.free_port()
        self.log_path = workdir / "mosquitto-tls.log"
        config = workdir / "mosquitto-tls.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"cafile {certificates.ca}\ncertfile {certificates.server_cert}\nkeyfile {certificates.server_key}\n"
            "require_certificate true\nuse_identity_as_username true\nallow_anonymous false\n"
            # As root mosquitto drops to its own user, which cannot read a key only we may read; as anyone
            # else the setting is ignored.
            f"user {getpass.getuser()}\n"
            "set_tcp_nodelay true\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n"
        )
        self._log: IO[str] = self.log_path.open("w")
        self._process = subprocess.Popen([binary, "-c", str(config)], stderr=self._log, stdout=self._log)
        try:
            wait_until(self._started, 10, "mosquitto with TLS")
        except AssertionError:
            self.stop()
            raise
        if self._process.poll() is not None:
            self.stop()
            raise AssertionError(f"mosquitto with TLS did not start: {self.log_path.read_text()}")

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"

    def client_flags(self, ca: Path | None = None, client_cert: bool = True) -> list[str]:
        """The CLI's flags for this broker: the right CA unless ``ca``, the client certificate unless told not."""
        flags = ["--broker", self.url, "--ca", str(ca or self.certificates.ca)]
        if client_cert:
            flags += ["--cert", str(self.certificates.client_cert), "--key", str(self.certificates.client_key)]
        return flags

    def _started(self) -> bool:
        """It has exited (the wait then says so), or it accepts connections."""
        return self._process.poll() is not None or brokers.accepting(self.port)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)
        self._log.close()
