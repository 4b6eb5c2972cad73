"""Teach jobs: a new detector for one source from its good parts, proven before promotion.

Good parts come from the source's teach frames (what an operator kept), an uploaded dataset or
a folder on the server. A share of them is held out as the test set's good parts (the detector
neither trains nor calibrates on them); known-bad parts (an uploaded dataset in the MVTec AD
layout) join the test set. The result is a registered candidate and its test report, with plots
and gallery; promoting it to the source is the engineer's decision.

``model_report`` jobs give the same report for any registered detector on an uploaded MVTec-layout set.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine

from appliance import registry
from appliance.datasets.images import find_images, mvtec_layout, read_image
from appliance.datasets.library import dataset_dir, normal_dataset_images
from appliance.errors import InvalidInput
from appliance.jobs import JobContext
from appliance.storage import store
from appliance.teach import TeachFrames
from appliance.workflows.detector import FitOptions, detector_report, fit, frame_format, load_images
from appliance.workflows.retrain import dataset_calibrate_images
from models import bundle as bundle_io
from models.calibration import HOLDOUT_ORDER, CalibrationError, calibrate_only_split, holdout_split
from models.detector.twins import twin_links

MIN_TEST_GOOD = 10
MIN_FIT = 36  # what detector fit needs: 20 held out for calibration, one batch of 16 to train on
REPORT_FILES = ("score_histogram.png", "roc_pr.png", "gallery.png", "report.json")


def job_dir(data_dir: Path, job_id: int) -> Path:
    return Path(data_dir) / "jobs" / str(job_id)


def good_images(data_dir: Path, params: dict[str, Any]) -> list[Path]:
    """The good parts a teach job learns from (``source``: live, dataset or folder)."""
    origin = params.get("source", "live")
    if origin == "live":
        return TeachFrames(Path(data_dir) / "teach").frames(params["source_id"])
    if origin == "dataset":
        folder = dataset_dir(data_dir, params["dataset"], must_exist=True)
        train_good = folder / "train" / "good"
        return find_images(train_good) if train_good.is_dir() else normal_dataset_images(folder)[0]
    return find_images(params["folder"])


def calibrate_only_images(engine: Engine, data_dir: Path, params: dict[str, Any]) -> list[Path]:
    """Good parts to calibrate and test on, never to train on: a collected dataset's ``calibrate``
    folder (the unjudged review items beside its OK items: without them the thresholds would
    rest on the good parts below the old model's T1 alone), less those confirmed as defects since."""
    if params.get("source", "live") != "dataset":
        return []
    folder = dataset_dir(data_dir, params["dataset"], must_exist=True)
    return (
        [] if (folder / "train" / "good").is_dir() else dataset_calibrate_images(engine, data_dir, [params["dataset"]])
    )


def split(paths: list[Path], share: float, twins: np.ndarray | None = None) -> tuple[list[Path], list[Path]]:
    """(for the detector, held out as the test set's good parts), chosen as the detector chooses
    its calibration images (``calibration.holdout_split`` in the default order; ``twins``: no
    test image keeps a near-twin among the detector's, so the test's false-alarm rate is that of
    new parts). Twins of test images that the split sets aside go to neither side."""
    try:
        held, train = holdout_split(len(paths), share, MIN_FIT, 0, HOLDOUT_ORDER, min_held=MIN_TEST_GOOD, twins=twins)
    except CalibrationError:
        msg = (
            f"{len(paths)} good images: teaching needs at least {MIN_FIT + MIN_TEST_GOOD} "
            f"({MIN_FIT} to train and calibrate on, {MIN_TEST_GOOD} or more held out to test on)"
        )
        raise InvalidInput(msg) from None
    return [paths[i] for i in train], [paths[i] for i in held]


def check(data_dir: Path, params: dict[str, Any]) -> int:
    """Refuse a teach job before it is queued: too few good images, a known-bad set that is not
    in the MVTec layout. Returns the number of good images."""
    paths = good_images(data_dir, params)
    split(paths, params.get("test_share", 0.2))
    if params.get("roi"):
        x, y, w, h = params["roi"]
        height, width = read_image(paths[0]).shape[:2]
        if x + w > width or y + h > height:
            msg = f"region of interest {list(params['roi'])} lies outside the {width}×{height} frames"
            raise InvalidInput(msg)
    if params.get("known_bad"):
        mvtec_layout(dataset_dir(data_dir, params["known_bad"], must_exist=True), need_good=False)
    return len(paths)


def _place(paths: list[Path], folder: Path, prefix: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(paths):
        target = folder / f"{prefix}{i:05d}{path.suffix.lower()}"
        try:
            os.link(path, target)  # no copy where the file system allows it
        except OSError:
            shutil.copy2(path, target)


def _known_bad(data_dir: Path, name: str, work: Path) -> None:
    """The known-bad parts (and their masks) of an MVTec-layout dataset into the test set."""
    layout = mvtec_layout(dataset_dir(data_dir, name, must_exist=True), need_good=False)
    for item in layout.test:
        if item.defect == "good":
            continue  # the source's own held-out good parts are the good side of the test
        target = work / "test" / item.defect / item.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(item.path, target)
        if item.mask is not None:
            mask = work / "ground_truth" / item.defect / f"{target.stem}_mask.png"
            mask.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item.mask, mask)


def teach(ctx: JobContext, engine: Engine, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    source_id = params["source_id"]
    options = FitOptions(
        size=params.get("size", 128),
        channels=params.get("channels", 1),
        roi=tuple(params["roi"]) if params.get("roi") else None,
        epochs=params.get("epochs"),
        false_alarm_rate=params.get("false_alarm_rate", 0.01),
        method=params.get("method", "draem"),
        full_resolution=params.get("full_resolution", False),
        orientations=params.get("orientations", "auto"),
        appearance_check=params.get("appearance_check", FitOptions.appearance_check),
        light_jitter=params.get("light_tolerance", FitOptions.light_jitter),
        name=f"teach-{source_id}",
    )
    paths = good_images(data_dir, params)
    ctx.update(message=f"teaching {source_id}: looking for near-twins among {len(paths)} good parts", progress=0.01)
    spec = options.input_spec()
    frame_format(paths, spec, log=lambda _: None)  # as fit reads them (fit says how, in the job's log)
    train, held = split(paths, params.get("test_share", 0.2), twin_links(load_images(paths, spec)))
    work = job_dir(data_dir, ctx.job_id)
    if work.exists():
        shutil.rmtree(work)
    _place(train, work / "train" / "good")
    _place(held, work / "test" / "good")
    band = calibrate_only_images(engine, data_dir, params)
    to_test, to_fit = calibrate_only_split(
        len(band), len(held) / max(len(held) + len(train), 1), options.config().holdout if band else 0.0
    )
    band_test, band_fit = (
        [b for b, t in zip(band, to_test, strict=True) if t],
        [b for b, f in zip(band, to_fit, strict=True) if f],
    )
    _place(band_test, work / "test" / "good", prefix="calibrate-only-")
    if params.get("known_bad"):
        _known_bad(data_dir, params["known_bad"], work)
    aside = len(paths) - len(train) - len(held)
    ctx.update(
        message=f"teaching {source_id}: {len(train)} good parts, {len(held)} held out to test"
        + (f", {aside} near-twins of those set aside" if aside else "")
        + (
            f"; of {len(band)} good parts to calibrate on only (never trained on), {len(band_fit)} calibrate "
            f"the detector and {len(band_test)} join the test, in the shares the others were split"
            if band
            else ""
        ),
        progress=0.02,
    )

    def on_epoch(progress: dict[str, Any]) -> None:
        ctx.check_cancel()
        ctx.update(progress=0.05 + 0.8 * progress["epoch"] / progress["epochs"], message=progress["message"])

    models_dir = Path(data_dir) / "models"
    path = models_dir / f"teach-{ctx.job_id}.zip"
    warnings: list[str] = []

    def keep_warnings(line: str) -> None:
        if line.startswith("warning:"):
            warnings.append(line)

    summary = fit(work / "train" / "good", path, options, log=keep_warnings, on_epoch=on_epoch, calibrate_also=band_fit)
    ctx.update(message="testing on held-out good parts" + (" and known-bad parts" if params.get("known_bad") else ""))
    report = detector_report(path, work, out=work / "report", log=lambda line: None)
    version = summary["version"]
    store.register_model(
        engine,
        version=version,
        filename=path.name,
        digest=bundle_io.file_digest(path),
        data=path.read_bytes(),
        kind=bundle_io.load(path).kind,
        metrics={"calibration": summary["calibration"], "report": _brief(report), "taught_for": source_id},
    )
    ctx.update(message=f"candidate {version} registered; promote it to {source_id} to go live", progress=0.98)
    return {
        "candidate_version": version,
        "source_id": source_id,
        "report": report,
        "train_images": len(train),
        "calibrate_only_images": {"calibrated_on": len(band_fit), "tested_on": len(band_test)},
        "twins_set_aside": aside,
        "warnings": warnings,
    }


def _brief(report: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "image_auroc",
        "pixel_auroc",
        "aupro",
        "false_alarm_rate",
        "nominal_false_alarm_rate",
        "calibrated_on",
        "defects_flagged",
    )
    return {k: report.get(k) for k in keys}


def model_report(ctx: JobContext, engine: Engine, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    """The test report of a registered detector on an uploaded MVTec-layout dataset."""
    path = registry.model_path(engine, Path(data_dir) / "models", params["version"])
    folder = dataset_dir(data_dir, params["dataset"], must_exist=True)
    ctx.update(message=f"testing {params['version']} on {params['dataset']}", progress=0.05)
    report = detector_report(path, folder, out=job_dir(data_dir, ctx.job_id) / "report", log=lambda line: None)
    return {"version": params["version"], "dataset": params["dataset"], "report": report}
