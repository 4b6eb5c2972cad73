"""Detector workflows, anomalib's verbs: ``fit`` a new detector from scratch on a folder of good
parts, test it on the MVTec AD layout (``detector_report``) (the report engineers judge a model by), ``predict``
images into a CSV with heat-map overlays.

Scoring in ``test`` and ``predict`` goes through the serving path (the bundle's ONNX graph in
onnxruntime, the bundle's preprocessing), so the report describes what the line will do.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.datasets.images import ImageFolderError, MVTecLayout, find_images, mvtec_layout, other_files, read_all
from appliance.errors import InvalidInput
from appliance.images import overlay
from appliance.registry import safe_name
from connectors.base import IMAGE_KINDS
from engine.training import Callback
from models import metrics
from models.decision import is_flagged
from models.detector.model import Detector, DetectorConfig, fit_light_to
from models.inference import Inferencer, Result
from models.preprocess import InputSpec, bit_depth_of, pixel_kind, preprocess_image, value_range_of
from models.scoring import UNLIKE

Log = Callable[[str], None]
GALLERY = 8  # worst-scored good parts and best-hidden defects shown
MIN_STEPS = 500  # fewer optimiser steps than this: warn (a 64 px washer reached AUROC 0.57 after 20, 0.9 after 120)


@dataclass
class FitOptions:
    size: int = 128
    channels: int = 1
    roi: tuple[int, int, int, int] | None = None
    epochs: int | None = None  # None: the detector's default (enough for its minimum optimiser steps)
    false_alarm_rate: float = 0.01
    method: str = "draem"
    batch_size: int = 16
    seed: int = 0
    name: str = ""
    full_resolution: bool = False  # draem: the discriminative U-Net at full resolution (thin defects, ~2.5x training)
    orientations: str = "auto"  # turns and mirror images training shows the good images in (DetectorConfig)
    appearance_check: bool = DetectorConfig.appearance_check  # frames unlike the good parts as a whole score NG
    light_jitter: float = DetectorConfig.light_jitter  # training shows the good images under light this much off
    extra: dict[str, Any] = field(default_factory=dict)  # further DetectorConfig fields

    def config(self) -> DetectorConfig:
        fine = self.full_resolution and self.method == "draem"  # the autoencoder has no defect-map network
        extra = {"clf_stem_stride": 1, **self.extra} if fine else self.extra
        chosen = {
            "method": self.method,
            "size": self.size,
            "channels": self.channels,
            "epochs": self.epochs,
            "false_alarm_rate": self.false_alarm_rate,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "orientations": self.orientations,
            "appearance_check": self.appearance_check,
            "light_jitter": self.light_jitter,
        }
        return DetectorConfig(**{**chosen, **extra})  # further fields win

    def input_spec(self) -> InputSpec:
        return InputSpec(kind="image", channels=self.channels, size=(self.size, self.size), roi=self.roi)


def parse_roi(text: str | None) -> tuple[int, int, int, int] | None:
    """``x,y,w,h`` in source-image pixels."""
    if not text:
        return None
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        msg = f"--roi must be x,y,width,height in whole pixels, got {text!r}"
        raise ImageFolderError(msg) from None
    if min(x, y) < 0 or min(w, h) < 1:
        msg = f"--roi {text!r}: x and y must be >= 0, width and height >= 1"
        raise ImageFolderError(msg)
    return x, y, w, h


def load_images(paths: Sequence[Path], spec: InputSpec) -> np.ndarray:
    """The images as the network sees them (N, C, H, W), read in batches (never all at full size)."""
    out = []
    for chunk, images in read_all(paths):
        for path, image in zip(chunk, images, strict=True):
            try:
                out.append(preprocess_image(image, spec))
            except ValueError as exc:  # e.g. the ROI lies outside this image
                msg = f"{path}: {exc}"
                raise ImageFolderError(msg) from exc
    return np.stack(out)


def frame_format(paths: Sequence[Path], spec: InputSpec, log: Log) -> None:
    """Set how the good images' frames are read, and say so: the bits 16-bit images use
    (:func:`models.preprocess.bit_depth_of` of their largest value; a 12-bit camera's files: 12;
    16 when there are none), the span of measured values (float or signed TIFFs,
    :func:`models.preprocess.value_range_of`), the one kind of image the model will read (counts or
    measured values; a folder mixing both is refused), and with a region of interest the frame size it
    was drawn on (one size, or refused). Reads every image once more (a folder may mix formats),
    which costs seconds against the minutes of training."""
    largest: list[int] = []
    lows: list[float] = []
    highs: list[float] = []
    sizes: Counter[tuple[int, int]] = Counter()
    kinds: dict[str, list[Path]] = {"counts": [], "values": []}
    for chunk, images in read_all(paths):
        for path, im in zip(chunk, images, strict=True):
            sizes[im.shape[:2]] += 1
            kinds[pixel_kind(im.dtype)].append(path)
            if im.dtype == np.uint16:
                largest.append(int(im.max()))
            elif im.dtype != np.uint8 and (finite := im[np.isfinite(im)]).size:  # missing readings aside
                lows.append(float(finite.min()))
                highs.append(float(finite.max()))
    if kinds["counts"] and kinds["values"]:
        counts, values = kinds["counts"], kinds["values"]
        msg = (
            f"the good images mix counts (8- or 16-bit: {len(counts)}, e.g. {counts[0].name}) and measured values "
            f"(float or signed: {len(values)}, e.g. {values[0].name}); a model reads one kind of image"
        )
        raise ImageFolderError(msg)
    spec.pixels = "values" if kinds["values"] else "counts"
    spec.bit_depth = bit_depth_of(max(largest)) if largest else 16
    if spec.bit_depth < 16:
        log(f"16-bit images using {spec.bit_depth} bits: read with {2**spec.bit_depth - 1:,} as full scale")
    if lows:
        spec.value_range = value_range_of(min(lows), max(highs))
        low, high = spec.value_range
        log(f"images of measured values (float): read from {low:.6g} as black to {high:.6g} as white")
    if spec.roi is not None and sizes:
        if len(sizes) > 1:
            found = ", ".join(f"{w}×{h} ({n})" for (h, w), n in sizes.most_common(5))
            msg = f"a region of interest needs frames of one size; the good images come in {len(sizes)}: {found}"
            raise ImageFolderError(msg)
        spec.frame_size = next(iter(sizes))


def unique_version(bundle: Any) -> Any:
    """``<name>-<time>-<random>``: the bundle's own version (unique even for two fits in the same
    second) with the part it is for in front."""
    bundle.meta["version"] = f"{safe_name(bundle.meta['name'])[:60]}-{bundle.meta['version']}"
    return bundle


def folder_digest(root: Path, paths: Sequence[Path]) -> str:
    """SHA-256 over the relative names and contents of the training images (provenance)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p.relative_to(root)).encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


