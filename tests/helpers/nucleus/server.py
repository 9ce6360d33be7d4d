"""The test nucleus's IPC server: event-stream RPC over a Unix socket, as the Greengrass nucleus serves it.

Test-only stand-in for the one thing a container cannot have, the nucleus binary; the client on
the other end is the real ``awsiotsdk`` ``GreengrassCoreIPCClientV2`` over awscrt. What it does
on the wire follows the nucleus's own eventstreamrpc server (ServiceOperationMappingContinuationHandler,
OperationContinuationHandler):

- The first message must be CONNECT with ``:version`` 0.1.0 and ``{"authToken": SVCUID}``; the
  CONNECT_ACK carries CONNECTION_ACCEPTED for a token the nucleus handed a component, and no flag
  (then the connection is closed) for any other: the client raises ``AccessDeniedError``.
- A stream opens with an APPLICATION_MESSAGE naming its ``operation``. The response carries
  ``service-model-type: <operation>Response``; it ends the stream (TERMINATE_STREAM) unless the
  operation streams, whose events follow the response and never precede it.
- A modelled error (``UnauthorizedError``, ``InvalidArgumentsError``, ...) is an APPLICATION_ERROR
  with TERMINATE_STREAM; an unknown operation is an APPLICATION_ERROR without a model type.
- The client ends a stream with an empty TERMINATE_STREAM message; the nucleus then drops what
  the stream subscribed to. A closed connection ends all its streams.
- PING is answered with PING_RESPONSE, carrying the ping's own headers and payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers.nucleus import wire
from tests.helpers.nucleus.wire import Header, MessageType

log = logging.getLogger(__name__)

MODEL_PREFIX = "aws.greengrass#"


class IpcError(Exception):
    """A modelled error the nucleus returns: ``model`` is the shape's short name (``UnauthorizedError``)."""

    def __init__(self, model: str, message: str) -> None:
        super().__init__(message)
        self.model, self.message = model, message


@dataclass
class Call:
    """One operation request as a handler sees it: who asked, what, and the stream when the operation streams."""

    component: str
    operation: str
    request: dict[str, Any]
    stream: Stream | None


@dataclass(frozen=True)
class Operation:
    handler: Callable[[Call], dict[str, Any]]
    streaming: bool = False


class Stream:
    """An open operation stream: the nucleus pushes events on it from any thread."""

    def __init__(self, connection: _Connection, stream_id: int, operation: str, component: str) -> None:
        self.connection, self.stream_id, self.operation, self.component = connection, stream_id, operation, component
        self.on_close: list[Callable[[], None]] = []
        self.active = False  # set once the response went out: events before it are dropped, as the nucleus does
        self.closed = False
        self.events_sent = 0

    def send_event(self, model: str, body: dict[str, Any]) -> bool:
        """Queue one stream event; False (nothing sent) when the stream is closed or not yet answered."""
        if self.closed or not self.active:
            log.warning("not sending %s to %s: stream %d is not open", model, self.component, self.stream_id)
            return False
        self.events_sent += 1
        self.connection.send_application(self.stream_id, MODEL_PREFIX + model, body, terminate=False)
        return True

    def _closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        for hook in self.on_close:
            try:
                hook()
            except Exception:  # one hook's bug must not keep the others from running
                log.exception("closing stream %d of %s", self.stream_id, self.component)


@dataclass
class ConnectionRecord:
    component: str | None = None
    accepted: bool = False
    streams: dict[int, Stream] = field(default_factory=dict)


