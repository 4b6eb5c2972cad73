"""Retraining on new normal data: recent OK items, items marked false positive, uploaded datasets.

A retrain fine-tunes the active detector on the new normal images, recalibrates it, compares it
with the active model on the same held-out normal images (and on confirmed defects, where there
are any), and registers the result as a *candidate*: promotion stays a human decision. With
recent OK items, a sample of the unjudged review items joins the calibration and the comparison
(:func:`review_band_images`): the OK items alone leave out the good parts above the active T1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine

from appliance import registry
from appliance.datasets.images import ImageFolderError, read_image
from appliance.datasets.library import dataset_dir, normal_dataset_images
from appliance.errors import InvalidInput, Unavailable
from appliance.images import ImageStore
from appliance.jobs import JobContext
from appliance.storage import queries, store
from engine.training import Callback
from models import bundle as bundle_io
from models.calibration import HOLDOUT_ORDER, calibrate_only_split, holdout_split
from models.detector.model import Detector
from models.detector.twins import twin_links
from models.inference import Inferencer
from models.preprocess import InputSpec, PreprocessError, preprocess


def normal_images(engine: Engine, data_dir: Path, params: dict[str, Any]) -> list[Path]:
    """Image files of new normal data to train on: recent OK items, false positives, datasets
    (but their images to calibrate on only: :func:`review_band_images`)."""
    images = ImageStore(data_dir / "images")
    refs: list[str] = []
    if params.get("include_ok", True):
        refs += queries.image_refs(engine, decision="ok", limit=int(params.get("max_images", 500)))
    if params.get("include_false_positives", True):
        refs += queries.image_refs(engine, alert_state="false_positive")
    files = [images.source(r) for r in dict.fromkeys(refs) if images.path(r).is_file()]
    for name in params.get("datasets", []):
        files += normal_dataset_images(dataset_dir(data_dir, name))[0]
    return files


def enough_normal_images(engine: Engine, data_dir: Path, params: dict[str, Any]) -> list[Path]:
    """:func:`normal_images`, refused (InvalidInput) when there are fewer than ``min_images``:
    asked before a retraining is queued, and again when it starts."""
    files = normal_images(engine, data_dir, params)
    min_images = int(params.get("min_images", 40))
    if len(files) < min_images:
        kept, share = "", float(params.get("keep_ok_images", 0.0)) * 100
        if params.get("include_ok", True):
            kept = f"the line keeps {share:g} % of its OK images (keep_ok_images); "
        msg = (
            f"only {len(files)} new normal images; retraining needs at least {min_images}: {kept}"
            "wait for more, mark false positives as such, or upload a dataset of normal images"
        )
        raise InvalidInput(msg)
    return files


def review_band_images(engine: Engine, data_dir: Path, params: dict[str, Any]) -> list[Path]:
    """Images to calibrate on, never to train on. With recent OK items: unjudged review items,
    in the share the line keeps OK images (``keep_ok_images``) and from as far back as the newest
    ``max_images`` OK images go: with the held-out OK images, a sample of the good parts as the
    line saw them. The OK items alone are the good parts below the active T1: a candidate
    calibrated on them alone sets its thresholds too low (measured on the synthetic line with 5 %
    defects: 4.3 % of new good parts NG at a nominal 1 %; 0.85 % with the band). An unjudged item
    may be a defect: these count as good, which can only raise the thresholds (30 % defects:
    0.19 %). With datasets: their ``calibrate`` folders (collected so: ``POST /datasets``)."""
    files = dataset_calibrate_images(engine, data_dir, params.get("datasets", []))
    keep = float(params.get("keep_ok_images", 0.0))
    if not params.get("include_ok", True) or keep <= 0:
        return files
    ok = queries.image_rows(engine, decision="ok", limit=int(params.get("max_images", 500)))
    if not ok:
        return files
    since = min(t for _, t in ok)
    images = ImageStore(data_dir / "images")
    refs = queries.image_refs(engine, decision="review", alert_state=("open", "acknowledged"), since=since)
    chosen = np.random.default_rng(0).random(len(refs)) < keep
    return [images.source(r) for r, c in zip(refs, chosen, strict=True) if c and images.path(r).is_file()] + files


def dataset_calibrate_images(engine: Engine, data_dir: Path, names: list[str]) -> list[Path]:
    """The named datasets' images to calibrate on only (review items nobody had judged when they
    were collected) less those confirmed as defects since (stored and collected images share their
    content-addressed names)."""
    confirmed = {Path(r).stem for r in queries.image_refs(engine, alert_state="confirmed")}
    files = [f for name in names for f in normal_dataset_images(dataset_dir(data_dir, name))[1]]
    return [f for f in files if f.stem not in confirmed]


def confirmed_defect_images(engine: Engine, data_dir: Path) -> list[Path]:
    images = ImageStore(data_dir / "images")
    refs = queries.image_refs(engine, alert_state="confirmed")
    return [images.source(r) for r in refs if images.path(r).is_file()]


def readable(files: list[Path], spec: InputSpec, ctx: JobContext) -> tuple[list[np.ndarray], np.ndarray]:
    """The images of ``files`` that decode and that the model can read, as stored and as the
    network sees them; the others are skipped and named, with why, in the job's log (a stored
    frame damaged on disk, or one of another size after a camera change, must not stop a
    retraining, nor go unsaid)."""
    images, seen, bad = [], [], []
    for f in files:
        try:
            image = read_image(f)
        except ImageFolderError:
            bad.append(f"{f} (cannot be decoded)")
            continue
        try:
            seen.append(preprocess(image, spec))
        except PreprocessError as exc:
            bad.append(f"{f} ({exc})")
            continue
        images.append(image)
    if bad:
        names = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        ctx.update(message=f"skipped {len(bad)} of {len(files)} images the model cannot read: {names}")
    return images, np.stack(seen).astype(np.float32, copy=False) if seen else np.zeros((0, *spec.tensor_shape))


def retrain(ctx: JobContext, engine: Engine, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Fine-tune the active detector on new normal images, recalibrate it, compare it with the
    active model and register it as a candidate."""
    active = store.active_model(engine)
    if active is None:
        msg = "no active model to retrain"
        raise Unavailable(msg)
    models_dir = data_dir / "models"
    active_path = registry.model_path(engine, models_dir, active[0])  # from the database on another node
    bundle = bundle_io.load(active_path)
    spec = InputSpec.from_dict(bundle.meta["input"])
    if spec.kind != "image":
        msg = (
            f"model {active[0]} judges sensor vectors, and retraining learns from new normal images; "
            "fit a new one on normal readings (appliance detector fit --normal readings.csv) and promote it"
        )
        raise InvalidInput(msg)
    files = enough_normal_images(engine, data_dir, params)
    min_images = int(params.get("min_images", 40))
    images, x = readable(files, spec, ctx)
    if len(images) < min_images:
        msg = f"only {len(images)} of {len(files)} new normal images can be read; retraining needs {min_images}"
        raise InvalidInput(msg)
    ctx.update(message=f"retraining {active[0]} on {len(images)} normal images", progress=0.02)
    total = len(x)
    # a share the candidate never sees (neither trained nor calibrated on, nor any near-twin of it):
    # where both models are compared
    n_compare = max(0, min(round(0.2 * len(x)), len(x) - 36))  # the detector needs 36 to train and calibrate
    if n_compare:
        share = n_compare / len(x)
        compare_idx, keep = holdout_split(len(x), share, 36, 0, HOLDOUT_ORDER, min_held=n_compare, twins=twin_links(x))
        x, held_out = x[keep], [images[i] for i in compare_idx]
    else:
        share, held_out = 0.0, []
    detector = Detector.from_bundle(bundle)
    detector.config.epochs = int(params.get("epochs", 10))
    # the review band, split as the OK images are: its share of the comparison and of the calibration
    band, x_band = readable(review_band_images(engine, data_dir, params), spec, ctx)
    to_compare, to_calibrate = calibrate_only_split(len(band), share, detector.config.holdout)
    held_out += [b for b, c in zip(band, to_compare, strict=True) if c]
    if len(band):
        ctx.update(
            message=f"calibrating on {int(to_calibrate.sum())} and comparing on {int(to_compare.sum())} of "
            f"{len(band)} images to calibrate on only (unjudged review items, datasets' calibrate folders: "
            "counted as good, never trained on)"
        )

    class Progress(Callback):
        def on_epoch_end(self, trainer, record):
            ctx.check_cancel()
            ctx.update(
                progress=0.05 + 0.85 * record["epoch"] / detector.config.epochs,
                message=f"epoch {record['epoch']}/{detector.config.epochs}: cost {record['cost']:.4f}",
                result={"curve": trainer.history},  # the learning curve so far, for a live plot
            )

    summary = detector.fit(x, callbacks=(Progress(),), calibrate_also=x_band[to_calibrate])
    candidate = detector.to_bundle(
        spec,
        provenance={"retrained_from": active[0], "normal_images": total, "job": ctx.job_id},
        name="retrained-detector",
    )
    version = candidate.meta["version"] = f"{candidate.meta['version']}-job{ctx.job_id}"
    path = models_dir / f"detector-{version}.zip"
    candidate.save(path)
    defects, _ = readable(confirmed_defect_images(engine, data_dir), spec, ctx)
    comparison = compare(Inferencer(active_path), Inferencer(path), held_out, defects)
    store.register_model(
        engine,
        version=candidate.meta["version"],
        filename=path.name,
        digest=bundle_io.file_digest(path),
        data=path.read_bytes(),
        kind=candidate.kind,
        metrics={"calibration": summary["calibration"], "comparison": comparison},
    )
    ctx.update(message=f"candidate {candidate.meta['version']} registered; promote it to use it", progress=0.98)
    return {
        "candidate_version": candidate.meta["version"],
        "normal_images": total,
        "review_band_images": {"calibrated_on": int(to_calibrate.sum()), "compared_on": int(to_compare.sum())},
        "comparison": comparison,
        "train_seconds": summary["train_seconds"],
        "curve": detector.history,
    }


def compare(active: Any, candidate: Any, normal: list[np.ndarray], defects: list[np.ndarray]) -> dict[str, Any]:
    """Both models on the same held-out normal images, which the candidate never trained on
    (false-alarm rate at each one's T2) and, where confirmed defects exist, their AUROC. For a
    named test set, test both versions with ``POST /models/{version}/test``."""
    from models.metrics import image_auroc

    def scores(model: Any, batch: list[np.ndarray]) -> np.ndarray:
        return np.array([r.score for r in model.predict_batch(batch)]) if batch else np.array([])

    out: dict[str, Any] = {"held_out_normal_images": len(normal), "confirmed_defects": len(defects)}
    for name, model in (("active", active), ("candidate", candidate)):
        s_normal, s_defect = scores(model, normal), scores(model, defects)
        entry = {
            "version": model.version,
            "t2": model.thresholds[1],
            "false_alarm_rate": float(np.mean(s_normal >= model.thresholds[1])) if len(s_normal) else None,
        }
        if len(s_defect) and len(s_normal):
            entry["auroc"] = image_auroc(
                np.r_[s_normal, s_defect], np.r_[np.zeros(len(s_normal)), np.ones(len(s_defect))]
            )
        out[name] = entry
    return out
