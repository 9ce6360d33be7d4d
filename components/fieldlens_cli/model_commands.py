"""`fieldlens model build-default` and `model install`: the packages a device serves."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fieldlens_cli.arguments import DATA_DIR, Subcommands
from fieldlens_cli.output import emit
from fieldlens_core.errors import ModelPackageError, NotFoundError
from fieldlens_core.model_install import install_package
from fieldlens_core.model_package import CARD_FILE, resolve_package_dir

log = logging.getLogger(__name__)


def register(commands: Subcommands) -> None:
    model = commands.add_parser("model", help="model packages")
    model_commands = model.add_subparsers(dest="model_command", required=True)
    build = model_commands.add_parser("build-default", help="export EfficientNet-Lite0 (ImageNet) as a package")
    build.add_argument("--out", type=Path, default=DATA_DIR / "model")
    build.set_defaults(handler=build_default)
    install = model_commands.add_parser("install", help="install a package and make it current (atomically)")
    install.add_argument("package", type=Path)
    install.add_argument("--model-dir", type=Path, default=DATA_DIR / "model")
    install.set_defaults(handler=install_command)


def build_default(args: argparse.Namespace) -> int:
    from fieldlens_retrain.default_model import build_default_model

    card = build_default_model(args.out)
    emit(f"model {card.name} {card.version} written to {args.out}")
    emit(f"coffee photo check: {card.metrics['coffee_photo_top1']}")
    return 0


def ensure_default_model(model_dir: Path) -> None:
    """Build the default package into ``model_dir`` unless one is there (the demo and the bench)."""
    if (resolve_package_dir(model_dir) / CARD_FILE).exists():
        return
    from fieldlens_retrain.default_model import build_default_model

    emit(f"Building the default model into {model_dir} (EfficientNet-Lite0, ImageNet; once, 15-60 s) ...")
    card = build_default_model(model_dir)
    emit(f"  done: {card.name} {card.version}; coffee photo check: {card.metrics['coffee_photo_top1']}")


def packages_in(folder: Path) -> list[str]:
    """The model packages directly in ``folder`` (a retrain's ``--out``), by name."""
    return sorted(child.name for child in folder.iterdir() if (child / CARD_FILE).is_file()) if folder.is_dir() else []


def install_command(args: argparse.Namespace) -> int:
    if not args.package.is_dir():  # often a version the gate did not publish: only its report was written
        versions = packages_in(args.package.parent)
        hint = (
            f"{args.package.parent} holds the packages {', '.join(versions)} (a version the gate did not publish "
            "has a report but no package)"
            if versions
            else "Give the directory a retrain wrote under `--out`, one version's"
        )
        raise NotFoundError(f"no model package at {args.package}", hint)
    if not (args.package / CARD_FILE).exists():  # the models directory, not one of its versions
        versions = packages_in(args.package)
        hint = (
            f"It holds the packages {', '.join(versions)}: give one, e.g. {args.package / versions[-1]}"
            if versions
            else "Give the directory a retrain wrote (`--out`), the one with model_card.json"
        )
        raise NotFoundError(f"no model package at {args.package} (no {CARD_FILE})", hint)
    try:
        card = install_package(args.package, args.model_dir)
    except ModelPackageError as exc:
        hint = " ".join(part for part in (exc.hint, "The current model stays as it was") if part)
        raise ModelPackageError(f"not installed: {exc.message}", hint) from None
    emit(f"installed {card.name} {card.version} into {args.model_dir} (now current)")
    return 0