class _Connection:
    def __init__(self, server: IpcServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server, self._reader, self._writer = server, reader, writer
        self.record = ConnectionRecord()
        self._loop = asyncio.get_running_loop()

    # Writing: from the loop thread or any other, in the order asked.

    def send(self, message: wire.Message) -> None:
        data = wire.encode(message)
        self._loop.call_soon_threadsafe(self._write, data)

    def _write(self, data: bytes) -> None:
        if not self._writer.is_closing():
            self._writer.write(data)

    def send_application(self, stream_id: int, model: str, body: dict[str, Any], terminate: bool) -> None:
        headers = (Header.string(wire.CONTENT_TYPE, wire.JSON), Header.string(wire.SERVICE_MODEL_TYPE, model))
        flags = wire.TERMINATE_STREAM if terminate else 0
        payload = json.dumps(body).encode()
        self.send(wire.rpc_message(MessageType.APPLICATION_MESSAGE, flags, stream_id, headers, payload))

    def send_error(self, stream_id: int, error: IpcError) -> None:
        headers = (
            Header.string(wire.CONTENT_TYPE, wire.JSON),
            Header.string(wire.SERVICE_MODEL_TYPE, MODEL_PREFIX + error.model),
        )
        payload = json.dumps({"message": error.message}).encode()
        self.send(wire.rpc_message(MessageType.APPLICATION_ERROR, wire.TERMINATE_STREAM, stream_id, headers, payload))

    def close_stream(self, stream_id: int) -> None:
        stream = self.record.streams.pop(stream_id, None)
        if stream is not None:
            stream._closed()

    # Reading.

    async def _read(self) -> wire.RpcMessage:
        prelude = await self._reader.readexactly(wire.PRELUDE_BYTES)
        rest = await self._reader.readexactly(wire.frame_length(prelude) - wire.PRELUDE_BYTES)
        return wire.read_rpc(wire.decode(prelude + rest))

    async def run(self) -> None:
        try:
            if await self._handshake():
                while True:
                    self._dispatch(await self._read())
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the component went away
        except wire.FramingError as exc:
            log.error("closing a connection from %s: %s", self.record.component, exc)
            self.server.protocol_errors.append(str(exc))
            self.send(self._protocol_error(str(exc)))
        finally:
            for stream_id in list(self.record.streams):
                self.close_stream(stream_id)
            self.server.forget(self)
            await asyncio.sleep(0)  # let queued writes reach the transport before it closes
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()

    @staticmethod
    def _protocol_error(text: str) -> wire.Message:
        headers = (Header.string(wire.CONTENT_TYPE, wire.JSON),)
        return wire.rpc_message(MessageType.PROTOCOL_ERROR, 0, 0, headers, json.dumps({"message": text}).encode())

    async def _handshake(self) -> bool:
        first = await self._read()
        if first.type != MessageType.CONNECT or first.stream_id != 0:
            raise wire.FramingError(f"the first message must be CONNECT on stream 0, not {first.type.name}")
        version = first.message.header(wire.VERSION, wire.HeaderType.STRING)
        component = None
        if version == wire.PROTOCOL_VERSION:
            try:
                token = json.loads(first.payload or b"{}").get("authToken")
            except (ValueError, AttributeError):
                token = None
            component = self.server.authenticate(token) if isinstance(token, str) else None
        else:
            log.warning("client version %r mismatches server version %s", version, wire.PROTOCOL_VERSION)
        self.record.component, self.record.accepted = component, component is not None
        self.server.connections_seen.append(ConnectionRecord(component, component is not None))
        flags = wire.CONNECTION_ACCEPTED if component is not None else 0
        self.send(wire.rpc_message(MessageType.CONNECT_ACK, flags))
        return component is not None

    def _dispatch(self, message: wire.RpcMessage) -> None:
        if message.stream_id == 0:
            if message.type == MessageType.PING:
                headers = tuple(h for h in message.message.headers if not h.name.startswith(":"))
                self.send(wire.rpc_message(MessageType.PING_RESPONSE, 0, 0, headers, message.payload))
            elif message.type != MessageType.PING_RESPONSE:
                raise wire.FramingError(f"unexpected {message.type.name} on stream 0")
            return
        if message.type not in (MessageType.APPLICATION_MESSAGE, MessageType.APPLICATION_ERROR):
            raise wire.FramingError(f"{message.type.name} is not allowed on stream {message.stream_id}")
        stream = self.record.streams.get(message.stream_id)
        if stream is not None:
            if message.flags & wire.TERMINATE_STREAM:
                self.close_stream(message.stream_id)
            return  # none of the operations served takes stream events from the client
        if message.flags & wire.TERMINATE_STREAM:
            return  # a request that hangs up at once is not run (OperationContinuationHandler)
        self._start_stream(message)

    def _start_stream(self, message: wire.RpcMessage) -> None:
        assert self.record.component is not None
        name = message.operation or ""
        operation = self.server.operations.get(name)
        stream_id = message.stream_id
        if operation is None:
            headers = (Header.string(wire.CONTENT_TYPE, wire.JSON),)
            body = {"error": "Unsupported Operation", "message": f"{name} is an unsupported operation."}
            payload = json.dumps(body).encode()
            self.send(
                wire.rpc_message(MessageType.APPLICATION_ERROR, wire.TERMINATE_STREAM, stream_id, headers, payload)
            )
            return
        stream = Stream(self, stream_id, name, self.record.component) if operation.streaming else None
        if stream is not None:
            self.record.streams[stream_id] = stream
        try:
            request = json.loads(message.payload or b"{}")
            if not isinstance(request, dict):
                raise IpcError("InvalidArgumentsError", "the request is not a JSON object")
            response = operation.handler(Call(self.record.component, name, request, stream))
        except IpcError as error:
            self.record.streams.pop(stream_id, None)
            if stream is not None:
                stream._closed()
            self.send_error(stream_id, error)
            return
        except Exception:
            log.exception("%s failed in the test nucleus", name)
            self.record.streams.pop(stream_id, None)
            if stream is not None:
                stream._closed()
            headers = (Header.string(wire.CONTENT_TYPE, "text/plain"),)
            self.send(
                wire.rpc_message(
                    MessageType.APPLICATION_ERROR, wire.TERMINATE_STREAM, stream_id, headers, b"InternalServerError"
                )
            )
            return
        model = MODEL_PREFIX + name.removeprefix(MODEL_PREFIX) + "Response"
        self.send_application(stream_id, model, response, terminate=stream is None)
        if stream is not None:
            stream.active = True


class IpcServer:
    """The socket, the connections, and the operations (name -> handler) the nucleus serves."""

    def __init__(self, socket_path: Path, operations: dict[str, Operation], authenticate: Callable[[str], str | None]):
        self.socket_path = socket_path
        self.operations = operations
        self.authenticate = authenticate
        self.connections_seen: list[ConnectionRecord] = []  # each CONNECT, and whom it was accepted as
        self.protocol_errors: list[str] = []
        self._connections: set[_Connection] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None

    def start(self) -> None:
        ready: Future[None] = Future()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(asyncio.start_unix_server(self._accept, str(self.socket_path)))
                ready.set_result(None)
            except Exception as exc:
                ready.set_exception(exc)
                return
            loop.run_forever()
            loop.close()

        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        self._thread = threading.Thread(target=serve, name="test-nucleus-ipc", daemon=True)
        self._thread.start()
        ready.result(timeout=10)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(self, reader, writer)
        with self._lock:
            self._connections.add(connection)
        await connection.run()

    def forget(self, connection: _Connection) -> None:
        with self._lock:
            self._connections.discard(connection)

    def open_streams(self, component: str | None = None) -> list[Stream]:
        """The streams open now (of one component, or of all)."""
        with self._lock:
            connections = list(self._connections)
        return [
            stream
            for connection in connections
            for stream in list(connection.record.streams.values())
            if component is None or stream.component == component
        ]

    def connected(self, component: str) -> bool:
        with self._lock:
            return any(c.record.component == component for c in self._connections)

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            with self._lock:
                connections = list(self._connections)
            for connection in connections:
                connection._writer.close()

        asyncio.run_coroutine_threadsafe(shut(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.socket_path.unlink(missing_ok=True)
        self._loop = None
