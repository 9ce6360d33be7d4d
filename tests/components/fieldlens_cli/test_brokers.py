from __future__ import annotations

import logging
import shutil
import socket
import struct
import subprocess
import threading
from pathlib import Path

import pytest

from fieldlens_cli.brokers import (
    EMBEDDED_LIMIT,
    EmbeddedBroker,
    Mosquitto,
    free_port,
    local_broker,
    mosquitto_binary,
    port_is_free,
    preferred_port,
    quiet_amqtt_logging,
    uses_mosquitto,
)
from fieldlens_cli.requester import Requester
from fieldlens_core.bus.mqtt import MqttBus
from fieldlens_core.config import BrokerConfig
from fieldlens_core.errors import ExitCode, InUseError
from tests.helpers.waiting import wait_until


def test_the_embedded_broker_carries_mqtt_311_traffic_after_refusing_mqtt_5() -> None:
    with EmbeddedBroker() as broker:
        a = MqttBus(BrokerConfig(url=broker.url), "a").connect()
        b = MqttBus(BrokerConfig(url=broker.url), "b").connect()
        try:
            assert not a.mqtt5 and not b.mqtt5  # amqtt answers MQTT 5 with "unsupported protocol version"
            got = threading.Event()
            a.subscribe("/x/#", lambda message: got.set() if message.payload == b"hi" else None)
            b.publish("/x/y", b"hi")
            assert got.wait(5)
        finally:
            a.stop()
            b.stop()


def test_requester_matches_by_id_and_gives_anonymous_requests_the_first_unclaimed_response() -> None:
    from fieldlens_core.bus.memory import InMemoryBus

    bus = InMemoryBus()
    requester = Requester(bus, "/req", "/resp")
    sent: list[bytes] = []
    bus.subscribe("/req", lambda message: sent.append(message.payload))
    named = requester.send(b'{"request_id": "n1"}')
    anonymous = requester.send(b"{broken")
    bus.publish("/resp", b'{"request_id": "generated-by-device"}')
    bus.publish("/resp", b'{"request_id": "n1", "predictions": []}')
    assert named.wait(1) == {"request_id": "n1", "predictions": []}
    assert anonymous.wait(1) == {"request_id": "generated-by-device"}
    assert sent[1] == b"{broken"  # sent untouched


def test_asking_for_mqtt_5_from_a_3_1_1_broker_is_a_clear_error() -> None:
    import pytest

    from fieldlens_core.bus.mqtt import BusConnectionError

    # amqtt answers a version 5 CONNECT by closing the connection (or not at all): either is the error
    with EmbeddedBroker() as broker, pytest.raises(BusConnectionError, match="did not accept us|before accepting us"):
        MqttBus(BrokerConfig(url=broker.url, protocol="5", connect_timeout_s=0.5), "strict").connect()


# -- ports: the demo's second run ------------------------------------------------------------------


