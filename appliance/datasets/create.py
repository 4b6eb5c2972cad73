"""Make NNC dataset CSVs: from image folders (what ``nnabla_cli create_image_classification_dataset``
does, without its bugs), from the MVTec AD layout, and from data that ships with scikit-learn."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from appliance.datasets.images import ImageFolderError, mvtec_layout, test_folder
from appliance.datasets.nnc import write_csv
from connectors.base import IMAGE_KINDS, IMAGE_SUFFIXES


class CreateError(ValueError):
    """The source folder cannot become a dataset."""


@dataclass
class ImageFormat:
    channels: int = 1
    width: int = 28
    height: int = 28
    mode: str = "trimming"  # trimming (centre crop to the aspect) | padding (letterbox)

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            msg = f"channels must be 1 or 3, got {self.channels}"
            raise CreateError(msg)
        if self.mode not in ("trimming", "padding"):
            msg = f"mode must be 'trimming' or 'padding', got {self.mode!r}"
            raise CreateError(msg)
        if self.width < 1 or self.height < 1:
            msg = f"width and height must be positive, got {self.width}x{self.height}"
            raise CreateError(msg)


def convert_image(path: Path, fmt: ImageFormat) -> np.ndarray:
    """Read any image (grey, RGB, RGBA, 16-bit) → channels, aspect by trimming or padding, size."""
    data = np.fromfile(path, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        msg = f"{path}: cannot be decoded as an image"
        raise CreateError(msg)
    if image.dtype == np.uint16:
        image = (image / 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        msg = f"{path}: holds measured values ({image.dtype}), not 8- or 16-bit counts; NNC datasets hold 8-bit images"
        raise CreateError(msg)
    if image.ndim == 3 and image.shape[2] == 4:  # RGBA: converted, never dropped
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if fmt.channels == 1 and image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif fmt.channels == 3 and image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h, w = image.shape[:2]
    target = fmt.width / fmt.height
    if fmt.mode == "trimming":
        if w / h > target:
            new_w = int(round(h * target))
            image = image[:, (w - new_w) // 2 : (w - new_w) // 2 + new_w]
        else:
            new_h = int(round(w / target))
            image = image[(h - new_h) // 2 : (h - new_h) // 2 + new_h]
    else:
        if w / h > target:
            pad = int(round(w / target)) - h
            image = cv2.copyMakeBorder(image, pad // 2, pad - pad // 2, 0, 0, cv2.BORDER_CONSTANT, value=0)
        else:
            pad = int(round(h * target)) - w
            image = cv2.copyMakeBorder(image, 0, 0, pad // 2, pad - pad // 2, cv2.BORDER_CONSTANT, value=0)
    shrink = image.shape[0] > fmt.height
    return cv2.resize(image, (fmt.width, fmt.height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _split(n: int, percent: float, shuffle: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < percent <= 100:
        msg = f"training percentage must be in (0, 100], got {percent}"
        raise CreateError(msg)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    cut = int(round(n * percent / 100))
    return order[:cut], order[cut:]


def create_image_dataset(
    source: str | Path,
    out: str | Path,
    fmt: ImageFormat,
    train_percent: float = 80,
    shuffle: bool = True,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, object]:
    """Class subfolders (label = sorted index) or a one-class folder of normal images →
    ``out/training.csv`` and ``out/validation.csv`` (when the split leaves any) with images in
    ``out/data/``."""
    source, out = Path(source), Path(out)
    if not source.is_dir():
        msg = f"{source} is not a folder"
        raise CreateError(msg)
    classes = sorted(d.name for d in source.iterdir() if d.is_dir() and _images_in(d))
    items: list[tuple[Path, int | None]] = (
        [(p, i) for i, c in enumerate(classes) for p in _images_in(source / c)]
        if classes
        else [(p, None) for p in _images_in(source)]
    )
    if not items:
        msg = f"{source} holds no images ({IMAGE_KINDS}), directly or in class subfolders"
        raise CreateError(msg)
    rows, skipped = [], []
    for n, (path, label) in enumerate(items):
        try:
            image = convert_image(path, fmt)
        except CreateError as exc:
            skipped.append(str(exc))
            continue
        rel = Path("data") / (classes[label] if label is not None else "normal") / f"{n:06d}.png"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / rel), image)
        rows.append([rel.as_posix()] + ([label] if label is not None else []))
    header = ["x:image"] + (["y:label"] if classes else [])
    train_idx, valid_idx = _split(len(rows), train_percent, shuffle, seed)
    write_csv(out / "training.csv", header, [rows[i] for i in train_idx])
    if len(valid_idx):
        write_csv(out / "validation.csv", header, [rows[i] for i in valid_idx])
    for problem in skipped if log else []:
        log(f"skipped {problem}")
    return {"classes": classes, "training": len(train_idx), "validation": len(valid_idx), "skipped": skipped}


def import_mvtec(category: str | Path, out: str | Path, fmt: ImageFormat) -> dict[str, object]:
    """An MVTec AD category (``train/good``, ``test/<defect>``, ``ground_truth/<defect>/*_mask.png``)
    → ``train.csv`` (normal images only) and ``test.csv`` (``y`` 0 good / 1 defect, ``#defect``
    kind, ``mask`` image path; good items get an empty mask)."""
    category, out = Path(category), Path(out)
    if not (category / "train" / "good").is_dir() or test_folder(category) is None:
        msg = f"{category} is not an MVTec AD category (needs train/good and test/)"
        raise CreateError(msg)
    try:
        layout = mvtec_layout(category, need_good=False)
    except ImageFolderError as exc:
        raise CreateError(str(exc)) from exc
    mask_fmt = ImageFormat(1, fmt.width, fmt.height, fmt.mode)
    train_rows = []
    for n, path in enumerate(layout.train):
        rel = f"train/good/{n:04d}.png"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / rel), convert_image(path, fmt))
        train_rows.append([rel])
    test_rows = []
    empty = np.zeros((fmt.height, fmt.width), np.uint8)
    for item in layout.test:
        name = item.path.relative_to(layout.test_dir / item.defect).with_suffix(".png").as_posix()
        rel, mask_rel = f"test/{item.defect}/{name}", f"masks/{item.defect}/{name}"
        for r in (rel, mask_rel):
            (out / r).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / rel), convert_image(item.path, fmt))
        mask = empty if item.defect == "good" or item.mask is None else convert_image(item.mask, mask_fmt)
        # masks come as 0 / 255 or 0 / 1: more than half covered is defect
        cv2.imwrite(str(out / mask_rel), (mask > max(mask.max(), 1) / 2).astype(np.uint8) * 255)
        test_rows.append([rel, int(item.defect != "good"), item.defect, mask_rel])
    write_csv(out / "train.csv", ["x:image"], train_rows)
    write_csv(out / "test.csv", ["x:image", "y:label", "#defect", "mask:image"], test_rows)
    return {"train": len(train_rows), "test": len(test_rows)}


SAMPLES = ("digits_4or9", "digits", "digits_4or9_anomaly", "iris", "sine_anomaly")


def sine_readings(n: int, rng: np.random.Generator, bursts: int = 0, period: float = 25.7) -> tuple[np.ndarray, list]:
    """NNC's sensor tutorial as readings: a sine wave (amplitude 1, ``period`` rows, small noise)
    and, with ``bursts``, that many short bursts of noise (4 to 12 rows, σ 0.15 to 0.4) labelled
    ``burst`` at random places; the rest is ``ok``."""
    t = np.arange(n)
    wave = np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)) + 0.03 * rng.normal(size=n)
    labels = ["ok"] * n
    starts = rng.choice(np.arange(64, n - 64, 96), size=bursts, replace=False) if bursts else []
    for s in starts:
        length = int(rng.integers(4, 13))
        wave[s : s + length] += rng.uniform(0.15, 0.4) * rng.normal(size=length)
        labels[s : s + length] = ["burst"] * length
    return wave, labels


def create_sample(name: str, out: str | Path, seed: int = 0) -> dict[str, object]:
    """Ready datasets in NNC format from data inside scikit-learn.

    - ``digits_4or9``: the seed's 4-vs-9 task, 8×8 digits resized to 28×28 PNGs, y = 1 for a 9
    - ``digits``: all ten classes, 28×28 PNGs
    - ``digits_4or9_anomaly``: training has 4s and 9s only; validation has every digit with
      y = 1 for "not 4 or 9" (the seed's autoencoder experiment)
    - ``iris``: vectors ``x__0..x__3`` with class ``y``
    - ``sine_anomaly``: NNC's sensor tutorial as readings for ``appliance detector fit``:
      ``normal.csv`` (a sine wave) and ``test.csv`` (the same wave with short noise bursts,
      ``label`` = ``burst`` on their rows)
    """
    from sklearn.datasets import load_digits, load_iris
    from sklearn.model_selection import train_test_split

    out = Path(out)
    if name == "sine_anomaly":
        rng = np.random.default_rng(seed)
        normal, _ = sine_readings(4096, rng)
        test, labels = sine_readings(4096, rng, bursts=24)
        write_csv(out / "normal.csv", ["wave"], [[f"{v:.5f}"] for v in normal])
        write_csv(out / "test.csv", ["wave", "label"], [[f"{v:.5f}", lab] for v, lab in zip(test, labels, strict=True)])
        return {"normal": len(normal), "test": len(test), "bursts": 24}
    if name == "iris":
        iris = load_iris()
        header = [f"x__{i}:{n}" for i, n in enumerate(iris.feature_names)] + ["y:label"]
        rows = [[*map(float, x), int(y)] for x, y in zip(iris.data, iris.target, strict=True)]
        train, valid = train_test_split(rows, test_size=0.25, random_state=seed, stratify=iris.target)
        write_csv(out / "training.csv", header, train)
        write_csv(out / "validation.csv", header, valid)
        return {"training": len(train), "validation": len(valid)}
    if name not in SAMPLES:
        msg = f"no sample dataset {name!r}; known: {', '.join(SAMPLES)}"
        raise CreateError(msg)
    digits = load_digits()
    images = [
        cv2.resize((img * 16).clip(0, 255).astype(np.uint8), (28, 28), interpolation=cv2.INTER_LINEAR)
        for img in digits.images
    ]
    targets = digits.target
    keep = np.isin(targets, (4, 9)) if name == "digits_4or9" else np.ones(len(targets), bool)
    idx = np.flatnonzero(keep)
    for i in idx:
        path = out / "images" / str(targets[i]) / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), images[i])

    def row(i: int, label: int) -> list[object]:
        return [f"images/{targets[i]}/{i:04d}.png", label]

    train, valid = train_test_split(idx, test_size=0.25, random_state=seed, stratify=targets[idx])
    if name == "digits_4or9_anomaly":
        train = [i for i in train if targets[i] in (4, 9)]
        label = {i: int(targets[i] not in (4, 9)) for i in idx}
    elif name == "digits_4or9":
        label = {i: int(targets[i] == 9) for i in idx}
    else:
        label = {i: int(targets[i]) for i in idx}
    write_csv(out / "training.csv", ["x:image", "y:label"], [row(i, label[i]) for i in train])
    write_csv(out / "validation.csv", ["x:image", "y:label"], [row(i, label[i]) for i in valid])
    return {"training": len(train), "validation": len(valid)}
