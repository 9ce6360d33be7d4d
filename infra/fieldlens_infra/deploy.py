"""`fieldlens deploy`: a greengrassv2 deployment of the component versions to a thing group.

Defaults an operator of a fleet expects: roll back a device whose deployment fails; let
components defer an update (NOTIFY_COMPONENTS, 60 s); give configuration validation 60 s
(fieldlens validates proposals and answers REJECTED with the reason); roll out at most 10
devices a minute, growing by half each time 5 succeed, and abort when more than 10% of at
least 10 devices fail.
"""

from __future__ import annotations

import json
from typing import Any

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


def deploy(
    greengrass: Any,
    target_arn: str,
    versions: dict[str, str],
    merges: dict[str, dict[str, Any]] | None = None,
    name: str = "fieldlens",
) -> str:
    """Create the deployment; returns its id. ``merges``: component -> configuration to merge."""
    components: dict[str, Any] = {}
    for component, version in sorted(versions.items()):
        components[component] = {"componentVersion": version}
        if merges and component in merges:
            components[component]["configurationUpdate"] = {"merge": json.dumps(merges[component])}
    return _create(greengrass, target_arn, components, name)


def _create(greengrass: Any, target_arn: str, components: dict[str, Any], name: str) -> str:
    response = greengrass.create_deployment(
        targetArn=target_arn,
        deploymentName=name,
        components=components,
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
    components: dict[str, dict[str, Any]] = latest.get("components", {})
    return components


def redeploy_with(greengrass: Any, target_arn: str, versions: dict[str, str], name: str = "fieldlens") -> str:
    """Deploy new versions of some components, keeping every other component of the latest deployment as it is."""
    components = current_components(greengrass, target_arn)
    for component, version in versions.items():
        components[component] = {**components.get(component, {}), "componentVersion": version}
    return _create(greengrass, target_arn, components, name)
