"""`fieldlens`: one command for the whole suite.

fieldlens serve     run the inference service and the classifier (foreground)
fieldlens classify  send one request, print the response (exit 0 prediction, 1 error, 2 timeout)
fieldlens watch     print responses as they arrive
fieldlens demo      everything on embedded defaults: broker, model, photos, requests
fieldlens bench     measure latency, throughput, memory, cold start
fieldlens model build-default   export the default EfficientNet-Lite0 package
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from fieldlens_core import topics
from fieldlens_core.config import DEFAULT_BROKER_URL, DEFAULT_SERVICE_NAME, private_socket
from fieldlens_core.errors import FieldlensError
from fieldlens_core.lifecycle import configure_logging

log = logging.getLogger("fieldlens")

DATA_DIR = Path("fieldlens-data")


def _broker_args(parser: argparse.ArgumentParser, serving: bool = False) -> None:
    parser.add_argument("--broker", default=DEFAULT_BROKER_URL, help="mqtt://HOST:PORT (default %(default)s)")
    if serving:
        parser.add_argument(
            "--name",
            default=topics.DEFAULT_NAME,
            help="topic name: serves /request/classify/NAME and the fleet-wide /request/classify (default %(default)s)",
        )
    else:
        parser.add_argument(
            "--name",
            help="ask one device's topics, /request/classify/NAME -> /response/prediction/NAME (default: the "
            "fleet-wide pair /request/classify -> /response/prediction, which every device answers)",
        )


def _upload_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bucket", help="S3 bucket for field data (default: a local stand-in directory)")
    parser.add_argument("--prefix", help="S3 key prefix (default field-data)")
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint")
    parser.add_argument("--region", help="AWS region")
    parser.add_argument("--local-bucket-dir", type=Path, default=DATA_DIR / "bucket", help="stand-in for a bucket")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fieldlens", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the inference service and the classifier")
    _broker_args(serve, serving=True)
    serve.add_argument("--camera", default="test-pattern", help="folder:DIR | test-pattern | picamera2")
    serve.add_argument("--field-data", type=Path, default=DATA_DIR / "field-images")
    serve.add_argument("--model", type=Path, default=DATA_DIR / "model", help="model package directory")
    serve.add_argument("--variant", default="fp32", choices=["fp32", "int8"])
    serve.add_argument("--socket", type=Path, help="inference socket (default: a fresh one in the temp dir)")
    serve.add_argument("--service-name", default=DEFAULT_SERVICE_NAME)
    serve.add_argument("--thing-name")
    _upload_args(serve)
    serve.add_argument("--no-upload", action="store_true", help="do not run the field-data uploader")
    serve.add_argument(
        "--max-disconnected-s",
        type=float,
        default=60.0,
        help="stop (exit 1) when a component stays disconnected from the broker this long (default %(default)s)",
    )

    classify = commands.add_parser("classify", help="send one classify request and print the response")
    _broker_args(classify)
    classify.add_argument("--payload", default="{}", help="request JSON (default: {})")
    classify.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default %(default)s)")

    watch = commands.add_parser("watch", help="print each response as it arrives")
    _broker_args(watch)
    watch.add_argument("--count", type=int, help="exit after this many responses")

    demo = commands.add_parser("demo", help="the whole edge path on embedded defaults")
    demo.add_argument("--data-dir", type=Path, default=DATA_DIR)
    demo.add_argument("--port", type=int, help="embedded broker port (default: 1883 if free, else any free port)")
    demo.add_argument("--keep-running", action="store_true", help="keep serving after the demo requests")
    demo.add_argument("--loop", action="store_true", help="the retrain loop: collect, label, retrain, reload")

    bench = commands.add_parser("bench", help="measure latency, throughput, memory and cold start")
    bench.add_argument("--data-dir", type=Path, default=DATA_DIR)
    bench.add_argument("--requests", type=int, default=200, help="sequential end-to-end requests")
    bench.add_argument("--burst", type=int, default=200, help="requests in the concurrent burst")
    bench.add_argument("--variant", default="fp32", choices=["fp32", "int8"])
    bench.add_argument("--workers", type=int, help="classifier workers (default: the component's)")
    bench.add_argument("--spinning", action="store_true", help="let the inference service's ORT threads spin")
    bench.add_argument("--repeat", type=int, default=3, help="edge runs; each figure is their median")
    bench.add_argument("--json", type=Path, help="also write the figures here")
    bench.add_argument("--only", choices=["edge", "upload", "retrain"], help="run one part only")

    field_data = commands.add_parser("field-data", help="field images kept locally and in the bucket")
    field_commands = field_data.add_subparsers(dest="field_command", required=True)
    for name, text in (
        ("ls", "list kept images and their upload state"),
        ("stats", "counts per predicted label and confidence band"),
        ("sync", "upload the queue now, with a progress bar"),
    ):
        sub = field_commands.add_parser(name, help=text)
        sub.add_argument("--field-data", type=Path, default=DATA_DIR / "field-images")
        sub.add_argument("--thing-name", help="the <thing> level of S3 keys (default: host name)")
        _upload_args(sub)
        if name == "ls":
            sub.add_argument("--remote", action="store_true", help="list the bucket's keys instead")

    model = commands.add_parser("model", help="model packages")
    model_commands = model.add_subparsers(dest="model_command", required=True)
    build = model_commands.add_parser("build-default", help="export EfficientNet-Lite0 (ImageNet) as a package")
    build.add_argument("--out", type=Path, default=DATA_DIR / "model")
    install = model_commands.add_parser("install", help="install a package and make it current (atomically)")
    install.add_argument("package", type=Path)
    install.add_argument("--model-dir", type=Path, default=DATA_DIR / "model")

    label = commands.add_parser("label", help="labels of field images")
    label_commands = label.add_subparsers(dest="label_command", required=True)
    label_in = label_commands.add_parser(
        "import", help="write labels from a CSV (key,label) or COCO JSON into sidecars"
    )
    label_in.add_argument("file", type=Path)
    label_out = label_commands.add_parser("export", help="labels from the sidecars to a CSV or COCO JSON")
    label_out.add_argument("--format", choices=["csv", "coco"], default="csv")
    label_out.add_argument("--out", type=Path, required=True)
    for sub in (label_in, label_out):
        sub.add_argument("--field-data", type=Path, default=DATA_DIR / "field-images")
    label_in.add_argument("--model", type=Path, default=DATA_DIR / "model", help="the current model (its labels)")
    label_in.add_argument("--new-labels", action="store_true", help="allow labels the current model does not know")

    dataset = commands.add_parser("dataset", help="dataset manifests")
    dataset_commands = dataset.add_subparsers(dest="dataset_command", required=True)
    dataset_build = dataset_commands.add_parser("build", help="build a manifest from field images (and a base set)")
    dataset_build.add_argument(
        "--from",
        dest="source",
        default=str(DATA_DIR / "field-images"),
        help="a field-data directory or s3://bucket/prefix",
    )
    dataset_build.add_argument("--labels", type=Path, help="a labels CSV or COCO JSON (besides sidecar labels)")
    dataset_build.add_argument("--base", type=Path, help="a folder of class folders to train on as well")
    dataset_build.add_argument("--new-labels", action="store_true", help="a new label set (else: the model's)")
    dataset_build.add_argument("--model", type=Path, default=DATA_DIR / "model", help="the current model")
    dataset_build.add_argument("--pseudo-threshold", type=float, help="pseudo-label unlabelled images this confident")
    dataset_build.add_argument("--val-percent", type=int, default=20)
    dataset_build.add_argument("--cache", type=Path, default=DATA_DIR / "cache")
    dataset_build.add_argument("--endpoint-url")
    dataset_build.add_argument("--region")
    dataset_build.add_argument("--out", type=Path, required=True)

    retrain = commands.add_parser("retrain", help="train a candidate, evaluate it against the current model, gate it")
    retrain.add_argument("--dataset", type=Path, required=True, help="a manifest from `fieldlens dataset build`")
    retrain.add_argument("--out", type=Path, default=DATA_DIR / "models")
    retrain.add_argument("--model", type=Path, default=DATA_DIR / "model", help="the current model")
    retrain.add_argument("--force", action="store_true", help="publish even if it does not beat the current model")
    retrain.add_argument("--margin", type=float, default=0.02, help="accuracy it must gain to be published")
    retrain.add_argument("--epochs", type=int, default=100)
    retrain.add_argument("--seed", type=int, default=0)
    retrain.add_argument("--name", help="model name (default: the current model's, or fieldlens-classifier)")
    retrain.add_argument("--cache", type=Path, default=DATA_DIR / "cache")
    retrain.add_argument("--backend", choices=["local", "sagemaker"], default="local")
    retrain.add_argument("--role-arn", help="SageMaker execution role (--backend sagemaker)")
    retrain.add_argument("--bucket", help="S3 bucket for SageMaker input and output")
    retrain.add_argument("--region")
    retrain.add_argument("--endpoint-url", help="S3/SageMaker endpoint (tests)")
    retrain.add_argument("--instance-type", default="ml.m5.large")
    retrain.add_argument("--publish", action="store_true", help="publish the new model as a fieldlens.Model version")
    retrain.add_argument("--deploy", metavar="THING_GROUP_ARN", help="then deploy it to this thing group")
    gg_build = commands.add_parser("build", help="zip component artifacts and render recipes (GDK layout)")
    gg_build.add_argument("--version", default="0.1.0", help="component version of the three components")
    gg_build.add_argument("--bucket", default="BUCKET_NAME", help="artifacts bucket the recipes point at")
    gg_build.add_argument("--model", type=Path, default=DATA_DIR / "model", help="model package for fieldlens.Model")
    gg_build.add_argument("--no-model", action="store_true", help="build without the model component")
    gg_build.add_argument("--out", type=Path, default=Path("greengrass-build"))
    gg_build.add_argument("--gdk-component", help="build one component the way `gdk component build` expects")
    for verb, text in (
        ("publish", "upload artifacts and create component versions"),
        ("deploy", "deploy the built component versions to a thing group"),
    ):
        sub = commands.add_parser(verb, help=text)
        sub.add_argument("--build", type=Path, default=Path("greengrass-build"))
        sub.add_argument("--region")
        sub.add_argument("--endpoint-url", help="S3 endpoint (tests)")
        if verb == "publish":
            sub.add_argument("--bucket", required=True)
        else:
            sub.add_argument("--thing-group", required=True, help="thing group ARN")
            sub.add_argument("--merge", action="append", help="COMPONENT=JSON configuration to merge")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. A failure from the project's tree that a command does not report itself
    becomes one line naming it, and an exit code: 2 invalid configuration or input, 3 cannot
    reach a broker or the nucleus, 4 not authorised, 1 anything else (the README's "Command line")."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        return run_command(args)
    except FieldlensError as exc:
        log.error("fieldlens %s: %s (exit %d)", args.command, exc, exc.exit_code)
        return exc.exit_code


def run_command(args: argparse.Namespace) -> int:
    if args.command == "serve":
        from fieldlens_cli.commands import serve

        socket_path = args.socket or private_socket(f"serve-{os.getpid()}")
        return serve(args, socket_path)
    if args.command == "classify":
        from fieldlens_cli.commands import classify

        return classify(args)
    if args.command == "watch":
        from fieldlens_cli.commands import watch

        return watch(args)
    if args.command == "demo":
        if args.loop:
            from fieldlens_cli.loop_demo import run_loop_demo

            return run_loop_demo(args.data_dir, args.port)
        from fieldlens_cli.demo import run_demo

        return run_demo(args.data_dir, args.port, args.keep_running)
    if args.command == "field-data":
        from fieldlens_cli.field_data import run_field_data

        return run_field_data(args)
    if args.command == "bench":
        from fieldlens_cli.bench import run_bench

        return run_bench(args)
    if args.command in ("label", "dataset", "retrain") or (args.command == "model" and args.model_command == "install"):
        from fieldlens_cli import retrain_commands

        handler = {
            "label": retrain_commands.label,
            "dataset": retrain_commands.dataset,
            "retrain": retrain_commands.retrain,
            "model": retrain_commands.install,
        }[args.command]
        return handler(args)
    if args.command in ("build", "publish", "deploy"):
        from fieldlens_cli import greengrass_commands

        command = {
            "build": greengrass_commands.build_command,
            "publish": greengrass_commands.publish_command,
            "deploy": greengrass_commands.deploy_command,
        }[args.command]
        return command(args)
    if args.command == "model":
        from fieldlens_cli.output import emit
        from fieldlens_retrain.default_model import build_default_model

        card = build_default_model(args.out)
        emit(f"model {card.name} {card.version} written to {args.out}")
        emit(f"coffee photo check: {card.metrics['coffee_photo_top1']}")
        return 0
    return 2


def console_main() -> int:
    """The `fieldlens` script: like main(), and quiet when its output is cut short (`| head`).

    SIGPIPE stays ignored (Python's default): restoring it would let a write to a closed MQTT
    or inference socket kill the process, instead of raising an error it handles.
    """
    try:
        return main()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing more can reach the reader; flush silently at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