class _Progress(Callback):
    """epoch k/N, cost, seconds per epoch, time left; ``check`` may raise to cancel."""

    def __init__(self, epochs: int, log: Log, check: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.epochs, self.log, self.check, self.start = epochs, log, check, time.perf_counter()

    def on_epoch_end(self, trainer: Any, record: dict[str, float]) -> None:
        done = int(record["epoch"])
        per_epoch = (time.perf_counter() - self.start) / done
        left = per_epoch * (self.epochs - done)
        line = f"epoch {done}/{self.epochs}: cost {record['cost']:.4f}, {per_epoch:.1f} s/epoch, {_duration(left)} left"
        self.log(line)
        if self.check is not None:
            self.check({"epoch": done, "epochs": self.epochs, "message": line, "curve": trainer.history})


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def fit(
    normal: str | Path,
    out: str | Path,
    options: FitOptions,
    log: Log = print,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    calibrate_also: Sequence[Path] = (),
) -> dict[str, Any]:
    """Train a new detector from scratch on the good images under ``normal``, calibrate T1/T2 on
    a held-out share of them (images it never trained on) and on ``calibrate_also`` (images
    counted as good that it must never learn from), save the bundle to ``out``."""
    root = Path(normal)
    try:
        config = options.config()  # refuses a bad size / method before any image is read
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    paths = find_images(root)
    if others := other_files(root):
        kinds = ", ".join(f"{n} {suffix}" for suffix, n in others.items())
        n = sum(others.values())
        what = "file is not an image read here and is" if n == 1 else "files are not images read here and are"
        log(f"{n} {what} left out of {root} ({kinds})")
    min_needed = 20 + config.batch_size  # holdout_split's minimum: 20 held out, one batch trained on
    if len(paths) < min_needed:
        msg = (
            f"{root} holds {len(paths)} images ({IMAGE_KINDS}, any depth); a detector needs at least "
            f"{min_needed}: 20 or more held out for calibration and one batch of {config.batch_size} to train on"
        )
        raise ImageFolderError(msg)
    spec = options.input_spec()
    log(f"reading {len(paths)} good images from {root}")
    frame_format(paths, spec, log)
    fit_light_to(config, spec)
    x = load_images(paths, spec)
    also = load_images(calibrate_also, spec) if calibrate_also else None
    detector = Detector(config)
    split = detector.holdout(x)
    train = split.train
    how = {"latest": f" (the last {len(split.held)} by file name)", "blocks": " (runs of consecutive files)"}
    which = how.get(config.holdout_order, "")
    log(
        f"training a detector ({config.method}) from scratch: {len(train)} images for training, {len(split.held)} held "
        f"out for calibration{which}{split.describe()}, {options.size}x{options.size}, {options.channels} channel(s), "
        f"{config.epochs_for(len(train))} epochs"
    )
    steps = config.epochs_for(len(train)) * (len(train) // config.batch_size)
    if steps < MIN_STEPS:
        log(
            f"warning: {steps} optimiser steps ({len(train) // config.batch_size} per epoch x "
            f"{config.epochs_for(len(train))} epochs) "
            f"may leave the detector undertrained; {MIN_STEPS} or more is safer: raise --epochs or add good images"
        )
    if calibrate_also:
        log(f"calibrating also on {len(calibrate_also)} images counted as good, never trained on")
    summary = detector.fit(
        x, callbacks=(_Progress(config.epochs_for(len(train)), log, on_epoch),), split=split, calibrate_also=also
    )
    provenance = {
        "dataset": str(root),
        "dataset_digest": folder_digest(root, paths),
        "normal_images": len(x),
        "fit": {k: summary[k] for k in ("train_images", "holdout_images", "twins_left_out", "orientations")},
    }
    generic = {"good", "normal", "ok", "train", "training", "images", ""}
    name = options.name or next((p.name for p in (root, *root.parents) if p.name.lower() not in generic), "detector")
    bundle = unique_version(detector.to_bundle(spec, provenance=provenance, name=name))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    bundle.save(out)
    cal = summary["calibration"]
    log(summary["orientations_note"])
    log(
        f"trained in {summary['train_seconds']:.0f} s; calibrated on {summary['holdout_images']} held-out good images"
        + (f" and {summary['calibrated_also']} to calibrate on only" if summary["calibrated_also"] else "")
        + ": "
        f"T1={cal['t1']:.5f} T2={cal['t2']:.5f} (false-alarm rate {cal['false_alarm_rate']:.2%}, {cal['method']})"
    )
    if summary["appearance_limit"] is not None:
        log(
            f"appearance check: a frame farther than {summary['appearance_limit']:.3g} from the good parts as a "
            "whole (blank, a part missing or shifted) is NG, 'unlike the good parts'"
        )
    else:
        log("appearance check: off (the defect map alone decides)")
    log(f"wrote {out} (version {bundle.version})")
    return {"path": str(out), "version": bundle.version, **summary}


# -- scoring through the serving path ---------------------------------------------------------
@dataclass
class Scored:
    paths: list[Path]
    results: list[Result]
    views: list[np.ndarray]  # what the network saw, as uint8 (for the gallery)

    @property
    def scores(self) -> np.ndarray:
        return np.array([r.score for r in self.results], np.float64)

    @property
    def maps(self) -> np.ndarray:
        return np.stack([r.anomaly_map for r in self.results]).astype(np.float32)


def _view(x: np.ndarray) -> np.ndarray:
    img = np.clip(x.transpose(1, 2, 0) * 255, 0, 255).astype(np.uint8)
    return img[:, :, 0] if img.shape[2] == 1 else img


def score_images(model: Inferencer, paths: Sequence[Path], batch: int = 16) -> Scored:
    if model.input_spec.kind != "image":
        msg = f"model {model.version!r} takes {model.input_spec.kind}s, not images"
        raise ImageFolderError(msg)
    scored = Scored([], [], [])
    for chunk, images in read_all(paths, batch):
        try:
            results = model.predict_batch(images)
        except ValueError as exc:
            msg = f"{chunk[0].parent}: {exc}"
            raise ImageFolderError(msg) from exc
        scored.paths += chunk
        scored.results += results
        scored.views += [_view(preprocess_image(img, model.input_spec)) for img in images]
    return scored


def _mask(path: Path | None, spec: InputSpec) -> np.ndarray:
    """A ground-truth mask in the model's view (ROI, size); all-clear without a mask file."""
    h, w = spec.size
    if path is None:
        return np.zeros((h, w), bool)
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        msg = f"{path}: the mask cannot be decoded as an image"
        raise ImageFolderError(msg)
    if spec.roi is not None:
        x, y, rw, rh = spec.roi
        mask = mask[y : y + rh, x : x + rw]
    return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST) > 0


def detector_report(
    model_path: str | Path, data: str | Path, out: str | Path | None = None, log: Log = print
) -> dict[str, Any]:
    """The test report of a detector on the MVTec AD layout under ``data``: image AUROC, pixel
    AUROC and AUPRO (FPR ≤ 0.3) where masks exist, the false-alarm rate on ``test/good`` at the
    calibrated T2 next to the nominal rate, the share of defects flagged, a per-defect table; with
    ``out``, plots and a gallery."""
    model = Inferencer(model_path)
    layout = mvtec_layout(data)
    log(f"scoring {len(layout.test)} test images of {layout.root} ({', '.join(['good', *layout.defects])})")
    scored = score_images(model, [i.path for i in layout.test])
    by_path = {i.path: i for i in layout.test}
    items = [by_path[p] for p in scored.paths]
    report = _report(model, layout, items, scored)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        report["files"] = _write_report_files(out, report, items, scored, model)
    return report


def item_report(model: Inferencer, data: str, kinds: np.ndarray, results: Sequence[Result]) -> dict[str, Any]:
    """The report's figures from each item's kind ("good" or the defect's name) and result: for
    images and for sensor windows alike (pixel metrics are added where masks exist)."""
    scores = np.array([r.score for r in results], np.float64)
    defect = kinds != "good"
    flagged = np.array([is_flagged(r.decision) for r in results])
    ng = np.array([r.decision == "ng" for r in results])
    if defect.all():
        msg = f"{data}: every item is defective; the false-alarm rate needs good ones"
        raise ImageFolderError(msg)
    per_defect = {}
    for kind in sorted(set(kinds.tolist()) - {"good"}):
        sel = kinds == kind
        per_defect[kind] = {
            "images": int(sel.sum()),
            "image_auroc": metrics.image_auroc(scores[sel | ~defect], defect[sel | ~defect]),
            "flagged": float(flagged[sel].mean()),
            "ng": float(ng[sel].mean()),
            "mean_score": float(scores[sel].mean()),
        }
    t1, t2 = model.thresholds
    calibration = model.meta.get("postprocess", {}).get("calibration", {})
    return {
        "model_version": model.version,
        "data": data,
        "images": len(results),
        "good_images": int((~defect).sum()),
        "defect_images": int(defect.sum()),
        "image_auroc": metrics.image_auroc(scores, defect) if defect.any() else None,
        "pixel_auroc": None,
        "aupro": None,
        "false_alarm_rate": float(ng[~defect].mean()),
        "review_rate_good": float((flagged & ~ng)[~defect].mean()),
        "nominal_false_alarm_rate": calibration.get("false_alarm_rate"),
        "calibrated_on": calibration.get("n"),  # how many good items the thresholds rest on
        "calibration_method": calibration.get("method"),
        "defects_flagged": float(flagged[defect].mean()) if defect.any() else None,
        "defects_ng": float(ng[defect].mean()) if defect.any() else None,
        "t1": t1,
        "t2": t2,
        # items the appearance check found unlike the good parts as a whole (models.scoring.AppearanceCheck)
        "unlike_good_parts": {
            "good": int(sum(r.label == UNLIKE for r, d in zip(results, defect, strict=True) if not d)),
            "defective": int(sum(r.label == UNLIKE for r, d in zip(results, defect, strict=True) if d)),
        },
        "per_defect": per_defect,
    }


def _report(model: Inferencer, layout: MVTecLayout, items: list[Any], scored: Scored) -> dict[str, Any]:
    report = item_report(model, str(layout.root), np.array([i.defect for i in items]), scored.results)
    defect = np.array([i.defect != "good" for i in items])
    has_mask = np.array([i.mask is not None for i in items])
    with_masks = ~defect | has_mask  # good parts are defect-free everywhere
    if (defect & has_mask).any():
        masks = np.stack([_mask(i.mask, model.input_spec) for i, m in zip(items, with_masks, strict=True) if m])
        maps = scored.maps[with_masks]
        report["pixel_auroc"] = metrics.pixel_auroc(maps, masks)
        report["aupro"] = metrics.aupro(maps, masks, max_fpr=0.3)
        # a defective image without a ground-truth mask is left out of the pixel metrics
        report["defect_images_without_mask"] = int((defect & ~has_mask).sum())
    return report


def _write_report_files(
    out: Path, report: dict[str, Any], items: list[Any], scored: Scored, model: Inferencer
) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    scores = scored.scores
    defect = np.array([i.defect != "good" for i in items])
    files = {}
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.histogram_bin_edges(scores, 50)
    ax.hist(scores[~defect], bins, alpha=0.6, label=f"good ({(~defect).sum()})", color="tab:blue")
    if defect.any():
        ax.hist(scores[defect], bins, alpha=0.6, label=f"defective ({defect.sum()})", color="tab:red")
    for t, name in ((report["t1"], "T1 review"), (report["t2"], "T2 NG")):
        ax.axvline(t, ls="--", color="k" if name.startswith("T2") else "grey", label=f"{name} {t:.4g}")
    ax.set_xlabel("anomaly score")
    ax.set_ylabel("images")
    ax.legend()
    fig.tight_layout()
    files["histogram"] = str(out / "score_histogram.png")
    fig.savefig(files["histogram"], dpi=100)
    plt.close(fig)
    if defect.any():
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        fpr, tpr, _ = roc_curve(defect, scores)
        left.plot(fpr, tpr, label=f"AUROC {report['image_auroc']:.3f}")
        left.plot([0, 1], [0, 1], ls=":", color="grey")
        left.set_xlabel("false-positive rate")
        left.set_ylabel("true-positive rate")
        left.set_title("ROC (image level)")
        left.legend()
        precision, recall, _ = precision_recall_curve(defect, scores)
        right.plot(recall, precision)
        right.set_xlabel("recall")
        right.set_ylabel("precision")
        right.set_title("precision-recall (image level)")
        fig.tight_layout()
        files["curves"] = str(out / "roc_pr.png")
        fig.savefig(files["curves"], dpi=100)
        plt.close(fig)
    good_idx = np.flatnonzero(~defect)
    worst_good = good_idx[np.argsort(-scores[good_idx])][:GALLERY]
    defect_idx = np.flatnonzero(defect)
    hidden_defects = defect_idx[np.argsort(scores[defect_idx])][:GALLERY]
    files["gallery"] = str(out / "gallery.png")
    _gallery(Path(files["gallery"]), scored, items, worst_good, hidden_defects, model)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    files["report"] = str(out / "report.json")
    return files


def gallery_tile(view: np.ndarray, anomaly_map: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """One part for the report's gallery, BGR: the part as the network saw it, its ground truth
    outlined in green where known, beside the same part under its heat map (a heat map alone hides
    the part, and a reviewer needs both to judge a miss or a false alarm)."""
    part = overlay(view, None).copy()
    if mask is not None and mask.any():
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(part, contours, -1, (0, 255, 0), 1)
    gap = np.full((part.shape[0], max(2, part.shape[1] // 32), 3), 255, np.uint8)
    return np.hstack([part, gap, overlay(view, anomaly_map)])


def _gallery(path: Path, scored: Scored, items: list[Any], good: np.ndarray, defects: np.ndarray, model: Any) -> None:
    """Two rows of parts beside their heat maps: the worst-scored good parts, the best-hidden
    defects (their ground truth outlined)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_row = 4  # a part beside its heat map is wide: four to a row, so the console shows them large enough
    rows = [
        (title if start == 0 else "", idx[start : start + per_row])
        for title, idx in (("worst-scored good parts", good), ("best-hidden defects", defects))
        for start in range(0, len(idx), per_row)
    ]
    fig, axes = plt.subplots(len(rows), per_row, figsize=(3.6 * per_row, 2.3 * len(rows)), squeeze=False)
    for r, (title, idx) in enumerate(rows):
        for c in range(per_row):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(idx):
                continue
            i = idx[c]
            res = scored.results[i]
            tile = gallery_tile(scored.views[i], res.anomaly_map, _mask(items[i].mask, model.input_spec))
            ax.imshow(cv2.cvtColor(tile, cv2.COLOR_BGR2RGB), interpolation="nearest")
            ax.set_title(f"{items[i].defect}/{scored.paths[i].name}\n{res.score:.4g} {res.decision}", fontsize=8)
        if title:
            axes[r][0].text(-0.05, 0.0, title, transform=axes[r][0].transAxes, rotation=90, va="center", ha="right")
    fig.suptitle(
        f"model {model.version}: T2 = {model.thresholds[1]:.4g}; each part as the network saw it "
        "(ground truth outlined in green) beside its heat map",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # the title above, clear of the first row
    fig.savefig(path, dpi=100)
    plt.close(fig)


def predict(model_path: str | Path, inputs: Sequence[str | Path], out: str | Path, log: Log = print) -> Path:
    """Score images and folders of images: ``predictions.csv`` (path, score, norm_score, decision,
    defect type where trained) and one overlay PNG per image in ``out/overlays``."""
    model = Inferencer(model_path)
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths += find_images(item)
        elif item.is_file():
            paths.append(item)
        else:
            msg = f"{item}: no such image or folder"
            raise ImageFolderError(msg)
    if not paths:
        msg = f"no images ({IMAGE_KINDS}) in {', '.join(map(str, inputs))}"
        raise ImageFolderError(msg)
    out = Path(out)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    rows, names = [], set()
    for chunk, images in read_all(paths, 16):
        try:
            results = model.predict_batch(images)
        except ValueError:  # one image the model cannot read (another size, kind of image): name it
            results = [_predict_one(model, path, image) for path, image in zip(chunk, images, strict=True)]
        for path, image, res in zip(chunk, images, results, strict=True):
            name = _unique(path, names)
            roi = model.input_spec.roi
            seen = image if roi is None else image[roi[1] : roi[1] + roi[3], roi[0] : roi[0] + roi[2]]
            cv2.imwrite(str(out / "overlays" / name), overlay(seen, res.anomaly_map))
            rows.append([str(path), f"{res.score:.6g}", f"{res.norm_score:.4f}", res.decision, res.label or ""])
    csv_path = out / "predictions.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "score", "norm_score", "decision", "defect_type"])
        writer.writerows(rows)
    counts = {d: sum(r[3] == d for r in rows) for d in ("ok", "review", "ng")}
    log(f"{len(rows)} images: {counts['ok']} ok, {counts['review']} review, {counts['ng']} ng; wrote {csv_path}")
    return csv_path


def _predict_one(model: Inferencer, path: Path, image: np.ndarray) -> Result:
    try:
        return model.predict(image)
    except ValueError as exc:
        msg = f"{path}: {exc}"
        raise ImageFolderError(msg) from exc


def _unique(path: Path, taken: set[str]) -> str:
    name, n = f"{path.stem}.png", 1
    while name in taken:
        n += 1
        name = f"{path.stem}-{n}.png"
    taken.add(name)
    return name
