"""Image folders as a line engineer has them: any depth, png/jpg/bmp/tif/webp/pgm/ppm/jp2, 8 or 16
bit, grey or colour; and the MVTec AD layout (``train/good``, ``test/good``, ``test/<defect>/``,
``ground_truth/<defect>/<name>_mask.png``, masks optional; see :func:`mask_for`), or MVTec AD 2's
(``test_public/`` with its ``ground_truth/`` inside)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from connectors.base import IMAGE_SUFFIXES


class ImageFolderError(ValueError):
    """A folder of images cannot be used: missing, too few images, unreadable files."""


def find_images(root: str | Path) -> list[Path]:
    """Every image file under ``root`` (any depth), sorted; hidden files and folders skipped."""
    root = Path(root)
    if not root.is_dir():
        msg = f"{root} is not a folder"
        raise ImageFolderError(msg)
    return sorted(p for p in _visible_files(root) if p.suffix.lower() in IMAGE_SUFFIXES)


def _visible_files(root: Path) -> Iterator[Path]:
    """Every file under ``root`` (any depth) but hidden files and those in hidden folders."""
    for p in root.rglob("*"):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts):
            yield p


def other_files(root: str | Path) -> dict[str, int]:
    """Files under ``root`` that :func:`find_images` leaves out, counted by suffix (hidden ones
    aside): a folder of good images whose camera saved a format not read here should say so."""
    suffixes = [p.suffix.lower() or "(no suffix)" for p in _visible_files(Path(root))]
    return dict(Counter(s for s in suffixes if s not in IMAGE_SUFFIXES).most_common())


def read_image(path: Path) -> np.ndarray:
    """The image as stored (H×W or H×W×C, BGR): uint8 or uint16 counts, or float32 for measured
    values (float or signed TIFFs: heights, temperatures; :attr:`InputSpec.value_range` says how
    they are read); ImageFolderError when it cannot be."""
    data = np.fromfile(path, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None or image.size == 0:
        msg = f"{path}: cannot be decoded as an image"
        raise ImageFolderError(msg)
    if image.dtype not in (np.uint8, np.uint16):
        image = image.astype(np.float32)
    return image


def read_all(paths: Sequence[Path], batch: int = 32) -> Iterator[tuple[list[Path], list[np.ndarray]]]:
    """Batches of (paths, images) of the readable files; once all are read, refuses the lot when
    any file was unreadable, naming them (the first ten): nothing is trained or reported on a
    folder that is not what its owner thinks."""
    bad: list[Path] = []
    for i in range(0, len(paths), batch):
        chunk, images = [], []
        for path in paths[i : i + batch]:
            try:
                images.append(read_image(path))
                chunk.append(path)
            except ImageFolderError:
                bad.append(path)
        if chunk:
            yield chunk, images
    if bad:
        names = ", ".join(str(p) for p in bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        msg = f"{len(bad)} of {len(paths)} images cannot be read: {names}"
        raise ImageFolderError(msg)


@dataclass
class TestItem:
    path: Path
    defect: str  # "good" for a defect-free part
    mask: Path | None  # the ground-truth mask, where the layout has one


@dataclass
class MVTecLayout:
    root: Path
    train: list[Path]
    test: list[TestItem]
    test_dir: Path | None = None  # test/ (MVTec AD) or test_public/ (MVTec AD 2)

    @property
    def defects(self) -> list[str]:
        return sorted({i.defect for i in self.test} - {"good"})


MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".PNG", ".BMP", ".TIF", ".TIFF")


def mask_for(ground_truth: Path, image: Path) -> Path | None:
    """The mask of ``test/<defect>/<image>`` under ``ground_truth/<defect>/``, in the same
    subfolder: ``<name>_mask`` (MVTec AD's naming) or ``<name>`` (how anomalib's folder datasets,
    and VisA put in this layout, name masks), as a lossless image of any of the usual suffixes."""
    folder = ground_truth / image.parent
    for name in (f"{image.stem}_mask", image.stem):
        for suffix in MASK_SUFFIXES:
            if (folder / f"{name}{suffix}").is_file():
                return folder / f"{name}{suffix}"
    return None


# a category's labelled test set: MVTec AD's test/ (masks in ground_truth/ beside it), or MVTec AD
# 2's test_public/ (masks in test_public/ground_truth/; its private test sets have no labels)
TEST_FOLDERS = ("test", "test_public")


def test_folder(root: str | Path) -> Path | None:
    """The labelled test folder of an MVTec-layout category, or None."""
    return next((Path(root) / name for name in TEST_FOLDERS if (Path(root) / name).is_dir()), None)


def mvtec_layout(root: str | Path, need_good: bool = True) -> MVTecLayout:
    """Read the MVTec AD (or AD 2) layout under ``root``; ``train/good`` may be missing (test
    only), and with ``need_good`` False so may ``test/good`` (a set of known-bad parts)."""
    root = Path(root)
    test_dir = test_folder(root)
    if test_dir is None:
        msg = (
            f"{root} has no test/ folder (expected the MVTec AD layout: test/good, test/<defect>/; "
            "or MVTec AD 2's test_public/good, test_public/bad)"
        )
        raise ImageFolderError(msg)
    truth = root / "ground_truth" if test_dir.name == "test" else test_dir / "ground_truth"
    items = [
        TestItem(path, folder.name, mask_for(truth / folder.name, path.relative_to(folder)))
        for folder in sorted(d for d in test_dir.iterdir() if d.is_dir() and d != truth)
        for path in find_images(folder)
    ]
    if not items:
        msg = f"{test_dir} holds no images in its subfolders (test/good, test/<defect>/)"
        raise ImageFolderError(msg)
    if need_good and not any(i.defect == "good" for i in items):
        msg = f"{test_dir / 'good'} holds no images: the false-alarm rate needs defect-free test parts"
        raise ImageFolderError(msg)
    train_dir = root / "train" / "good"
    return MVTecLayout(root, find_images(train_dir) if train_dir.is_dir() else [], items, test_dir)
