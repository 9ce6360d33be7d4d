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


def publish_model(model_dir: Path, s3: Any, greengrass: Any, bucket: str, work: Path) -> tuple[str, str]:
    """A new version of fieldlens.Model from a model package: (version, component version ARN)."""
    from fieldlens_infra.build import MODEL_COMPONENT, model_zip, recipe_path, render

    data, version = model_zip(model_dir)
    target = work / "artifacts" / MODEL_COMPONENT / version
    target.mkdir(parents=True, exist_ok=True)
    (target / "fieldlens-model.zip").write_bytes(data)
    (work / "recipes").mkdir(parents=True, exist_ok=True)
    rendered = render(recipe_path(MODEL_COMPONENT).read_text(), MODEL_COMPONENT, version, bucket)
    (work / "recipes" / f"{MODEL_COMPONENT}-{version}.yaml").write_text(rendered)
    return version, publish(work, s3, greengrass, bucket)[MODEL_COMPONENT]
