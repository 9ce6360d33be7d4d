"""`fieldlens bench`: the edge path, the field-data upload and the retrain, each measured in this run.

The command only: its flags, and a call into the bench package (:mod:`fieldlens_bench`), where
each part measures and prints its table. The one module of ours that imports that package.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

from fieldlens_bench.runner import PARTS, BenchOptions, as_json, run_parts
from fieldlens_cli.arguments import DATA_DIR, Subcommands


def register(commands: Subcommands) -> None:
    parser = commands.add_parser("bench", help="measure latency, throughput, memory and cold start")
    parser.add_argument(
        "--data-dir", type=Path, default=DATA_DIR, help="where the default model is (built there if missing)"
    )
    parser.add_argument("--requests", type=int, default=200, help="sequential end-to-end requests")
    parser.add_argument("--burst", type=int, default=200, help="requests in the concurrent burst")
    parser.add_argument(
        "--variant", default="fp32", choices=["fp32", "int8"], help="edge and continuous: the graph the service runs"
    )
    parser.add_argument("--workers", type=int, help="classifier workers (default: the component's)")
    parser.add_argument(
        "--no-spinning",
        dest="spinning",
        action="store_false",
        help="edge: the inference service's ORT threads sleep between the steps of a run (allowSpinning false; "
        "default: they spin within a run)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of the edge and retrain parts (min / median / max)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file (default: only print them)")
    parser.add_argument(
        "--markdown",
        type=Path,
        metavar="PATH",
        help="also write each part's table to this file as markdown, headed by the machine, the date and this "
        "command (default: only print them)",
    )
    parser.add_argument(
        "--cpus",
        type=int,
        help="edge: pin the components to this many CPUs, 1 for a Pi-sized budget (default: not pinned)",
    )
    parser.add_argument(
        "--baseline", action="store_true", help="edge: also measure a hand-rolled paho + ONNX Runtime handler"
    )
    parser.add_argument("--only", choices=list(PARTS), help="run one part only (default: every part)")
    parser.add_argument(
        "--continuous-seconds", type=float, default=20.0, help="each continuous-mode run's measured span"
    )
    parser.add_argument("--label-images", type=int, default=100_000, help="sidecars for the labelling page's part")
    parser.add_argument(
        "--fine-tune",
        choices=["auto", "always", "never"],
        default="auto",
        help="retrain: `fieldlens retrain --fine-tune`; never times the frozen backbone alone",
    )
    parser.set_defaults(handler=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    options = BenchOptions(**{field.name: getattr(args, field.name) for field in dataclasses.fields(BenchOptions)})
    markdown = None
    if args.markdown:
        from fieldlens_bench.markdown import MarkdownLog

        markdown = MarkdownLog(args.markdown, shlex.join(["fieldlens", *sys.argv[1:]]))
    results = run_parts(options, args.only, markdown)
    if args.json:
        args.json.write_text(json.dumps(as_json(results), indent=2))
    return 0