def _time_wait_on(port: int) -> bool:
    """Whether a TCP socket in TIME_WAIT (state 06 in /proc/net/tcp) has ``port`` as its local port."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "06":
            return True
    return False


def _plain_bind_refused(port: int) -> bool:
    """Whether a bind without SO_REUSEADDR fails: what the old probe did, and why it moved off 1883."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def _leave_time_wait() -> int:
    """A port whose only socket is a server-side connection in TIME_WAIT: a server (SO_REUSEADDR on its
    listener, as servers do) accepts, closes first, the client closes after, the listener goes."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port: int = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        accepted, _ = listener.accept()
        accepted.close()  # the server closes first: TIME_WAIT sits on its side, on `port`
        assert client.recv(1) == b""  # the server's FIN arrived
        client.close()
    wait_until(lambda: _time_wait_on(port), 5, f"TIME_WAIT on port {port}")
    return port


def test_a_port_held_only_by_time_wait_is_free_and_kept_as_the_preferred_port() -> None:
    port = _leave_time_wait()
    assert _plain_bind_refused(port)  # the condition is real: a probe without SO_REUSEADDR calls it busy
    assert port_is_free(port)
    assert preferred_port(port) == port


@pytest.mark.parametrize("address", ["127.0.0.1", "0.0.0.0"])
def test_a_port_a_process_listens_on_is_busy_and_another_free_one_is_taken(address: str) -> None:
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # even a listener that allows reuse
        listener.bind((address, 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not port_is_free(port)
        other = preferred_port(port)
        assert other != port and port_is_free(other)


def test_the_embedded_broker_listens_again_on_the_port_its_last_run_left_in_time_wait() -> None:
    port = free_port()
    with EmbeddedBroker(port=port) as broker:
        bus = MqttBus(BrokerConfig(url=broker.url, connect_timeout_s=5), "tw-embedded").connect()
    try:  # the broker went first, closing the client's connection: TIME_WAIT on its port
        wait_until(lambda: _time_wait_on(port), 10, f"TIME_WAIT on port {port}")
    finally:
        bus.stop()
    assert port_is_free(port)
    with EmbeddedBroker(port=port) as again:
        MqttBus(BrokerConfig(url=again.url, connect_timeout_s=5), "tw-embedded-2").connect().stop()


def test_mosquitto_listens_again_on_the_port_its_last_run_left_in_time_wait(tmp_path: Path) -> None:
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (Debian: apt-get install mosquitto)")
    first = Mosquitto(tmp_path)
    port = first.port
    bus = MqttBus(BrokerConfig(url=first.url, connect_timeout_s=5), "tw-mosquitto").connect()
    try:
        first.stop()
        wait_until(lambda: _time_wait_on(port), 10, f"TIME_WAIT on port {port}")
    finally:
        bus.stop()
    assert port_is_free(port)
    again = Mosquitto(tmp_path, port)
    try:
        MqttBus(BrokerConfig(url=again.url, connect_timeout_s=5), "tw-mosquitto-2").connect().stop()
    finally:
        again.stop()


def test_a_taken_port_given_explicitly_is_refused_as_in_use_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(InUseError) as embedded:
            EmbeddedBroker(port=port).start()
        assert embedded.value.exit_code is ExitCode.IN_USE and f"127.0.0.1:{port}" in embedded.value.one_line()
        if mosquitto_binary() is not None:
            with pytest.raises(InUseError, match=f"127.0.0.1:{port}"):
                Mosquitto(tmp_path, port)


# -- what reaches the terminal ---------------------------------------------------------------------


class _Terminal(logging.Handler):
    """Stands in for the CLI's stderr handler on the root logger: what would reach the terminal.
    (caplog would not do: pytest also attaches it to non-propagating loggers such as amqtt's.)"""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(logging.Formatter("%(levelname)s %(name)s: %(message)s").format(record))


def test_a_client_that_vanishes_mid_handshake_leaves_no_traceback() -> None:
    """An MQTT 5 CONNECT amqtt refuses, from a client that has already reset its socket: amqtt's close
    of it raised OSError in its connection task, which asyncio logged as a traceback per client."""
    mqtt5_connect = bytes.fromhex("101000044d5154540502003c00000003616263")
    root, terminal = logging.getLogger(), _Terminal()
    root.addHandler(terminal)
    try:
        with EmbeddedBroker() as broker:
            for _ in range(10):  # each one trips it, unless the broker reads it before the reset
                with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as client:
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
                    client.sendall(mqtt5_connect)
            MqttBus(BrokerConfig(url=broker.url, connect_timeout_s=5), "after").connect().stop()  # still serving
    finally:
        root.removeHandler(terminal)
    assert not [line for line in terminal.lines if "Traceback" in line or line.startswith(("WARNING", "ERROR"))]


def test_an_unexpected_error_in_the_embedded_broker_is_one_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    def fail() -> None:
        raise ValueError("something amqtt did not expect")

    with caplog.at_level(logging.WARNING), EmbeddedBroker() as broker:
        broker._loop.call_soon_threadsafe(fail)
        wait_until(lambda: any("did not expect" in r.getMessage() for r in caplog.records), 5, "the warning")
    [record] = [r for r in caplog.records if "did not expect" in r.getMessage()]
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "ValueError: something amqtt did not expect" in record.getMessage() and "\n" not in record.getMessage()


def test_amqtt_log_records_reach_the_terminal_as_one_line_and_client_noise_not_at_all() -> None:
    quiet_amqtt_logging()
    amqtt, root, terminal = logging.getLogger("amqtt.broker"), logging.getLogger(), _Terminal()
    root.addHandler(terminal)
    try:
        amqtt.warning("Invalid connection from 127.0.0.1:5555")
        amqtt.error("No data from 127.0.0.1:5556 : No more data")
        try:
            raise RuntimeError("the session store broke")
        except RuntimeError:
            amqtt.exception("Task failed and will be skipped")
    finally:
        root.removeHandler(terminal)
    assert terminal.lines == [
        "ERROR amqtt.broker: Task failed and will be skipped: RuntimeError: the session store broke"
    ]


# -- MQTT 5 clients against the demo's broker ------------------------------------------------------


def test_mosquitto_pub_v5_publishes_through_the_broker_the_demo_starts(tmp_path: Path) -> None:
    if not uses_mosquitto(prefer_mosquitto=True) or shutil.which("mosquitto_pub") is None:
        pytest.skip("Debian's mosquitto and mosquitto-clients are not installed (make test installs them)")
    with local_broker(tmp_path, free_port(), prefer_mosquitto=True) as (url, description):
        assert description.startswith("mosquitto ")
        port = str(BrokerConfig(url=url).port)
        listener = MqttBus(BrokerConfig(url=url), "v5-listener").connect()
        try:
            assert listener.mqtt5
            got = threading.Event()
            listener.subscribe("/demo/v5", lambda message: got.set() if message.payload == b"hello 5" else None)
            command = ["mosquitto_pub", "-V", "5", "-h", "127.0.0.1", "-p", port, "-q", "1", "-t", "/demo/v5"]
            result = subprocess.run([*command, "-m", "hello 5"], capture_output=True, text=True, timeout=20)
            assert result.returncode == 0, result.stderr
            assert got.wait(10)
        finally:
            listener.stop()


def test_the_embedded_brokers_limit_is_said_in_one_line() -> None:
    assert "\n" not in EMBEDDED_LIMIT and "3.1.1" in EMBEDDED_LIMIT and "mosquitto" in EMBEDDED_LIMIT
