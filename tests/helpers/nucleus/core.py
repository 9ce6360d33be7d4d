"""A Greengrass core for tests: a directory laid out like ``/greengrass/v2``, the test nucleus on its
``ipc.socket``, and each recipe's lifecycle run as the nucleus runs it.

From a ``fieldlens build`` output (``artifacts/<name>/<version>/`` and ``recipes/<name>-<version>.yaml``),
what the nucleus does with a deployment, in the nucleus's own terms (KernelConfigResolver,
GenericExternalService, Lifecycle, ShellRunner, UnixExec):

- the manifest for this platform (``linux``; ``amd64`` or ``aarch64``) is chosen, and its
  artifacts copied to ``packages/artifacts/<name>/<version>/``; a ``ZIP`` artifact is also
  unpacked to ``packages/artifacts-unarchived/<name>/<version>/<archive name without .zip>/``;
- configuration: the recipe's ``DefaultConfiguration`` with the deployment's merge over it;
  recipe variables in it are replaced only with ``interpolate_component_configuration``;
- the lifecycle's recipe variables are replaced: ``{artifacts:path}``, ``{artifacts:decompressedPath}``,
  ``{work:path}``, ``{kernel:rootPath}``, ``{iot:thingName}``, ``{configuration:/json/pointer}``
  (text for a value, compact JSON for an object), and ``<dependency>:<namespace>:<key>`` for a
  direct dependency only; anything else is left as written;
- each step runs as ``sh -c`` in ``{work:path}``, with the nucleus's environment (``SVCUID``,
  ``AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT``, ``AWS_IOT_THING_NAME``, ``AWS_REGION``,
  ``AWS_DEFAULT_REGION``, ``GG_ROOT_CA_PATH``, ``AWS_CONTAINER_AUTHORIZATION_TOKEN``), then the
  lifecycle's ``Setenv``, then the step's own; ``Skipif`` (``onpath``/``exists``, ``!``) is honoured;
- Install runs first (all components at once), in the foreground, within its ``Timeout``
  (default 120 s); a component starts once every dependency (HARD or SOFT) is RUNNING or
  FINISHED; Startup must exit 0 within its ``Timeout`` (default 120 s) and the component is then
  RUNNING; a Run process is RUNNING as soon as it starts (with ``Timeout`` only if given), FINISHED
  when it exits 0, ERRORED otherwise;
- stopping a component runs its ``Shutdown`` step, then sends SIGTERM to its processes (the shell
  and what it started), waits 5 seconds for them and sends SIGKILL to what is left; stdout and
  stderr go to ``logs/<name>.log``.

With ``chroot`` the core is another machine's: its root lies inside that directory (an arm64
Debian root, say), the manifest for ``architecture`` is chosen, every path a step sees (recipe
variables, the IPC socket) is written as the chroot sees it, ``Skipif`` looks there, and each step
runs as ``chroot DIR env -C {work:path} sh -c SCRIPT``; the test nucleus still serves its socket
from this side, through the same file.

Not modelled (the nucleus would, a test here does not need it): retries of an ERRORED component
(the nucleus tries three times, then BROKEN), ``RequiresPrivilege`` (it runs as this user),
``Bootstrap``, ``Recover``, and component users (``ggc_user``).
"""

from __future__ import annotations

import contextlib
import copy
import enum
import fcntl
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import yaml

from tests.helpers.nucleus.nucleus import DeploymentResult, TestNucleus, merge

SOCKET_ENV = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"
DEFAULT_TIMEOUTS_S = {"install": 120.0, "startup": 120.0, "shutdown": 15.0}
GRACEFUL_STOP_S = 5.0  # UnixExec: SIGTERM, then this long, then SIGKILL
PROVIDED = frozenset({"aws.greengrass.Nucleus", "aws.greengrass.TokenExchangeService"})
"""Components a core has without this harness running them (the nucleus's plugins). The token
exchange service is only a name here: no credentials are served, so a component may not need any."""

_SAME = re.compile(r"\{([.\w-]+):([^:}]*)\}")
_CROSS = re.compile(r"\{([.\w-]+):([.\w-]+):([^:}]*)\}")


