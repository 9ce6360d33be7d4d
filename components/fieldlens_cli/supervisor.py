"""`fieldlens serve`: runs the inference service, the classifier and the uploader as child processes.

They are the same entry points Greengrass runs (``python -m fieldlens_inference.main`` and so
on), so what is tested here is what runs on a core. Each child gets its configuration as one
JSON file (``--config``), validated here first with the component's own strict model: a bad
key is reported once, by `serve`, naming the file, the component and the key, and the child
runs with exactly what was checked. The broker is not part of a component's configuration
(on a core the nucleus is the broker); it goes to the children as their broker flags.

Each child writes one ``<component> ready`` line on stdout when it serves; we start the next
only once the one before is ready, and stop all if one dies. A child's log lines (stderr) are
forwarded with its name; one that exits before it is ready ends `serve` with one line giving
the child's own reason (its last log line) and the child's exit code (the ExitCode table).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic.alias_generators import to_camel

from fieldlens_core.config import BrokerConfig, merge_config, private_socket, validate_config
from fieldlens_core.errors import ConfigurationError, ExitCode, FieldlensError
from fieldlens_core.lifecycle import CONNECTED_WORD, DISCONNECTED_WORD, READY_WORD

if TYPE_CHECKING:
    from pydantic import BaseModel

    from fieldlens_classifier.config import ClassifierConfig
    from fieldlens_inference.config import InferenceServiceConfig
    from fieldlens_uploader.config import UploaderConfig

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
REASON_WAIT_S = 5.0  # how long to wait for a dead child's last log lines

INFERENCE, CLASSIFIER, UPLOADER = "fieldlens.InferenceService", "fieldlens.Classifier", "fieldlens.Uploader"
COMPONENTS = (INFERENCE, CLASSIFIER, UPLOADER)
"""The sections of a `serve --config` file: the recipes' component names."""

GREENGRASS_KEYS = frozenset({"accessControl"})
"""Keys of a recipe's DefaultConfiguration that are the nucleus's, not the component's: a section
copied from a recipe keeps them, and serve, which has no nucleus, leaves them out."""

SHARED: tuple[tuple[tuple[str, tuple[str, ...]], tuple[str, tuple[str, ...]]], ...] = (
    ((INFERENCE, ("socket_path",)), (CLASSIFIER, ("inference", "socket_path"))),
    ((INFERENCE, ("service_name",)), (CLASSIFIER, ("inference", "service_name"))),
    ((CLASSIFIER, ("field_data_dir",)), (UPLOADER, ("field_data_dir",))),
    ((CLASSIFIER, ("thing_name",)), (UPLOADER, ("thing_name",))),
)
"""Settings two components must agree on when serve runs them together: given on one side, it is
copied to the other; given differently on both, the file is refused."""

_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ \S+: (?P<message>.*)$")
_STARTUP_FAILURE = re.compile(r"^cannot start \(exit \d+\): (?P<reason>.*)$")


