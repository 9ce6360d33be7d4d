"""The test core runs a recipe's lifecycle as the nucleus does: recipe variables, Setenv, the nucleus's
environment, Install and Startup within their timeouts, dependencies, Skipif, and stopping.

Small recipes of this test's own, whose scripts are `sh` one-liners, so each case runs in a second;
the real recipes run in test_greengrass_wire_recipes.py.
"""

from __future__ import annotations

import io
import shlex
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.nucleus import core
from tests.helpers.nucleus.core import GreengrassCore, State
from tests.helpers.waiting import wait_until


def recipe(name: str, lifecycle: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": "1.0.0",
        **fields,
        "Manifests": [
            {"Platform": {"os": "linux", "architecture": "aarch64"}, "Lifecycle": {"Run": "exit 9"}},
            {
                "Platform": {"os": "linux", "architecture": core.nucleus_architecture()},
                "Lifecycle": lifecycle,
                "Artifacts": fields.pop("artifacts", []),
            },
        ],
    }


def write_build(build: Path, *recipes: dict[str, Any], artifacts: dict[str, dict[str, bytes]] | None = None) -> Path:
    """A `fieldlens build`-shaped directory: recipes/<name>-<version>.yaml, artifacts/<name>/<version>/<file>."""
    (build / "recipes").mkdir(parents=True, exist_ok=True)
    for document in recipes:
        name, version = document["ComponentName"], document["ComponentVersion"]
        (build / "recipes" / f"{name}-{version}.yaml").write_text(yaml.safe_dump(document))
        for file_name, data in (artifacts or {}).get(name, {}).items():
            target = build / "artifacts" / name / version
            target.mkdir(parents=True, exist_ok=True)
            (target / file_name).write_bytes(data)
    return build