class State(enum.StrEnum):
    NEW = "NEW"
    INSTALLED = "INSTALLED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    FINISHED = "FINISHED"
    ERRORED = "ERRORED"


def _lower(value: Any) -> Any:
    """Recipe keys are case-insensitive to the nucleus."""
    return {str(k).lower(): v for k, v in value.items()} if isinstance(value, dict) else value


def nucleus_architecture() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "aarch64", "arm64": "aarch64"}.get(machine, machine)


@dataclass
class Recipe:
    name: str
    version: str
    dependencies: dict[str, str]  # name -> HARD | SOFT
    default_configuration: dict[str, Any]
    lifecycle: dict[str, Any]  # lower-cased keys
    artifacts: list[dict[str, Any]]

    @classmethod
    def load(cls, path: Path, architecture: str | None = None) -> Recipe:
        """The recipe's manifest for linux and ``architecture`` (default: this machine's, as the nucleus's)."""
        architecture = architecture or nucleus_architecture()
        document = yaml.safe_load(path.read_text())
        manifest = next(
            (
                m
                for m in document["Manifests"]
                if _lower(m.get("Platform", {})).get("os", "linux") in ("linux", "*")
                and _lower(m.get("Platform", {})).get("architecture", architecture) in (architecture, "*")
            ),
            None,
        )
        if manifest is None:
            raise ValueError(f"{path.name}: no manifest for linux/{architecture}")
        dependencies = {
            name: str(_lower(spec).get("dependencytype", "HARD")).upper()
            for name, spec in (document.get("ComponentDependencies") or {}).items()
        }
        configuration = _lower(document.get("ComponentConfiguration") or {}).get("defaultconfiguration") or {}
        return cls(
            document["ComponentName"],
            str(document["ComponentVersion"]),
            dependencies,
            copy.deepcopy(configuration),
            _lower(manifest.get("Lifecycle") or {}),
            [_lower(a) for a in manifest.get("Artifacts") or []],
        )


@dataclass
class Component:
    recipe: Recipe
    token: str
    lifecycle: dict[str, Any]  # interpolated
    state: State = State.NEW
    status: str = ""  # why it is ERRORED (INSTALL_TIMEOUT, STARTUP_ERROR, RUN_ERROR, ...)
    process: subprocess.Popen[bytes] | None = None
    exit_code: int | None = None
    killed: bool = False  # stopping needed SIGKILL
    history: list[State] = field(default_factory=list)


@contextlib.contextmanager
def persistent_root(cache: Path) -> Iterator[Path]:
    """A ``/greengrass/v2`` that outlives the test session, as a device's does across restarts.

    Only the components' work directories' ``venv`` survive: the Install steps run again every
    session, as the nucleus runs them at every start, but find their venv, so pip downloads
    nothing the second time. Everything else is cleared. Held under a lock: one session at a time.
    """
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        root = cache / "v2"
        if root.exists():
            for entry in root.iterdir():
                if entry.name != "work":
                    _remove(entry)
            for work in (root / "work").glob("*"):
                for entry in work.iterdir():
                    if entry.name != "venv":
                        _remove(entry)
        root.mkdir(exist_ok=True)
        yield root


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def nucleus_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the nucleus itself runs with (a service's, not this test's): PATH without this
    test's virtualenv, so ``python3`` is the system's as on a device, and the machine's pip settings."""
    virtualenvs = {os.environ.get("VIRTUAL_ENV"), sys.prefix if sys.prefix != sys.base_prefix else None} - {None}
    path = [
        p
        for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
        if not any(p.startswith(str(v)) for v in virtualenvs)
    ]
    keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "LC_ALL", "TMPDIR") or k.startswith("PIP_")}
    return {**keep, "PATH": os.pathsep.join(path), **(extra or {})}


