"""The GDK CLI's custom build: one component into ``greengrass-build/`` the way `gdk component build` expects.

Each ``recipes/gdk/<component>/gdk-config.json`` names ``fieldlens build --gdk-component <component>``
as its custom build command, so ``gdk component build`` and ``gdk component publish`` (run from that
folder) work on fieldlens: this writes the artifact under ``artifacts/<component>/NEXT_PATCH/`` and
the recipe, placeholders intact for the GDK to fill, as ``recipes/recipe.yaml``.
"""

from __future__ import annotations

from pathlib import Path

from fieldlens_infra.build import COMPONENTS, MODEL_COMPONENT, component_zip, model_zip, recipe_path

GDK_VERSION_PLACEHOLDER = "NEXT_PATCH"


def gdk_build(component: str, out: Path, model_dir: Path | None) -> Path:
    """Write one component's artifact and recipe in the GDK layout; returns the recipe path."""
    if component == MODEL_COMPONENT:
        if model_dir is None:
            raise ValueError("fieldlens.Model needs --model")
        name, data = "fieldlens-model.zip", model_zip(model_dir)[0]
    elif component in COMPONENTS:
        name, data = f"{COMPONENTS[component].artifact}.zip", component_zip(COMPONENTS[component])
    else:
        raise ValueError(f"unknown component {component!r}; one of {sorted([*COMPONENTS, MODEL_COMPONENT])}")
    artifacts = out / "artifacts" / component / GDK_VERSION_PLACEHOLDER
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / name).write_bytes(data)
    (out / "recipes").mkdir(parents=True, exist_ok=True)
    recipe = out / "recipes" / "recipe.yaml"
    recipe.write_text(recipe_path(component).read_text())
    return recipe