class ChildFailedError(FieldlensError, RuntimeError):
    """A component process exited before it was ready, or was not ready in time; exits `serve`
    with the child's own exit code."""

    def __init__(self, message: str, hint: str | None = None, exit_code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code


@dataclass
class Child:
    name: str
    process: subprocess.Popen[str]
    ready: threading.Event = field(default_factory=threading.Event)
    exited: threading.Event = field(default_factory=threading.Event)
    connected: threading.Event = field(default_factory=threading.Event)  # set while its broker link is up
    disconnected: threading.Event = field(default_factory=threading.Event)  # set while it is down
    stderr_done: threading.Event = field(default_factory=threading.Event)
    reason: str | None = None
    """Why it could not start: its start-up failure line, else its last log line before it was ready."""

    @property
    def pid(self) -> int:
        return self.process.pid


def _pump(child: Child) -> None:
    """Watch a child's stdout for its ready line; forward everything else to our stderr."""
    assert child.process.stdout is not None
    for line in child.process.stdout:
        word = line.strip().rsplit(" ", 1)[-1]
        if word == READY_WORD:
            child.ready.set()
        elif word == CONNECTED_WORD:
            child.disconnected.clear()
            child.connected.set()
        elif word == DISCONNECTED_WORD:
            child.connected.clear()
            child.disconnected.set()
        else:
            sys.stderr.write(f"[{child.name}] {line}")
    child.process.wait()
    child.exited.set()


def _pump_stderr(child: Child) -> None:
    """Forward a child's log lines with its name, and remember the last one before it was ready.

    A component that cannot start logs one ``cannot start (exit N): reason`` line
    (lifecycle.startup_failure); that reason becomes `serve`'s own one-line error, so it is
    not forwarded as well: the person reads it once.
    """
    assert child.process.stderr is not None
    try:
        for line in child.process.stderr:
            if not child.ready.is_set() and line.strip():
                match = _LOG_LINE.match(line.strip())
                message = match.group("message") if match else line.strip()
                failure = _STARTUP_FAILURE.match(message)
                child.reason = failure.group("reason") if failure else message
                if failure:
                    continue
            sys.stderr.write(f"[{child.name}] {line}")
    finally:
        child.stderr_done.set()


def spawn(
    name: str,
    module: str,
    arguments: Sequence[str],
    env: dict[str, str] | None = None,
    cpus: tuple[int, ...] | None = None,
) -> Child:
    """Run ``python -m module arguments``; with ``cpus``, under taskset from its first instruction
    (a Pi-sized budget on a bigger machine: every thread it starts inherits the set)."""
    pinned = ["taskset", "--cpu-list", ",".join(map(str, cpus))] if cpus else []
    process = subprocess.Popen(
        [*pinned, sys.executable, "-m", module, *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    child = Child(name, process)
    threading.Thread(target=_pump, args=(child,), name=f"pump-{name}", daemon=True).start()
    threading.Thread(target=_pump_stderr, args=(child,), name=f"pump-{name}-log", daemon=True).start()
    return child


def exit_code_of(returncode: int) -> ExitCode:
    """A child's exit status as one of the table's codes (killed by a signal, or unknown: FAILED)."""
    try:
        return ExitCode(returncode) if returncode > 0 else ExitCode.FAILED
    except ValueError:
        return ExitCode.FAILED


def wait_ready(child: Child, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Block until ``child`` says ready; ChildFailedError with its reason and exit code if it exits
    first, TIMED_OUT if it takes longer than ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not child.ready.wait(0.05):
        if child.exited.is_set():
            child.stderr_done.wait(REASON_WAIT_S)
            code = child.process.returncode
            reason = child.reason or f"it exited with code {code} and logged nothing"
            raise ChildFailedError(f"{child.name} could not start: {reason}", exit_code=exit_code_of(code))
        if time.monotonic() > deadline:
            raise ChildFailedError(
                f"{child.name} was not ready within {timeout_s:.0f}s",
                "Its log lines above say what it was doing",
                ExitCode.TIMED_OUT,
            )


def stop_children(children: Sequence[Child]) -> None:
    """SIGTERM in reverse start order (classifier first, so it drains against a live service)."""
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
            try:
                child.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %ss; killing it", child.name, STOP_TIMEOUT_S)
                child.process.kill()
                child.process.wait()


@dataclass(frozen=True)
class UploadOptions:
    """Where the uploader ships field data: a bucket, or the local stand-in directory."""

    bucket: str | None = None
    prefix: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    local_bucket_dir: Path | None = None
    retry_initial_s: float | None = None


@dataclass(frozen=True)
class ComponentConfigs:
    """What `serve` runs: each component's validated configuration, and the broker they share."""

    inference: InferenceServiceConfig
    classifier: ClassifierConfig
    uploader: UploaderConfig | None  # None: no uploader process
    broker: BrokerConfig
    cpus: tuple[int, ...] | None = None  # pin the inference service and the classifier to these CPUs


def flag_layers(
    *,
    name: str | None = None,
    camera: str | None = None,
    field_data: Path | None = None,
    model_dir: Path | None = None,
    socket_path: Path | None = None,
    service_name: str | None = None,
    variant: str | None = None,
    thing_name: str | None = None,
    workers: int | None = None,
    queue_size: int | None = None,
    allow_spinning: bool | None = None,
    continuous: bool | None = None,
    fps: float | None = None,
    threads: int | None = None,
    log_level: str | None = None,
    upload: UploadOptions | None = None,
) -> dict[str, dict[str, Any]]:
    """The flags as one configuration layer per component (None: not given, the file or the default
    decides). ``fps`` 0 means as fast as inference allows (continuous.fps null)."""
    from fieldlens_core.camera.registry import parse_camera_flag

    layers: dict[str, dict[str, Any]] = {INFERENCE: {}, CLASSIFIER: {}, UPLOADER: {}}

    def put(component: str, value: Any, *path: str) -> None:
        if value is None:
            return
        target = layers[component]
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value

    put(INFERENCE, model_dir, "model_dir")
    put(INFERENCE, variant, "model_variant")
    put(INFERENCE, allow_spinning, "allow_spinning")
    put(INFERENCE, threads, "intra_op_threads")
    shared = {"socket_path": socket_path, "service_name": service_name, "field_data_dir": field_data}
    shared["thing_name"] = thing_name
    for (a, a_path), (b, b_path) in SHARED:  # a flag sets both sides: it wins over either in a file
        put(a, shared[a_path[-1]], *a_path)
        put(b, shared[b_path[-1]], *b_path)
    put(CLASSIFIER, name, "name")
    put(CLASSIFIER, parse_camera_flag(camera) if camera else None, "camera")
    put(CLASSIFIER, workers, "workers")
    put(CLASSIFIER, queue_size, "queue_size")
    put(CLASSIFIER, True if continuous else None, "continuous", "enabled")
    if fps is not None:
        layers[CLASSIFIER].setdefault("continuous", {})["fps"] = fps or None
    if upload is not None:
        put(CLASSIFIER, upload.prefix, "s3_prefix")
        for key in ("bucket", "endpoint_url", "region", "local_bucket_dir", "retry_initial_s"):
            put(UPLOADER, getattr(upload, key), key)
    for component in COMPONENTS:
        put(component, log_level, "log_level")
    return layers


def component_models() -> dict[str, type[BaseModel]]:
    """Each section's strict model (imported here: the components' configuration modules take a
    third of a second to import, which every other command would pay)."""
    from fieldlens_classifier.config import ClassifierConfig
    from fieldlens_inference.config import InferenceServiceConfig
    from fieldlens_uploader.config import UploaderConfig

    return {INFERENCE: InferenceServiceConfig, CLASSIFIER: ClassifierConfig, UPLOADER: UploaderConfig}


def configure(
    sections: Mapping[str, Any],
    flags: Mapping[str, Mapping[str, Any]],
    broker: BrokerConfig,
    *,
    upload: bool = True,
    cpus: tuple[int, ...] | None = None,
    source: str | None = None,
    default_socket: Path | None = None,
    default_model_dir: Path | None = None,
) -> ComponentConfigs:
    """Validate what serve runs: a configuration file's ``sections`` (one per component, keyed by
    its recipe name, with the recipe's keys), ``flags`` over them, the settings the components
    share tied together. ConfigurationError names ``source`` (the file), the component and
    each bad key."""
    from fieldlens_classifier.config import ClassifierConfig
    from fieldlens_inference.config import InferenceServiceConfig
    from fieldlens_uploader.config import UploaderConfig

    where = f"configuration {source}" if source else "serve's configuration"
    models = component_models()
    unknown = [name for name in sections if name not in models]
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown section {unknown[0]!r}; allowed: {', '.join(COMPONENTS)}",
            "Each section is one component's configuration, named as in its recipe (recipes/*.yaml)",
        )
    raw: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        section = sections.get(name) or {}
        if not isinstance(section, Mapping):
            raise ConfigurationError(f"{where}: section {name} must be a mapping of keys to values")
        own = {k: v for k, v in section.items() if k not in GREENGRASS_KEYS}
        raw[name] = merge_config(model, own, dict(flags.get(name, {})))
    running = [INFERENCE, CLASSIFIER, *([UPLOADER] if upload else [])]
    _tie(raw, running, where)
    if _get(raw[INFERENCE], ("socket_path",)) is None:
        socket = default_socket or private_socket(f"serve-{os.getpid()}")
        for component, path in SHARED[0]:
            _put(raw[component], path, socket)
    if default_model_dir is not None:
        raw[INFERENCE].setdefault("model_dir", default_model_dir)
    validated: dict[str, Any] = {}
    problems: list[ConfigurationError] = []
    for name in running:  # every section's mistakes at once, not one section a try
        try:
            validated[name] = validate_config(models[name], raw[name], f"{where}, {name}")
        except ConfigurationError as exc:
            problems.append(exc)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ConfigurationError("; ".join(p.message for p in problems), problems[0].hint)
    inference, classifier = validated[INFERENCE], validated[CLASSIFIER]
    uploader = validated.get(UPLOADER)
    assert isinstance(inference, InferenceServiceConfig) and isinstance(classifier, ClassifierConfig)
    assert uploader is None or isinstance(uploader, UploaderConfig)
    return ComponentConfigs(inference, classifier, uploader, broker, cpus)


def _get(section: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = section
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _put(section: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        nested = section.get(key)
        section = section.setdefault(key, {}) if nested is None else nested
    section[path[-1]] = value


def _tie(raw: dict[str, dict[str, Any]], running: Sequence[str], where: str) -> None:
    """Copy each shared setting to the side that lacks it; refuse two different values."""
    for (a, a_path), (b, b_path) in SHARED:
        if a not in running or b not in running:
            continue
        first, second = _get(raw[a], a_path), _get(raw[b], b_path)
        if first is not None and second is not None and str(first) != str(second):
            a_key, b_key = (".".join(to_camel(k) for k in path) for path in (a_path, b_path))
            raise ConfigurationError(
                f"{where}: {a} {a_key} ({first}) and {b} {b_key} ({second}) differ",
                "serve runs them together, so they must be the same: give one of them, or the flag",
            )
        if first is None and second is not None:
            _put(raw[a], a_path, second)
        elif second is None and first is not None:
            _put(raw[b], b_path, first)


@dataclass(frozen=True)
class ServeOptions:
    """The stack as the demo and the bench describe it; :meth:`configs` validates it into what runs."""

    broker: str
    name: str
    camera: str
    field_data: Path
    model_dir: Path
    socket_path: Path
    service_name: str
    variant: str = "fp32"
    thing_name: str | None = None
    workers: int | None = None
    queue_size: int | None = None
    allow_spinning: bool | None = None  # None: the component's default
    continuous: bool = False
    fps: float | None = None
    cpus: tuple[int, ...] | None = None  # pin the components to these CPUs (taskset), ORT to as many threads
    log_level: str = "INFO"
    upload: UploadOptions | None = None  # None: no uploader process

    def configs(self) -> ComponentConfigs:
        layers = flag_layers(
            name=self.name,
            camera=self.camera,
            field_data=self.field_data,
            model_dir=self.model_dir,
            socket_path=self.socket_path,
            service_name=self.service_name,
            variant=self.variant,
            thing_name=self.thing_name,
            workers=self.workers,
            queue_size=self.queue_size,
            allow_spinning=self.allow_spinning,
            continuous=self.continuous,
            fps=self.fps,
            threads=len(self.cpus) if self.cpus else None,
            log_level=self.log_level,
            upload=self.upload,
        )
        broker = validate_config(BrokerConfig, {"url": self.broker})
        return configure({}, layers, broker, upload=self.upload is not None, cpus=self.cpus)


def broker_flags(broker: BrokerConfig, client_id_suffix: str = "") -> list[str]:
    """A component's broker flags for ``broker``; ``client_id_suffix`` keeps two components that
    share one client id from kicking each other off the broker (AWS IoT Core's policy admits
    ``<thing>#anything`` besides the thing name)."""
    arguments = ["--broker", broker.url]
    for flag, value in (("--ca", broker.ca_file), ("--cert", broker.cert_file), ("--key", broker.key_file)):
        if value is not None:
            arguments += [flag, str(value)]
    if broker.client_id:
        arguments += ["--client-id", broker.client_id + client_id_suffix]
    return arguments


def _config_file(folder: Path, name: str, config: BaseModel) -> str:
    path = folder / f"{name}.json"
    path.write_text(config.model_dump_json(indent=2))
    return str(path)


def start_components(options: ServeOptions | ComponentConfigs) -> list[Child]:
    """Start the components and wait until each is ready; on failure nothing is left running.

    Each child reads its configuration file before it says ready, so the files (in a private
    temporary directory) are removed once all are up."""
    configs = options.configs() if isinstance(options, ServeOptions) else options
    children: list[Child] = []
    try:
        with tempfile.TemporaryDirectory(prefix="fieldlens-serve-") as scratch:
            folder, cpus = Path(scratch), configs.cpus
            inference = ["--config", _config_file(folder, "inference", configs.inference)]
            children.append(spawn("inference", "fieldlens_inference.main", inference, cpus=cpus))
            wait_ready(children[-1])
            classifier = ["--config", _config_file(folder, "classifier", configs.classifier)]
            classifier += broker_flags(configs.broker)
            children.append(spawn("classifier", "fieldlens_classifier.main", classifier, cpus=cpus))
            wait_ready(children[-1])
            if configs.uploader is not None:
                uploader = ["--config", _config_file(folder, "uploader", configs.uploader)]
                uploader += broker_flags(configs.broker, "#uploader")
                children.append(spawn("uploader", "fieldlens_uploader.main", uploader))
                wait_ready(children[-1])
    except BaseException:
        stop_children(children)
        raise
    return children


def wait_until_signal_or_exit(
    children: Sequence[Child], max_disconnected_s: float = 60.0, on_watching: Callable[[], None] | None = None
) -> str:
    """Block until SIGINT/SIGTERM, until a child exits, or until a child has been disconnected from
    its broker for ``max_disconnected_s`` (alive but deaf); returns what happened.

    ``on_watching`` runs once the signal handlers are in place: announce readiness there, or a
    SIGTERM sent on reading the announcement can arrive while the default handler still kills."""
    done = threading.Event()
    reason = ["signal"]

    def on_signal(signum: int, frame: object) -> None:
        reason[0] = signal.Signals(signum).name
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    for child in children:

        def watch(c: Child = child) -> None:
            c.exited.wait()
            reason[0] = f"{c.name} exited with code {c.process.returncode}"
            done.set()

        def watch_link(c: Child = child) -> None:
            while not done.is_set():
                c.disconnected.wait()
                if not c.connected.wait(max_disconnected_s) and c.disconnected.is_set():
                    reason[0] = f"{c.name} has been disconnected from its broker for {max_disconnected_s:g} s"
                    done.set()
                    return

        threading.Thread(target=watch, daemon=True).start()
        threading.Thread(target=watch_link, daemon=True).start()
    if on_watching is not None:
        on_watching()
    done.wait()
    return reason[0]
