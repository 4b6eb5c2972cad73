"""``appliance nnc import | export``: Neural Network Console projects and nnabla models in and out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def import_command(args: argparse.Namespace) -> int:
    source = Path(args.source)
    if source.suffix.lower() == ".sdcproj":
        from appliance.datasets.sdcproj import import_sdcproj, write_import

        result = import_sdcproj(source, args.dataset_root)
        project_file, network_file = write_import(result, args.output)
        for note in result.notes:
            print(f"note: {note}", file=sys.stderr)
        print(f"wrote {project_file} ({result.task}) and {network_file}")
        print(f"next: appliance network stats {network_file}; appliance train {project_file}")
        return 0
    if source.suffix.lower() == ".nnp":
        from appliance.datasets.nnp import import_nnp

        summary = import_nnp(
            source,
            args.output,
            kind=args.kind,
            executor=args.executor,
            calibrate_on=args.calibrate,
            false_alarm_rate=args.false_alarm_rate,
        )
        for note in summary["notes"]:
            print(f"note: {note}", file=sys.stderr)
        shape = "x".join(map(str, summary["input"])), "x".join(map(str, summary["output"]))
        calibrated = f"; T1/T2 set on {summary['calibrated_on']} normal samples" if summary["calibrated_on"] else ""
        print(f"wrote {args.output}: {summary['kind']}, input {shape[0]}, output {shape[1]}{calibrated}")
        return 0
    print(f"error: {source}: give an NNC project (.sdcproj) or an nnabla model (.nnp)", file=sys.stderr)
    return 2


def export_command(args: argparse.Namespace) -> int:
    from appliance.datasets.nnp_export import export_nnp

    summary = export_nnp(args.model, args.output)
    print(
        f"wrote {args.output}: {summary['functions']} functions, {summary['parameters']} parameters; "
        f"nnabla_cli forward -c {args.output} -d DATA.csv -o OUT/ reads column {summary['data']!r}"
    )
    return 0


def add_nnc_commands(sub: argparse._SubParsersAction) -> None:
    p_nnc = sub.add_parser("nnc", help="Neural Network Console projects (.sdcproj) and nnabla models (.nnp)")
    nnc_sub = p_nnc.add_subparsers(dest="nnc_command", required=True)
    p_import = nnc_sub.add_parser(
        "import", help="an .sdcproj → project.yaml + network.yaml in -o DIR; an .nnp → a model bundle -o model.zip"
    )
    p_import.add_argument("source", help="PROJECT.sdcproj or MODEL.nnp")
    p_import.add_argument("-o", "--output", required=True, help="folder (project) or bundle file (.nnp)")
    p_import.add_argument(
        "--dataset-root", help="where the project's datasets are here ({SDCPATH} paths are looked up below it)"
    )
    p_import.add_argument(
        "--kind", choices=("classifier", "regressor", "autoencoder"), help=".nnp: what the model is (default: guessed)"
    )
    p_import.add_argument("--executor", help=".nnp: the executor to import (default: the first, NNC's MainRuntime)")
    p_import.add_argument(
        "--calibrate", help=".nnp autoencoders: a dataset CSV of normal samples to set T1/T2 on, so the line runs it"
    )
    p_import.add_argument("--false-alarm-rate", type=float, default=0.01, help="with --calibrate (default 0.01)")
    p_import.set_defaults(func=import_command)
    p_export = nnc_sub.add_parser("export", help="a model bundle → an .nnp that nnabla_cli forward runs")
    p_export.add_argument("model", help="model bundle (.zip) with one network")
    p_export.add_argument("output", help="the .nnp to write")
    p_export.set_defaults(func=export_command)
