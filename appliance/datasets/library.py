"""The appliance's own datasets: named folders under ``<data>/datasets`` holding an NNC CSV and
its images. Names, listing, browsing, and datasets made from an uploaded zip archive.

A zip holds normal images (``normal``: retraining data, one ``x:image`` column) or one folder per
class (``classes``: NNC training/validation CSVs, images resized to a format). No member may leave
the dataset folder, exceed the size limit or be an unreadable image; each is named when it does.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import pathlib
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np

from appliance.datasets.create import ImageFormat, create_image_dataset
from appliance.datasets.images import ImageFolderError, find_images, mvtec_layout
from appliance.datasets.nnc import write_csv
from appliance.errors import Conflict, InvalidInput, NotFound, TooLarge
from connectors.base import IMAGE_SUFFIXES


def checked_name(name: str, what: str = "dataset name") -> str:
    """A name usable as a folder (datasets, projects): letters, digits, '-', '_', '.'."""
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        msg = f"{what} {name!r} may hold letters, digits, '-', '_' and '.' only"
        raise InvalidInput(msg)
    return name


def dataset_dir(
    data_dir: pathlib.Path, name: str, *, must_exist: bool = False, must_be_new: bool = False
) -> pathlib.Path:
    folder = pathlib.Path(data_dir) / "datasets" / checked_name(name)
    if must_exist and not folder.is_dir():
        msg = f"no dataset {name!r}"
        raise NotFound(msg)
    if must_be_new and folder.exists():
        msg = f"dataset {name!r} exists"
        raise Conflict(msg)
    return folder


# A collected dataset's images to calibrate on only (see :func:`collect_images`), with their CSV,
# and the file that marks a dataset as collected from stored items (so collecting again may replace it)
CALIBRATE_DIR, CALIBRATE_CSV, COLLECTED = "calibrate", "calibration.csv", "collected.json"


def list_datasets(data_dir: pathlib.Path) -> list[dict[str, Any]]:
    root = pathlib.Path(data_dir) / "datasets"
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    out = []
    for p in folders:
        aside = sum(1 for _ in (p / CALIBRATE_DIR).rglob("*.png"))
        out.append({"name": p.name, "images": sum(1 for _ in p.rglob("*.png")) - aside, "calibrate_only": aside})
    return out


def normal_dataset_images(folder: pathlib.Path) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
    """A normal-image dataset's images (any depth, name order): those to train on, and those to
    calibrate on only (its ``calibrate`` folder, see :func:`collect_images`)."""
    calibrate = folder / CALIBRATE_DIR
    images = find_images(folder)
    return [p for p in images if not p.is_relative_to(calibrate)], [p for p in images if p.is_relative_to(calibrate)]


def describe(folder: pathlib.Path, limit: int) -> dict[str, Any]:
    """A dataset's CSV files with their row counts, header and first rows."""
    files = {}
    for csv_path in sorted(folder.glob("*.csv")):
        with csv_path.open(newline="", encoding="utf-8") as f:
            table = list(csv.reader(f))
        files[csv_path.name] = {
            "header": table[0] if table else [],
            "rows": len(table) - 1,
            "head": table[1 : limit + 1],
        }
    return {"name": folder.name, "files": files}


def member_file(folder: pathlib.Path, path: str) -> pathlib.Path:
    """A file inside a dataset (never outside it)."""
    root = folder.resolve()
    try:
        target = (root / path).resolve()
        found = target.is_relative_to(root) and target.is_file()
    except (OSError, ValueError):  # a name too long for the file system, or one it cannot hold
        found = False
    if not found:
        msg = f"no file {path!r} in dataset {folder.name!r}"
        raise NotFound(msg)
    return target


