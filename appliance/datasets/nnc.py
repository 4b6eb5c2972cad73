"""NNC dataset CSV files, read exactly as Neural Network Console writes them.

Header cells are ``name[__index][:label]``: ``x:image``, ``y:label``, ``x__0:Sepal length``.
Columns sharing a name with ``__0``, ``__1``, … form one vector variable; columns whose header
starts with ``#`` are comments and ignored. A cell is a number or a path relative to the CSV file
(absolute paths only when the caller allows them): an image (png/jpg/bmp/tif/webp/pgm/ppm/jp2; grey → 1 channel,
colour → 3), a ``.csv`` matrix or vector, or a ``.npy`` array. With normalisation on, 8-bit images
are scaled by 1/255 and 16-bit ones by 1/65535. Every sample of a variable must have one shape.

Decoded arrays are cached on disk (``.cache/`` beside the CSV, keyed by the CSV's contents and
the files' sizes and times), so the second epoch — and the second run — reads no image files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from connectors.base import IMAGE_SUFFIXES
from models.preprocess import MIN_BIT_DEPTH, InputSpec

HEADER = re.compile(r"^(?P<name>[^:#]+?)(?:__(?P<index>\d+))?(?::(?P<label>.*))?$")


@dataclass
class Problem:
    row: int  # 1-based line in the file (1 = header); 0 = whole file
    column: str  # header cell, or "" for the whole row / file
    message: str

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row else "file"
        return f"{where}, column {self.column!r}: {self.message}" if self.column else f"{where}: {self.message}"


class DatasetError(ValueError):
    """A dataset file has problems; ``problems`` lists every one with its row and column."""

    def __init__(self, path: str | Path, problems: list[Problem]) -> None:
        self.path, self.problems = str(path), problems
        shown = "\n  ".join(str(p) for p in problems[:20])
        more = f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{path}: {len(problems)} problem(s)\n  {shown}{more}")


@dataclass
class Variable:
    """One variable of the dataset: a single column, or indexed columns forming a vector."""

    name: str
    columns: list[int] = field(default_factory=list)  # positions in the CSV row
    headers: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    @property
    def is_vector(self) -> bool:
        return len(self.columns) > 1 or self.headers[0].split(":")[0].endswith("__0")


def parse_header(cells: list[str]) -> tuple[dict[str, Variable], list[Problem]]:
    variables: dict[str, Variable] = {}
    indexed: dict[str, list[tuple[int, int]]] = {}
    problems = []
    for pos, raw in enumerate(cells):
        cell = raw.strip()
        if cell.startswith("#"):
            continue
        match = HEADER.match(cell)
        if not cell or match is None:
            problems.append(Problem(1, raw, "not a valid header cell (expected name[__index][:label])"))
            continue
        name, index, label = match["name"], match["index"], match["label"] or ""
        var = variables.setdefault(name, Variable(name))
        if index is None and var.columns:
            problems.append(Problem(1, raw, f"variable {name!r} appears twice"))
            continue
        var.columns.append(pos)
        var.headers.append(cell)
        var.labels.append(label)
        if index is not None:
            indexed.setdefault(name, []).append((int(index), pos))
    for name, pairs in indexed.items():
        order = sorted(pairs)
        if [i for i, _ in order] != list(range(len(order))) or len(order) != len(variables[name].columns):
            problems.append(Problem(1, name, f"indices of {name!r} must run 0..n-1 without gaps or mixing"))
            continue
        var = variables[name]
        by_pos = {p: (h, lab) for p, h, lab in zip(var.columns, var.headers, var.labels, strict=True)}
        var.columns = [p for _, p in order]
        var.headers = [by_pos[p][0] for p in var.columns]
        var.labels = [by_pos[p][1] for p in var.columns]
    if not variables and not problems:
        problems.append(Problem(1, "", "no variables in the header"))
    return variables, problems


def nnc_image_spec(channels: int, size: Sequence[int], normalize: bool) -> InputSpec:
    """An image spec that feeds a network what NNC's dataset reader (:func:`read_file_cell`) fed
    it in training: with image
    normalisation 8-bit counts / 255, 16-bit ones / 65535 and float values as stored; without it,
    every value as stored (16-bit counts read at 8 bits are unscaled)."""
    if normalize:
        return InputSpec("image", channels, tuple(size))
    return InputSpec("image", channels, tuple(size), scale=1.0, bit_depth=MIN_BIT_DEPTH)


def read_file_cell(path: Path, normalize: bool) -> np.ndarray:
    """Decode one referenced file into an array (images: (C, H, W))."""
    ext = path.suffix.lower()
    if ext in IMAGE_SUFFIXES:
        data = np.fromfile(path, np.uint8)  # works with non-ASCII names, unlike cv2.imread
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
        if image is None:
            msg = "image cannot be decoded (corrupt or not an image)"
            raise ValueError(msg)
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)
            image = image.transpose(2, 0, 1)
        else:
            image = image[None]
        scale = {np.dtype(np.uint8): 1 / 255, np.dtype(np.uint16): 1 / 65535}.get(image.dtype, 1.0)
        return image.astype(np.float32) * (np.float32(scale) if normalize else np.float32(1))
    if ext == ".npy":
        return np.load(path, allow_pickle=False).astype(np.float32)
    if ext == ".csv":
        text = path.read_text(encoding="utf-8")
        return np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float32, ndmin=2)  # rows × columns, as nnabla
    msg = f"unsupported file type {ext!r} (images, .csv or .npy)"
    raise ValueError(msg)


class NNCDataset:
    """A dataset CSV with its variables; ``load(name)`` gives all samples of one variable."""

    def __init__(
        self, path: str | Path, normalize: bool = True, allow_absolute: bool = False, cache: bool = True
    ) -> None:
        self.path = Path(path)
        self.base = self.path.parent
        self.normalize, self.allow_absolute, self.use_cache = normalize, allow_absolute, cache
        if not self.path.is_file():
            raise DatasetError(self.path, [Problem(0, "", "file does not exist")])
        try:
            text = self.path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DatasetError(self.path, [Problem(0, "", f"not UTF-8 text ({exc})")]) from exc
        reader = csv.reader(io.StringIO(text))
        numbered = [(reader.line_num, r) for r in reader]  # a problem names the row's line in the file
        if not numbered:
            raise DatasetError(self.path, [Problem(0, "", "empty file")])
        self.header = numbered[0][1]
        kept = [(line, r) for line, r in numbered[1:] if any(c.strip() for c in r)]  # blank lines skipped
        self.rows = [r for _, r in kept]
        self.lines = [line for line, _ in kept]
        self.variables, problems = parse_header(self.header)
        problems += [
            Problem(line, "", f"has {len(r)} cells, the header has {len(self.header)}")
            for line, r in kept
            if len(r) != len(self.header)
        ]
        if not self.rows:
            problems.append(Problem(0, "", "no data rows"))
        if problems:
            raise DatasetError(self.path, problems)
        self.digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        self._arrays: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def _resolve(self, cell: str) -> Path:
        p = Path(cell)
        if p.is_absolute():
            if not self.allow_absolute:
                msg = "absolute paths are not allowed here (write paths relative to the CSV)"
                raise ValueError(msg)
            return p
        return self.base / p

    def _cell(self, cell: str) -> np.ndarray:
        text = cell.strip()
        try:
            return np.array(float(text), np.float32)
        except ValueError:
            pass
        if not text:
            msg = "empty cell"
            raise ValueError(msg)
        if not text.isascii():
            msg = f"path {text!r} is not ASCII (NNC's tools fail on such paths; rename the file)"
            raise ValueError(msg)
        path = self._resolve(text)
        if Path(text).suffix.lower() not in IMAGE_SUFFIXES | {".csv", ".npy"}:
            msg = f"{text!r} is neither a number nor a path to an image, .csv or .npy file"
            raise ValueError(msg)
        if not path.is_file():
            msg = f"file {text} does not exist"
            raise ValueError(msg)
        return read_file_cell(path, self.normalize)

    def _decode(self, name: str) -> tuple[np.ndarray | None, list[Problem]]:
        var = self.variables[name]
        samples, problems, shapes = [], [], {}
        for line, row in zip(self.lines, self.rows, strict=True):
            try:
                if var.is_vector:
                    values = []
                    for pos, header in zip(var.columns, var.headers, strict=True):
                        try:
                            values.append(float(row[pos]))
                        except ValueError:
                            problems.append(Problem(line, header, f"{row[pos]!r} is not a number"))
                    value = np.array(values, np.float32)
                else:
                    value = self._cell(row[var.columns[0]])
            except ValueError as exc:
                problems.append(Problem(line, var.headers[0], str(exc)))
                continue
            shapes.setdefault(value.shape, line)
            if len(shapes) > 1 and value.shape != next(iter(shapes)):
                first_shape, first_row = next(iter(shapes.items()))
                problems.append(
                    Problem(line, var.headers[0], f"shape {value.shape} differs from {first_shape} (row {first_row})")
                )
                continue
            if not np.isfinite(value).all():
                problems.append(Problem(line, var.headers[0], "contains NaN or infinite values"))
                continue
            samples.append(value)
        if problems:
            return None, problems
        return np.stack(samples), []

    def _cache_file(self, name: str) -> Path:
        stamp = hashlib.sha256()
        var = self.variables[name]
        if not var.is_vector:  # file references: include sizes and times so edits invalidate the cache
            for row in self.rows:
                cell = row[var.columns[0]].strip()
                path = self.base / cell
                if cell and path.is_file():
                    st = path.stat()
                    stamp.update(f"{cell}:{st.st_size}:{st.st_mtime_ns};".encode())
        key = f"{self.digest}-{name}-{int(self.normalize)}-{stamp.hexdigest()[:12]}"
        return self.base / ".cache" / f"{self.path.stem}-{key}.npy"

    def load(self, name: str) -> np.ndarray:
        """All samples of variable ``name`` as one float32 array (N, *shape)."""
        if name not in self.variables:
            msg = f"{self.path}: no variable {name!r}; it has {sorted(self.variables)}"
            raise KeyError(msg)
        if name in self._arrays:
            return self._arrays[name]
        cache = self._cache_file(name) if self.use_cache else None
        if cache is not None and cache.is_file():
            array = np.load(cache, allow_pickle=False)
        else:
            array, problems = self._decode(name)
            if problems:
                raise DatasetError(self.path, problems)
            if cache is not None:
                cache.parent.mkdir(exist_ok=True)
                tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npy")
                np.save(tmp, array)
                tmp.replace(cache)
        self._arrays[name] = array
        return array

    def check(self) -> list[Problem]:
        """Every problem of every variable (nothing is cached)."""
        problems = []
        for name in self.variables:
            problems += self._decode(name)[1]
        return problems


def check_dataset(path: str | Path, allow_absolute: bool = False) -> list[Problem]:
    """All problems of a dataset file: header, row lengths, cells, files, shapes."""
    try:
        dataset = NNCDataset(path, allow_absolute=allow_absolute, cache=False)
    except DatasetError as exc:
        return exc.problems
    return dataset.check()


def write_csv(path: str | Path, header: list[str], rows: list[list[object]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