def zipped(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


@pytest.fixture
def device(socket_dir: Path) -> Iterator[GreengrassCore]:
    """A core whose root is short enough for its ipc.socket (Unix socket paths are limited to 107 bytes)."""
    with GreengrassCore(socket_dir / "v2", thing_name="coop-7", region="eu-west-1") as running:
        yield running


def test_recipe_variables_setenv_and_the_nucleus_environment_reach_the_script(
    device: GreengrassCore, tmp_path: Path
) -> None:
    seen = [
        "{artifacts:path}",
        "{artifacts:decompressedPath}",
        "{work:path}",
        "{kernel:rootPath}",
        "{iot:thingName}",
        "{configuration:/name}",
        "{configuration:/nested}",
        "{configuration:/flag}",
        "{configuration:/missing}",
        "{fieldlens.Base:work:path}",
        "{fieldlens.Base:artifacts:decompressedPath}",
        "{fieldlens.Base:configuration:/port}",
        "{fieldlens.Other:work:path}",
        "{unknown:thing}",
    ]
    script = f"printf '%s\\n' {' '.join(shlex.quote(s) for s in seen)} > seen.txt && env > env.txt && pwd > pwd.txt"
    base = recipe(
        "fieldlens.Base",
        {"Run": "exit 0"},
        ComponentConfiguration={"DefaultConfiguration": {"port": 8080}},
        artifacts=[{"URI": "s3://bucket/fieldlens.Base/1.0.0/base.zip", "Unarchive": "ZIP"}],
    )
    other = recipe("fieldlens.Other", {"Run": "exit 0"})
    user = recipe(
        "fieldlens.User",
        {
            "Setenv": {"FROM_LIFECYCLE": "lifecycle", "OVERRIDDEN": "lifecycle"},
            "Run": {"Script": script, "Setenv": {"OVERRIDDEN": "step"}},
        },
        ComponentDependencies={"fieldlens.Base": {"VersionRequirement": ">=1.0.0", "DependencyType": "SOFT"}},
        ComponentConfiguration={
            "DefaultConfiguration": {"name": "default", "nested": {"b": 2, "a": [1]}, "flag": True}
        },
    )
    build = write_build(
        tmp_path / "build", base, other, user, artifacts={"fieldlens.Base": {"base.zip": zipped({"pkg/x.txt": "x"})}}
    )
    device.deploy(build, ["fieldlens.User", "fieldlens.Other"], merges={"fieldlens.User": {"name": "merged"}})
    device.wait_for_state("fieldlens.User", State.FINISHED, timeout_s=30)

    root, work = device.root, device.work_path("fieldlens.User")
    lines = (work / "seen.txt").read_text().splitlines()
    assert lines == [
        str(root / "packages/artifacts/fieldlens.User/1.0.0"),
        str(root / "packages/artifacts-unarchived/fieldlens.User/1.0.0"),
        str(work),
        str(root),
        "coop-7",
        "merged",  # the deployment's merge over the recipe's default
        '{"a":[1],"b":2}',  # an object: compact JSON
        "true",
        "{configuration:/missing}",  # nothing there: left as written
        str(root / "work/fieldlens.Base"),
        str(root / "packages/artifacts-unarchived/fieldlens.Base/1.0.0"),
        "8080",
        "{fieldlens.Other:work:path}",  # not a dependency: left as written
        "{unknown:thing}",
    ]
    assert (root / "packages/artifacts-unarchived/fieldlens.Base/1.0.0/base/pkg/x.txt").read_text() == "x"
    assert (root / "packages/artifacts/fieldlens.Base/1.0.0/base.zip").is_file()
    environment = dict(line.split("=", 1) for line in (work / "env.txt").read_text().splitlines() if "=" in line)
    assert environment["FROM_LIFECYCLE"] == "lifecycle" and environment["OVERRIDDEN"] == "step"
    assert environment["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"] == str(root / "ipc.socket")
    assert (
        environment["SVCUID"] == device.components["fieldlens.User"].token != device.components["fieldlens.Other"].token
    )
    assert (environment["AWS_IOT_THING_NAME"], environment["AWS_REGION"], environment["AWS_DEFAULT_REGION"]) == (
        "coop-7",
        "eu-west-1",
        "eu-west-1",
    )
    assert sys.prefix not in environment["PATH"]  # the nucleus's PATH, not this test's virtualenv
    assert (work / "pwd.txt").read_text().strip() == str(work)
    assert oct(work.stat().st_mode & 0o777) == "0o700"


@pytest.mark.parametrize("interpolate", [False, True], ids=["default", "interpolateComponentConfiguration"])
def test_recipe_variables_in_a_configuration_are_replaced_only_when_the_nucleus_is_told_to(
    socket_dir: Path, tmp_path: Path, interpolate: bool
) -> None:
    configuration = {"topic": "/status/{iot:thingName}", "dir": "{work:path}", "n": 1}
    declared = recipe(
        "fieldlens.Configured", {"Run": "exit 0"}, ComponentConfiguration={"DefaultConfiguration": configuration}
    )
    with GreengrassCore(socket_dir / "v2", interpolate_component_configuration=interpolate) as device:
        device.deploy(write_build(tmp_path / "build", declared), ["fieldlens.Configured"])
        held = device.nucleus.configuration("fieldlens.Configured")
        if interpolate:
            assert held == {"topic": "/status/coop-7", "dir": str(device.work_path("fieldlens.Configured")), "n": 1}
        else:
            assert held == configuration  # the nucleus's default: the braces stay, in accessControl too


def test_a_script_reaches_the_nucleus_through_the_real_client(device: GreengrassCore, tmp_path: Path) -> None:
    code = (
        "from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2 as C; "
        "c = C(); c.update_state(state='RUNNING'); c.close()"
    )
    run = f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"
    device.deploy(write_build(tmp_path / "build", recipe("fieldlens.Reporter", {"Run": run})), ["fieldlens.Reporter"])
    assert device.wait_for_state("fieldlens.Reporter", State.FINISHED, State.ERRORED, timeout_s=30) == State.FINISHED
    assert device.nucleus.reported_states("fieldlens.Reporter") == ["RUNNING"]


def test_an_install_past_its_timeout_errors_the_component_and_its_dependant_never_starts(
    device: GreengrassCore, tmp_path: Path
) -> None:
    slow = recipe(
        "fieldlens.Slow", {"Install": {"Script": "echo installing; exec sleep 60", "Timeout": 1}, "Run": "exit 0"}
    )
    dependant = recipe(
        "fieldlens.Dependant",
        {"Run": "touch started"},
        ComponentDependencies={"fieldlens.Slow": {"VersionRequirement": "^1.0.0", "DependencyType": "HARD"}},
    )
    device.deploy(write_build(tmp_path / "build", slow, dependant), ["fieldlens.Dependant"])
    device.wait_for_state("fieldlens.Slow", State.ERRORED, timeout_s=30)
    assert device.components["fieldlens.Slow"].status == "INSTALL_TIMEOUT"
    device.wait_for_log("fieldlens.Dependant", "not starting: dependencies")
    assert device.components["fieldlens.Dependant"].state == State.INSTALLED
    assert not (device.work_path("fieldlens.Dependant") / "started").exists()
    assert "[stdout] fieldlens.Slow: installing" in device.log("fieldlens.Slow")


def test_startup_must_exit_zero_and_then_the_component_runs_without_a_process(
    device: GreengrassCore, tmp_path: Path
) -> None:
    good = recipe("fieldlens.Good", {"Install": "echo ok", "Startup": {"Script": "test -d .", "Timeout": 30}})
    bad = recipe("fieldlens.Bad", {"Startup": "echo 'no model here' >&2; exit 3"})
    device.deploy(write_build(tmp_path / "build", good, bad), ["fieldlens.Good", "fieldlens.Bad"])
    assert device.wait_for_state("fieldlens.Good", State.RUNNING, State.ERRORED, timeout_s=30) == State.RUNNING
    assert device.components["fieldlens.Good"].history == [State.INSTALLED, State.STARTING, State.RUNNING]
    device.wait_for_state("fieldlens.Bad", State.ERRORED, timeout_s=30)
    assert device.components["fieldlens.Bad"].status == "STARTUP_ERROR (exit 3)"
    assert "[stderr] fieldlens.Bad: no model here" in device.log("fieldlens.Bad")


def test_skipif_skips_a_step_as_the_nucleus_reads_it(device: GreengrassCore, tmp_path: Path) -> None:
    lifecycle = {
        "Install": {"Skipif": "onpath sh", "Script": "exit 1"},
        "Startup": {"Skipif": f"! exists {tmp_path / 'absent'}", "Script": "exit 1"},
    }
    device.deploy(write_build(tmp_path / "build", recipe("fieldlens.Skips", lifecycle)), ["fieldlens.Skips"])
    assert device.wait_for_state("fieldlens.Skips", State.RUNNING, State.ERRORED, timeout_s=30) == State.RUNNING
    assert device.log("fieldlens.Skips").count("skipped") == 2


def test_a_run_that_exits_non_zero_or_outlives_its_timeout_is_errored(device: GreengrassCore, tmp_path: Path) -> None:
    failing = recipe("fieldlens.Failing", {"Run": "exit 2"})
    hanging = recipe("fieldlens.Hanging", {"Run": {"Script": "exec sleep 60", "Timeout": 1}})
    device.deploy(write_build(tmp_path / "build", failing, hanging), ["fieldlens.Failing", "fieldlens.Hanging"])
    device.wait_for_state("fieldlens.Failing", State.ERRORED, timeout_s=30)
    assert device.components["fieldlens.Failing"].status == "RUN_ERROR (exit 2)"
    device.wait_for_state("fieldlens.Hanging", State.ERRORED, timeout_s=30)
    assert device.components["fieldlens.Hanging"].status == "RUN_TIMEOUT"


def test_stopping_sends_sigterm_to_the_whole_group_and_sigkill_to_what_ignores_it(
    device: GreengrassCore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core, "GRACEFUL_STOP_S", 0.5)  # the nucleus waits 5 s; the mechanism is what is tested
    # sh -c forks its command: the inner shell is the "component", still closing after the outer one died
    inner = "trap 'sleep 0.2; echo bye; exit 0' TERM; echo ready; while :; do sleep 0.1; done"
    polite = recipe("fieldlens.Polite", {"Run": f"sh -c {shlex.quote(inner)}"})
    stubborn = recipe("fieldlens.Stubborn", {"Run": "trap '' TERM; echo ready; while :; do sleep 0.1; done"})
    device.deploy(write_build(tmp_path / "build", polite, stubborn), ["fieldlens.Polite", "fieldlens.Stubborn"])
    for name in ("fieldlens.Polite", "fieldlens.Stubborn"):
        device.wait_for_log(name, "] " + name + ": ready")
    group = device.components["fieldlens.Polite"].process
    assert group is not None
    stopped = device.stop("fieldlens.Polite")
    assert (stopped.state, stopped.killed) == (State.FINISHED, False)
    assert core.live_members(group.pid) == []  # stop() waited for the component, not only for its shell
    wait_until(lambda: "[stdout] fieldlens.Polite: bye" in device.log("fieldlens.Polite"), 5, "its last words logged")
    process = device.components["fieldlens.Stubborn"].process
    assert process is not None
    stopped = device.stop("fieldlens.Stubborn")
    assert (stopped.state, stopped.exit_code, stopped.killed) == (State.FINISHED, -9, True)
    assert core.live_members(process.pid) == []