class GreengrassCore:
    """A core device: the root, the test nucleus, and the components deployed to it."""

    def __init__(
        self,
        root: Path,
        thing_name: str = "coop-7",
        region: str = "eu-west-1",
        interpolate_component_configuration: bool = False,
        environment: dict[str, str] | None = None,
        provided: frozenset[str] = PROVIDED,
        chroot: Path | None = None,
        architecture: str | None = None,
    ) -> None:
        """``chroot``: run every step inside that root directory, of which ``root`` must be a part (see the
        module's docstring); ``architecture``: the manifest to choose, ``amd64`` or ``aarch64``."""
        self.root = root.resolve()
        self.chroot = chroot.resolve() if chroot is not None else None
        if self.chroot is not None and not self.root.is_relative_to(self.chroot):
            raise ValueError(f"the core's root {self.root} is not inside the chroot {self.chroot}")
        self.architecture = architecture or nucleus_architecture()
        self.thing_name, self.region = thing_name, region
        self.interpolate_component_configuration = interpolate_component_configuration
        self.environment = environment if environment is not None else nucleus_environment()
        self.provided = provided
        self.nucleus = TestNucleus(self.root / "ipc.socket")
        self.components: dict[str, Component] = {}
        self._changed = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def __enter__(self) -> GreengrassCore:
        for directory in ("packages/artifacts", "packages/artifacts-unarchived", "work", "logs"):
            (self.root / directory).mkdir(parents=True, exist_ok=True)
        self.nucleus.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
        self.nucleus.stop()

    # Paths, as NucleusPaths names them.

    def artifacts_path(self, name: str, version: str) -> Path:
        return self.root / "packages" / "artifacts" / name / version

    def decompressed_path(self, name: str, version: str) -> Path:
        return self.root / "packages" / "artifacts-unarchived" / name / version

    def work_path(self, name: str) -> Path:
        return self.root / "work" / name

    def log_path(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def visible(self, path: Path) -> str:
        """``path`` (on this machine) as the steps see it: the same, or inside the chroot."""
        return str(path) if self.chroot is None else "/" + str(path.relative_to(self.chroot))

    # Deployment.

    def deploy(
        self,
        build: Path,
        names: Sequence[str],
        merges: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """Deploy ``names`` (and their dependencies) from a ``fieldlens build`` output, then start them.

        Returns once every component's lifecycle thread runs; wait with :meth:`wait_for_state`.
        """
        recipes = self._resolve(build, names)
        merges = merges or {}
        for recipe in recipes.values():
            self._install_artifacts(build, recipe)
        configurations = {name: self._configuration(recipe, merges.get(name, {})) for name, recipe in recipes.items()}
        for name, recipe in recipes.items():
            token = self.nucleus.add_component(name, configurations[name])
            lifecycle = self._interpolate(recipe.lifecycle, recipe, recipes, configurations)
            self.components[name] = Component(recipe, token, lifecycle)
            self.work_path(name).mkdir(parents=True, exist_ok=True, mode=0o700)
            self.work_path(name).chmod(0o700)
        for name in recipes:
            thread = threading.Thread(target=self._life, args=(name,), name=f"lifecycle-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _resolve(self, build: Path, names: Sequence[str]) -> dict[str, Recipe]:
        recipes: dict[str, Recipe] = {}
        pending = list(names)
        while pending:
            name = pending.pop()
            if name in recipes or name in self.provided:
                continue
            paths = sorted((build / "recipes").glob(f"{name}-*.yaml"))
            if len(paths) != 1:
                raise FileNotFoundError(f"{build}/recipes has {len(paths)} recipes for {name}, not one")
            recipes[name] = Recipe.load(paths[0], self.architecture)
            pending.extend(recipes[name].dependencies)
        return recipes

    def _install_artifacts(self, build: Path, recipe: Recipe) -> None:
        target = self.artifacts_path(recipe.name, recipe.version)
        unarchived = self.decompressed_path(recipe.name, recipe.version)
        for directory in (target, unarchived):
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
        for artifact in recipe.artifacts:
            file_name = str(artifact["uri"]).rsplit("/", 1)[-1]
            source = build / "artifacts" / recipe.name / recipe.version / file_name
            shutil.copy2(source, target / file_name)
            if str(artifact.get("unarchive", "NONE")).upper() == "ZIP":
                with zipfile.ZipFile(source) as archive:
                    archive.extractall(unarchived / Path(file_name).stem)

    def _configuration(self, recipe: Recipe, update: dict[str, Any]) -> dict[str, Any]:
        configuration = merge(recipe.default_configuration, update)
        if self.interpolate_component_configuration:
            interpolated: dict[str, Any] = self._system(configuration, recipe)
            return interpolated
        return configuration

    def _system_value(self, name: str, version: str, namespace: str, key: str) -> str | None:
        values = {
            ("artifacts", "path"): lambda: self.visible(self.artifacts_path(name, version)),
            ("artifacts", "decompressedPath"): lambda: self.visible(self.decompressed_path(name, version)),
            ("work", "path"): lambda: self.visible(self.work_path(name)),
            ("kernel", "rootPath"): lambda: self.visible(self.root),
            ("iot", "thingName"): lambda: self.thing_name,
        }
        value = values.get((namespace, key))
        return value() if value else None

    def _system(self, value: Any, recipe: Recipe) -> Any:
        """Recipe variables of the system namespaces only (what interpolateComponentConfiguration does)."""
        if isinstance(value, dict):
            return {k: self._system(v, recipe) for k, v in value.items()}
        if isinstance(value, list):
            return [self._system(v, recipe) for v in value]
        if not isinstance(value, str):
            return value

        def same(match: re.Match[str]) -> str:
            found = self._system_value(recipe.name, recipe.version, match.group(1), match.group(2))
            return found if found is not None else match.group(0)

        return _SAME.sub(same, value)

    def _interpolate(
        self, value: Any, recipe: Recipe, recipes: dict[str, Recipe], configurations: dict[str, dict[str, Any]]
    ) -> Any:
        if isinstance(value, dict):
            return {k: self._interpolate(v, recipe, recipes, configurations) for k, v in value.items()}
        if isinstance(value, list):
            return [self._interpolate(v, recipe, recipes, configurations) for v in value]
        if not isinstance(value, str):
            return value

        def lookup(name: str, namespace: str, key: str) -> str | None:
            if namespace == "configuration":
                return _pointer(configurations.get(name, {}), key)
            target = recipes.get(name)
            return self._system_value(name, target.version, namespace, key) if target else None

        def same(match: re.Match[str]) -> str:
            found = lookup(recipe.name, match.group(1), match.group(2))
            return found if found is not None else match.group(0)

        def cross(match: re.Match[str]) -> str:
            if match.group(1) not in recipe.dependencies:
                return match.group(0)  # only a direct dependency's variables are interpolated
            found = lookup(match.group(1), match.group(2), match.group(3))
            return found if found is not None else match.group(0)

        return _CROSS.sub(cross, _SAME.sub(same, value))

    # Running.

    def _set(self, component: Component, state: State, status: str = "") -> None:
        with self._changed:
            component.state, component.status = state, status or component.status
            component.history.append(state)
            self._changed.notify_all()
        self._log(component.recipe.name, "lifecycle", f"state {state} {status}".rstrip())

    def _log(self, name: str, stream: str, line: str) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        with self.log_path(name).open("a") as out:
            out.write(f"{stamp} [{stream}] {name}: {line}\n")

    def _step(self, name: str, step: str) -> tuple[str, dict[str, str], float | None] | None:
        """The script, environment and timeout of one lifecycle step; None when absent or skipped."""
        component = self.components[name]
        node = component.lifecycle.get(step)
        if node is None:
            return None
        if isinstance(node, str):
            node = {"script": node}
        node = _lower(node)
        if "skipif" in node and _skip(str(node["skipif"]), self.chroot, self.environment.get("PATH")):
            self._log(name, "lifecycle", f"{step} skipped: {node['skipif']}")
            return None
        environment = {
            **self.environment,
            "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH": self.visible(self.nucleus.socket_path),
            SOCKET_ENV: self.visible(self.nucleus.socket_path),
            "AWS_IOT_THING_NAME": self.thing_name,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "SVCUID": component.token,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": component.token,
            "GG_ROOT_CA_PATH": "",
        }
        for setenv in (component.lifecycle.get("setenv"), node.get("setenv")):
            if isinstance(setenv, dict):
                environment.update({str(k): _text(v) for k, v in setenv.items()})
        timeout = node.get("timeout", DEFAULT_TIMEOUTS_S.get(step))
        return str(node["script"]), environment, float(timeout) if timeout is not None else None

    def _spawn(self, name: str, step: str, script: str, environment: dict[str, str]) -> subprocess.Popen[bytes]:
        self._log(name, "lifecycle", f"{step}: {script}")
        command = ["sh", "-c", script]
        if self.chroot is not None:  # chroot(1) starts in its /: env -C puts the step in its work directory
            inside = self.visible(self.work_path(name))
            command = [shutil.which("chroot") or "chroot", str(self.chroot), "/usr/bin/env", "-C", inside, *command]
        process = subprocess.Popen(
            command,
            cwd=self.work_path(name),
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: stopping reaches its children
        )
        for pipe, stream in ((process.stdout, "stdout"), (process.stderr, "stderr")):
            threading.Thread(target=self._pump, args=(name, pipe, stream), daemon=True).start()
        return process

    def _pump(self, name: str, pipe: IO[bytes] | None, stream: str) -> None:
        assert pipe is not None
        for raw in pipe:
            self._log(name, stream, raw.decode(errors="replace").rstrip("\n"))

    def _foreground(self, name: str, step: str) -> str | None:
        """Run a step to its end; None when it succeeded (or is absent), else the status code naming the failure."""
        found = self._step(name, step)
        if found is None:
            return None
        process = self._spawn(name, step, found[0], found[1])
        self.components[name].process = process
        try:
            code = process.wait(timeout=found[2])
        except subprocess.TimeoutExpired:
            _terminate(process)
            return f"{step.upper()}_TIMEOUT"
        finally:
            self.components[name].process = None
        return None if code == 0 else f"{step.upper()}_ERROR (exit {code})"

    def _halted(self, component: Component) -> bool:
        return self._stopping or component.state in (State.STOPPING, State.FINISHED)

    def _life(self, name: str) -> None:
        component = self.components[name]
        failure = self._foreground(name, "install")
        if self._halted(component):
            return
        if failure:
            self._set(component, State.ERRORED, failure)
            return
        self._set(component, State.INSTALLED)
        if not self._dependencies_ready(component):
            return
        self._set(component, State.STARTING)
        if "startup" in component.lifecycle:
            failure = self._foreground(name, "startup")
            if not self._halted(component):
                self._set(component, State.ERRORED if failure else State.RUNNING, failure or "")
            return
        found = self._step(name, "run")
        if found is None:
            self._set(component, State.FINISHED)
            return
        script, environment, timeout = found
        with self._changed:
            if self._halted(component):
                return
            process = component.process = self._spawn(name, "run", script, environment)
        self._set(component, State.RUNNING)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _terminate(process)
            self._set(component, State.ERRORED, "RUN_TIMEOUT")
            return
        component.exit_code = code
        if self._halted(component):
            return  # stop() reports the end
        self._set(
            component, State.FINISHED if code == 0 else State.ERRORED, "" if code == 0 else f"RUN_ERROR (exit {code})"
        )

    def _dependencies_ready(self, component: Component) -> bool:
        """Block until every dependency is RUNNING or FINISHED; False if one failed (then this one never starts)."""
        waiting = [d for d in component.recipe.dependencies if d not in self.provided]
        with self._changed:
            while True:
                states = {d: self.components[d].state for d in waiting}
                if any(s == State.ERRORED for s in states.values()) or self._stopping:
                    self._log(component.recipe.name, "lifecycle", f"not starting: dependencies {states}")
                    return False
                if all(s in (State.RUNNING, State.FINISHED) for s in states.values()):
                    return True
                self._changed.wait()

    def wait_for_state(self, name: str, *states: State, timeout_s: float = 300.0) -> State:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self.components[name].state not in states:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{name} is {self.components[name].state} {self.components[name].status}, not "
                        f"{'/'.join(states)} after {timeout_s}s; its log:\n{self.log(name)[-4000:]}"
                    )
                self._changed.wait(left)
            return self.components[name].state

    def wait_for_log(self, name: str, text: str, timeout_s: float = 120.0) -> None:
        """Until ``text`` is in the component's log (its stdout and stderr, as the nucleus logs them)."""
        deadline = time.monotonic() + timeout_s
        pause = threading.Event()
        while text not in self.log(name):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in {name}'s log after {timeout_s}s:\n{self.log(name)[-4000:]}")
            if self.components[name].state == State.ERRORED:
                raise AssertionError(f"{name} is ERRORED {self.components[name].status}:\n{self.log(name)[-4000:]}")
            pause.wait(0.05)

    def log(self, name: str) -> str:
        path = self.log_path(name)
        return path.read_text() if path.exists() else ""

    def deploy_configuration(self, name: str, update: dict[str, Any], timeout_s: float = 60.0) -> DeploymentResult:
        """A deployment that merges ``update`` into ``name``'s configuration (validated by it over IPC first)."""
        recipe = self.components[name].recipe
        proposed = merge(self.nucleus.configuration(name), update)
        if self.interpolate_component_configuration:
            proposed = self._system(proposed, recipe)
        return self.nucleus.propose(name, proposed, timeout_s)

    def stop(self, name: str) -> Component:
        """Stop a component as the nucleus does; returns it, with ``exit_code`` and ``killed``."""
        component = self.components[name]
        with self._changed:
            if component.state in (State.FINISHED, State.ERRORED, State.NEW):
                return component
            running = component.process
            component.state = State.STOPPING
            self._changed.notify_all()
        shutdown = self._step(name, "shutdown")
        if shutdown is not None:
            process = self._spawn(name, "shutdown", shutdown[0], shutdown[1])
            try:
                process.wait(timeout=shutdown[2])
            except subprocess.TimeoutExpired:
                _terminate(process)
        if running is not None:
            component.killed = _terminate(running)
            component.exit_code = running.returncode
        self._set(component, State.FINISHED)
        return component

    def stop_all(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        for name in reversed(list(self.components)):  # dependants first
            self.stop(name)
        for thread in self._threads:
            thread.join(timeout=GRACEFUL_STOP_S * 2)


def live_members(group: int) -> list[int]:
    """The processes of a process group that have not exited (zombies are not counted: init reaps them)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended while we looked
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def _terminate(process: subprocess.Popen[bytes]) -> bool:
    """SIGTERM to the step's whole process group, GRACEFUL_STOP_S for all of it to exit, then SIGKILL to what
    is left; True if SIGKILL was needed.

    The whole group, not the shell: ``sh -c`` (dash) forks the command rather than exec it, so the
    shell dies of the SIGTERM at once while the component is still shutting down; UnixExec likewise
    signals every child and waits for each.
    """
    group = process.pid
    if process.poll() is not None and not live_members(group):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + GRACEFUL_STOP_S
    pause = threading.Event()
    while live_members(group) and time.monotonic() < deadline:
        pause.wait(0.05)
    if not live_members(group):
        process.wait()
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    process.wait()
    while live_members(group) and time.monotonic() < deadline + 10:
        pause.wait(0.05)
    return True


def _skip(expression: str, chroot: Path | None = None, path: str | None = None) -> bool:
    """Whether a ``Skipif`` holds, looked up on this machine or, given ``chroot``, inside it (``onpath``
    then searches the steps' ``path`` there)."""
    expression = expression.strip()
    negate = expression.startswith("!")
    match = re.fullmatch(r"(onpath|exists)\s+(.+)", expression.lstrip("!").strip())
    if match is None:
        raise ValueError(f"invalid skipif {expression!r}: onpath NAME or exists PATH")
    if chroot is None:
        found = (
            shutil.which(match.group(2)) is not None
            if match.group(1) == "onpath"
            else Path(match.group(2)).expanduser().exists()
        )
    elif match.group(1) == "onpath":  # the steps' PATH, each folder inside the chroot
        search = os.pathsep.join(str(chroot / d.lstrip("/")) for d in (path or os.defpath).split(os.pathsep) if d)
        found = shutil.which(match.group(2), path=search) is not None
    else:
        found = (chroot / match.group(2).lstrip("/")).exists()
    return found != negate


def _text(value: Any) -> str:
    """A value as the nucleus writes it into a script or an environment variable (Coerce.toString / asText)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return "" if value is None else str(value)


def _pointer(configuration: dict[str, Any], pointer: str) -> str | None:
    """``{configuration:/a/b}``: RFC 6901, '' is the whole document; None when nothing is there."""
    node: Any = configuration
    if pointer:
        for part in pointer.lstrip("/").split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
    return _text(node)
