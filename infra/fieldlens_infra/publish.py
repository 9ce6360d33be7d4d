"""`fieldlens publish`: artifacts to S3, then one greengrassv2 component version per built recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def publish(build_dir: Path, s3: Any, greengrass: Any, bucket: str) -> dict[str, str]:
    """Upload every built artifact and create its component version; name -> component version ARN."""
    arns = {}
    for recipe in sorted((build_dir / "recipes").glob("*.yaml")):
        document = yaml.safe_load(recipe.read_text())
        name, version = document["ComponentName"], document["ComponentVersion"]
        for artifact in sorted((build_dir / "artifacts" / name / version).iterdir()):
            s3.put_object(
                Bucket=bucket,
                Key=f"{name}/{version}/{artifact.name}",
                Body=artifact.read_bytes(),
                ServerSideEncryption="AES256",
            )
        response = greengrass.create_component_version(inlineRecipe=recipe.read_bytes())
        arns[name] = response["arn"]
    return arns