def open_archive(data: bytes, filename: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        msg = f"{filename} is not a zip archive"
        raise InvalidInput(msg) from exc


MAX_ARCHIVE_TOTAL = 2 * 1024**3  # what the image members of one zip may unpack to, in all


def image_members(archive: zipfile.ZipFile, max_member: int) -> list[zipfile.ZipInfo]:
    """The archive's image members, each checked: inside the dataset folder, within the size
    limits (each and in all), a readable image. Other members are never unpacked."""
    members, total = [], 0
    for info in archive.infolist():
        member = pathlib.PurePosixPath(info.filename)
        if info.is_dir() or member.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if member.is_absolute() or ".." in member.parts:
            msg = f"archive member {info.filename!r} would leave the dataset folder"
            raise InvalidInput(msg)
        total += info.file_size
        if info.file_size > max_member or total > MAX_ARCHIVE_TOTAL:
            msg = f"archive member {info.filename!r} is too large"
            raise TooLarge(msg)
        if cv2.imdecode(np.frombuffer(read_member(archive, info), np.uint8), cv2.IMREAD_UNCHANGED) is None:
            msg = f"archive member {info.filename!r} is not a readable image"
            raise InvalidInput(msg)
        members.append(info)
    if not members:
        msg = "the archive holds no images"
        raise InvalidInput(msg)
    return members


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:  # a bad CRC, a truncated archive
        msg = f"archive member {info.filename!r} cannot be read: {exc}"
        raise InvalidInput(msg) from exc


def dataset_from_zip(
    archive: zipfile.ZipFile,
    folder: pathlib.Path,
    *,
    max_member: int,
    fmt: ImageFormat | None = None,
    train_percent: float = 80.0,
    layout: str = "normal",
) -> dict[str, Any]:
    """A dataset from a zip: normal images, class folders resized to ``fmt`` (``classes``), or the
    MVTec AD layout kept as it is (``mvtec``: known-good and known-bad parts with masks).
    It is built in a staging folder and moved into place only when complete, so a refused upload
    leaves nothing behind (and an existing dataset of that name is replaced only on success)."""
    members = image_members(archive, max_member)
    with staged(folder) as staging:
        if layout == "mvtec":
            summary = _mvtec_dataset(archive, members, staging)
        elif fmt is None:
            summary = _normal_dataset(archive, members, staging)
        else:
            summary = _classes_dataset(archive, members, staging, staging.parent / "unpacked", fmt, train_percent)
    return {"name": folder.name, **summary}


@contextlib.contextmanager
def staged(folder: pathlib.Path) -> Iterator[pathlib.Path]:
    """A staging folder to build a dataset in, moved into place as ``folder`` (replacing a dataset
    of that name) only when the block completes: a refused or failed build leaves nothing behind."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.") as tmp:
        staging = pathlib.Path(tmp) / "dataset"
        yield staging
        if folder.exists():
            shutil.rmtree(folder)
        staging.replace(folder)


def _normal_dataset(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], staging: pathlib.Path) -> dict[str, Any]:
    (staging / "images").mkdir(parents=True)
    rows = []
    for i, info in enumerate(members):
        target = staging / "images" / f"{i:06d}{pathlib.PurePosixPath(info.filename).suffix.lower()}"
        target.write_bytes(read_member(archive, info))
        rows.append([f"images/{target.name}"])
    write_csv(staging / "training.csv", ["x:image"], rows)
    return {"images": len(rows)}


def _mvtec_dataset(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], staging: pathlib.Path) -> dict[str, Any]:
    """Unpack as it is (one common top folder, e.g. the category's name, dropped); must hold test/."""
    paths = [pathlib.PurePosixPath(info.filename) for info in members]
    tops = {p.parts[0] for p in paths}
    strip = 1 if len(tops) == 1 and all(len(p.parts) > 1 for p in paths) and "test" not in tops else 0
    for info, path in zip(members, paths, strict=True):
        target = staging.joinpath(*path.parts[strip:])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(read_member(archive, info))
    try:
        layout = mvtec_layout(staging, need_good=False)
    except ImageFolderError as exc:  # named inside the archive, never by a server path
        raise InvalidInput(str(exc).replace(str(staging), "the archive")) from exc
    kinds = ["good", *layout.defects]
    return {
        "layout": "mvtec",
        "train_good": len(layout.train),
        "test": {k: sum(i.defect == k for i in layout.test) for k in kinds},
        "masks": sum(i.mask is not None for i in layout.test),
    }


def _classes_dataset(
    archive: zipfile.ZipFile,
    members: list[zipfile.ZipInfo],
    staging: pathlib.Path,
    unpacked: pathlib.Path,
    fmt: ImageFormat,
    train_percent: float,
) -> dict[str, Any]:
    for info in members:  # only the checked images: no other member reaches the disk
        target = unpacked / pathlib.PurePosixPath(info.filename)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(read_member(archive, info))
    root = unpacked
    subdirs = [p for p in root.iterdir() if p.is_dir()]
    if len(subdirs) == 1 and not any(p.is_file() for p in root.iterdir()):
        root = subdirs[0]  # the zip of a folder holding the class folders
    summary = create_image_dataset(root, staging, fmt, train_percent, seed=0)
    return {k: v for k, v in summary.items() if k != "skipped"}


def collect_images(
    folder: pathlib.Path, files: list[pathlib.Path], calibrate_only: list[pathlib.Path] = ()
) -> dict[str, Any]:
    """A normal-image dataset from stored image files (copied once, content-addressed names):
    ``files`` to train on (``images/``, ``training.csv``) and ``calibrate_only``, good parts as
    far as anyone knows that no model may learn from but whose scores the thresholds must cover
    (``calibrate/``, ``calibration.csv``): the unjudged review items beside the OK ones. A dataset
    of that name collected before is replaced (nothing of it is kept: its items may have been
    judged since); one uploaded or made otherwise is never overwritten."""
    if folder.exists() and not (folder / COLLECTED).is_file():
        msg = f"dataset {folder.name!r} exists and was not collected from stored items; choose another name"
        raise Conflict(msg)
    if not files:
        msg = f"dataset {folder.name!r}: no stored items to collect (no images kept of the kinds asked for)"
        raise InvalidInput(msg)
    with staged(folder) as staging:
        out = {"name": folder.name, "images": _copy_listed(staging, "images", "training.csv", files)}
        out["calibrate_only"] = (
            _copy_listed(staging, CALIBRATE_DIR, CALIBRATE_CSV, calibrate_only) if calibrate_only else 0
        )
        (staging / COLLECTED).write_text(json.dumps({**out, "collected_at": dt.datetime.now(dt.UTC).isoformat()}))
    return out


def _copy_listed(folder: pathlib.Path, sub: str, csv_name: str, files: list[pathlib.Path]) -> int:
    (folder / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    for f in files:
        target = folder / sub / f.name
        if not target.exists():  # content-addressed: the same name, the same image
            target.write_bytes(f.read_bytes())
        rows.append([f"{sub}/{f.name}"])
    write_csv(folder / csv_name, ["x:image"], rows)
    return len(rows)
