"""`fieldlens deploy`: a greengrassv2 deployment of the component versions to a thing group.

Defaults an operator of a fleet expects: roll back a device whose deployment fails; let
components defer an update (NOTIFY_COMPONENTS, 60 s); give configuration validation 60 s
(fieldlens validates proposals and answers REJECTED with the reason); roll out at most 10
devices a minute, growing by half each time 5 succeed, and abort when more than 10% of at
least 10 devices fail.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from fieldlens_core.errors import InvalidInputError

DEPLOYMENT_POLICIES: dict[str, Any] = {
    "failureHandlingPolicy": "ROLLBACK",
    "componentUpdatePolicy": {"timeoutInSeconds": 60, "action": "NOTIFY_COMPONENTS"},
    "configurationValidationPolicy": {"timeoutInSeconds": 60},
}
JOB_CONFIGURATION: dict[str, Any] = {
    "jobExecutionsRolloutConfig": {
        "exponentialRate": {
            "baseRatePerMinute": 10,
            "incrementFactor": 1.5,
            "rateIncreaseCriteria": {"numberOfSucceededThings": 5},
        },
        "maximumPerMinute": 50,
    },
    "abortConfig": {
        "criteriaList": [
            {"failureType": "FAILED", "action": "CANCEL", "thresholdPercentage": 10.0, "minNumberOfExecutedThings": 10}
        ]
    },
    "timeoutConfig": {"inProgressTimeoutInMinutes": 60},
}


FIELDLENS_PREFIX = "fieldlens."


@dataclass(frozen=True)
class ComponentChange:
    """What a deployment does to one component of the target: from ``old`` to ``new`` (None: absent)."""

    name: str
    old: str | None
    new: str
    merge: dict[str, Any] | None

    def line(self) -> str:
        version = f"{self.old} -> {self.new}" if self.old != self.new else f"{self.new} (unchanged)"
        if self.old is None:
            version = f"(new) -> {self.new}"
        merged = f", configuration merged: {json.dumps(self.merge, sort_keys=True)}" if self.merge else ""
        return f"{self.name}: {version}{merged}"


@dataclass(frozen=True)
class DeploymentPlan:
    """The target's next deployment: the latest one's components with only fieldlens's changed.

    A Greengrass deployment to a thing group *replaces* the group's previous deployment whole: a
    component left out is removed from every device. So the plan starts from what the target
    runs now and changes only the fieldlens components named, keeping every other component
    (the user's own, the nucleus's configuration) exactly as it was deployed.
    """

    target_arn: str
    components: dict[str, dict[str, Any]]
    changes: list[ComponentChange]
    kept: list[str]
    """The other components of the latest deployment, carried over as they were."""

    def lines(self) -> list[str]:
        kept = f"kept as deployed: {', '.join(self.kept)}" if self.kept else "no other components on the target"
        return [f"deployment to {self.target_arn}:", *(f"  {c.line()}" for c in self.changes), f"  {kept}"]


def plan_deployment(
    greengrass: Any, target_arn: str, versions: dict[str, str], merges: dict[str, dict[str, Any]] | None = None
) -> DeploymentPlan:
    """The next deployment of ``target_arn``: the latest one, with ``versions`` and ``merges`` applied
    (a merge goes over the component's earlier merge: see deep_merge).

    ``merges`` may only name components in ``versions`` (a merge for a component not deployed here
    would be dropped without a word): InvalidInputError otherwise, before any call to AWS.
    """
    unknown = sorted(set(merges or {}) - set(versions))
    if unknown:
        raise InvalidInputError(
            f"--merge names {', '.join(unknown)}, which this deployment does not deploy",
            f"Merge into one of: {', '.join(sorted(versions))}",
        )
    components = current_components(greengrass, target_arn)
    changes = []
    for name, version in sorted(versions.items()):
        previous = components.get(name, {})
        entry: dict[str, Any] = {**previous, "componentVersion": version}
        merge = (merges or {}).get(name)
        if merge is not None:
            update = dict(previous.get("configurationUpdate", {}))
            update["merge"] = json.dumps(deep_merge(json.loads(update.get("merge") or "{}"), merge))
            entry["configurationUpdate"] = update
        components[name] = entry
        changes.append(ComponentChange(name, previous.get("componentVersion"), version, merge))
    kept = sorted(set(components) - set(versions))
    return DeploymentPlan(target_arn, components, changes, kept)


def deep_merge(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """``change`` over ``base``, objects merged key by key, as Greengrass merges configuration.

    The deployment keeps the earlier merge under the new one: a device that joins the group later
    gets only the latest deployment, and must end up configured like the devices already in it.
    """
    merged = dict(base)
    for key, value in change.items():
        old = merged.get(key)
        merged[key] = deep_merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return merged


def create_deployment(greengrass: Any, plan: DeploymentPlan, name: str = "fieldlens") -> str:
    """Send the plan; returns the deployment id."""
    response = greengrass.create_deployment(
        targetArn=plan.target_arn,
        deploymentName=name,
        components=plan.components,
        deploymentPolicies=DEPLOYMENT_POLICIES,
        iotJobConfiguration=JOB_CONFIGURATION,
    )
    return str(response["deploymentId"])


def current_components(greengrass: Any, target_arn: str) -> dict[str, dict[str, Any]]:
    """The components of the target's latest deployment (a new deployment replaces it whole)."""
    deployments = greengrass.list_deployments(targetArn=target_arn, historyFilter="LATEST_ONLY")["deployments"]
    if not deployments:
        return {}
    latest = greengrass.get_deployment(deploymentId=deployments[0]["deploymentId"])
    components: dict[str, dict[str, Any]] = copy.deepcopy(latest.get("components", {}))  # the plan changes it
    return components
