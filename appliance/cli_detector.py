"""``appliance detector fit | test | predict``: commissioning a part from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

READINGS_SUFFIXES = (".csv", ".tsv", ".txt")  # a logger's or a spreadsheet's export


def _readings(path: str) -> bool:
    """A file of sensor readings (else images)."""
    return Path(path).suffix.lower() in READINGS_SUFFIXES


def _say(line: str) -> None:
    print(line, flush=True)


def fit_command(args: argparse.Namespace) -> int:
    from appliance.workflows import sensor_detector
    from appliance.workflows.detector import FitOptions, fit, parse_roi
    from models.detector.model import METHODS as IMAGE_METHODS

    method = args.method or (sensor_detector.DEFAULT_METHOD if _readings(args.normal) else "draem")
    kinds = sensor_detector.METHODS if _readings(args.normal) else IMAGE_METHODS
    if method not in kinds:
        what = "readings" if _readings(args.normal) else "images"
        print(f"error: --method {method} does not fit {what}; use one of {', '.join(kinds)}", file=sys.stderr)
        return 2
    if args.full_resolution and method != "draem":
        print(f"error: --full-resolution is the draem defect map's; --method {method} has none", file=sys.stderr)
        return 2
    if _readings(args.normal):
        hop = args.hop or max(1, args.window // 2)
        sensor_detector.fit(
            args.normal,
            args.output,
            window=args.window,
            hop=hop,
            epochs=args.epochs or 30,
            false_alarm_rate=args.false_alarm_rate,
            method=method,
            score=args.score,
            log=_say,
        )
        return 0

    options = FitOptions(
        size=args.size,
        channels=args.channels,
        roi=parse_roi(args.roi),
        epochs=args.epochs,
        false_alarm_rate=args.false_alarm_rate,
        method=method,
        seed=args.seed,
        name=args.name or "",
        full_resolution=args.full_resolution,
        orientations=args.orientations,
        appearance_check=not args.no_appearance_check,
        **({} if args.light_tolerance is None else {"light_jitter": args.light_tolerance}),
    )
    fit(args.normal, args.output, options, log=_say)
    return 0


def test_command(args: argparse.Namespace) -> int:
    from appliance.workflows import sensor_detector
    from appliance.workflows.detector import detector_report

    if _readings(args.data):
        report = sensor_detector.report(args.model, args.data, log=_say)
    else:
        report = detector_report(args.model, args.data, args.out, log=_say)
    print(format_report(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    for name, path in report.get("files", {}).items():
        print(f"{name}: {path}")
    return 0


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def format_report(report: dict) -> str:
    unit = report.get("items", "images")  # a readings report's items are windows or rows
    lines = [
        f"model {report['model_version']} on {report['data']}: {report['good_images']} good, "
        f"{report['defect_images']} defective {unit}",
        f"{'image ' if unit == 'images' else ''}AUROC {_num(report['image_auroc'])}   "
        f"pixel AUROC {_num(report['pixel_auroc'])}   AUPRO (FPR<=0.3) {_num(report['aupro'])}"
        + (
            f" ({missing} defective image{' has' if missing == 1 else 's have'} no mask under ground_truth/: "
            "left out of both)"
            if (missing := report.get("defect_images_without_mask"))
            else ""
        ),
        f"false alarms on good parts at T2: {_pct(report['false_alarm_rate'])} "
        f"(nominal {_pct(report['nominal_false_alarm_rate'])}, T1/T2 rest on {report.get('calibrated_on')} good "
        f"items never trained on); review {_pct(report['review_rate_good'])}",
        f"defects flagged (review or NG): {_pct(report['defects_flagged'])}; NG {_pct(report['defects_ng'])}",
    ]
    unlike = report.get("unlike_good_parts") or {}
    if unlike.get("good") or unlike.get("defective"):
        lines.append(
            f"unlike the good parts as a whole (appearance check): {unlike['good']} good, {unlike['defective']} "
            "defective images"
            + (" (good parts unlike the training's: the same camera, light and fixture?)" if unlike["good"] else "")
        )
    if report["per_defect"]:
        lines.append(f"  {'defect':<20} {unit:>7} {'AUROC':>7} {'flagged':>8} {'NG':>6}")
        for kind, row in report["per_defect"].items():
            lines.append(
                f"  {kind:<20} {row['images']:>7} {_num(row['image_auroc']):>7} {_pct(row['flagged']):>8} "
                f"{_pct(row['ng']):>6}"
            )
    return "\n".join(lines)


def predict_command(args: argparse.Namespace) -> int:
    from appliance.workflows import sensor_detector
    from appliance.workflows.detector import predict

    readings = [i for i in args.inputs if _readings(i)]
    if readings and len(args.inputs) > 1:
        print("error: give one readings CSV, or images and folders", file=sys.stderr)
        return 2
    if readings:
        sensor_detector.predict(args.model, readings[0], args.output, log=_say)
    else:
        predict(args.model, args.inputs, args.output, log=_say)
    return 0


def add_detector_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detector", help="commission a part: fit a detector on good images, test it, predict")
    verbs = p.add_subparsers(dest="detector_command", required=True)
    p_fit = verbs.add_parser("fit", help="train a NEW detector from scratch on a folder of good images")
    p_fit.add_argument(
        "--normal",
        required=True,
        help="folder of good images (any depth, png/jpg/bmp/tif/webp/pgm/ppm/jp2), or a CSV of normal readings",
    )
    p_fit.add_argument("--size", type=int, default=128, help="network input size in pixels (multiple of 8)")
    p_fit.add_argument("--channels", type=int, choices=(1, 3), default=1)
    p_fit.add_argument("--roi", help="region of interest x,y,width,height in source pixels")
    p_fit.add_argument(
        "--epochs",
        type=int,
        help="images: default enough for 1500 optimiser steps, at least 30; readings (autoencoders): 30",
    )
    p_fit.add_argument("--false-alarm-rate", type=float, default=0.01, help="calibrated NG rate on good parts")
    p_fit.add_argument(
        "--method",
        help="images: draem (default) | autoencoder; readings: kde (default) | knn | gauss | ensemble | dense | conv1d",
    )
    p_fit.add_argument(
        "--score",
        choices=("mean", "max"),
        default="mean",
        help="readings, autoencoders: mean squared error of a window, or its largest error over time",
    )
    p_fit.add_argument(
        "--full-resolution",
        action="store_true",
        help="images: the defect map at full rather than half resolution; finds thin scratches and cracks "
        "better, trains about 2.5x longer",
    )
    p_fit.add_argument(
        "--orientations",
        default="auto",
        help="images: the turns and mirror images training shows the good images in; auto (default): those the "
        "surface looks the same in (none for aligned parts); none: as they come; all: every one of the 8",
    )
    p_fit.add_argument(
        "--no-appearance-check",
        action="store_true",
        help="images: let the defect map alone decide; by default a frame unlike the good parts as a whole "
        "(blank, a part missing or shifted) is NG",
    )
    p_fit.add_argument(
        "--light-tolerance",
        type=float,
        help="images: training shows the good parts under light up to this share weaker or stronger, so that a "
        "lamp's drift is not a defect (default 0.1; 0: none; measured values: always 0)",
    )
    p_fit.add_argument("--seed", type=int, default=0)
    p_fit.add_argument("--window", type=int, default=64, help="readings: rows per window (as the csv: source)")
    p_fit.add_argument("--hop", type=int, default=0, help="readings: rows between windows (default window/2)")
    p_fit.add_argument("--name", help="model name (default: the folder's name)")
    p_fit.add_argument("-o", "--output", required=True, help="bundle file to write (.zip)")
    p_fit.set_defaults(func=fit_command)
    p_test = verbs.add_parser("test", help="test report on the MVTec AD layout (test/good, test/<defect>/, masks)")
    p_test.add_argument("model", help="detector bundle (.zip)")
    p_test.add_argument("--data", required=True, help="root of the MVTec AD layout, or a labelled readings CSV")
    p_test.add_argument("--json", help="write the report as JSON here")
    p_test.add_argument("--out", help="folder for the histogram, ROC / PR curves and the gallery")
    p_test.set_defaults(func=test_command)
    p_pred = verbs.add_parser("predict", help="score images: predictions.csv and heat-map overlays")
    p_pred.add_argument("model", help="detector bundle (.zip)")
    p_pred.add_argument("inputs", nargs="+", help="images or folders of images, or one readings CSV")
    p_pred.add_argument("-o", "--output", required=True, help="output folder")
    p_pred.set_defaults(func=predict_command)
