"""Input preprocessing shared by training and serving (one code path, no engine imports).

An :class:`InputSpec` travels in the model bundle: image channels, size, region of interest,
normalisation; or the shape of a sensor vector / window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

MIN_BIT_DEPTH = 8
PIXELS = {None: "any", "counts": "counts (8- or 16-bit)", "values": "measured values (float or signed)"}


def pixel_kind(dtype: np.dtype) -> str:
    """What an image's values are: "counts" (8- or 16-bit) or "values" (measured: float or signed)."""
    return "counts" if dtype in (np.uint8, np.uint16) else "values"


class PreprocessError(ValueError):
    """An input does not fit the model's input spec."""


def bit_depth_of(largest: int) -> int:
    """The bits a 16-bit image's values use: the smallest depth (8 to 16) whose full scale
    ``2 ** depth - 1`` holds ``largest``. Cameras of 10, 12 or 14 bits store their frames in 16-bit
    files with the high bits empty; read as 16-bit they would come out 16 to 64 times too dark,
    and the detector's synthetic anomalies (painted in the full range) would be easy to tell from
    them while real defects are not. A dim true-16-bit camera gets a smaller depth too, which only
    stretches its frames; a later value above the full scale goes in above 1, beyond anything in
    training, and scores as an anomaly."""
    return max(MIN_BIT_DEPTH, min(16, int(largest).bit_length()))


@dataclass
class InputSpec:
    kind: str = "image"  # image | vector
    channels: int = 1
    size: tuple[int, int] | None = (64, 64)  # (height, width) for images
    shape: tuple[int, ...] | None = None  # vectors: (features,) or (channels, length)
    roi: tuple[int, int, int, int] | None = None  # x, y, width, height in the source image
    frame_size: tuple[int, int] | None = None  # (height, width) of the frames the ROI was drawn on
    scale: float = 1.0 / 255.0  # applied to 8-bit images; 16-bit ones are first brought to 8-bit's range
    # the full scale of 16-bit images: 2 ** bit_depth - 1 (a 12-bit camera's files: 12; see bit_depth_of)
    bit_depth: int = 16
    # images of measured values (float or signed TIFFs: heights in mm, temperatures in °C) are read
    # as (x - low) / (high - low) of full scale; fit takes the span of the good images' values.
    # None: as stored (float 0..1 as 8-bit / 255 under the default scale; NNC's reader's way)
    value_range: tuple[float, float] | None = None
    # the kind of image the model was fitted on, the only kind it reads: "counts" (8- or 16-bit) or
    # "values" (measured values); None: any, as stored (NNC's reader; bundles from before the field)
    pixels: str | None = None
    mean: list[float] = field(default_factory=list)  # per channel, after scaling (vectors: per element)
    std: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in ("image", "vector"):
            msg = f"input kind must be 'image' or 'vector', got {self.kind!r}"
            raise PreprocessError(msg)
        if self.kind == "image" and self.channels not in (1, 3):
            msg = f"image channels must be 1 or 3, got {self.channels}"
            raise PreprocessError(msg)
        self.size = _positive_ints("size", self.size, 2)
        self.shape = _positive_ints("shape", self.shape)
        self.roi = _positive_ints("roi", self.roi, 4, allow_zero=True)
        self.frame_size = _positive_ints("frame_size", self.frame_size, 2)
        if not MIN_BIT_DEPTH <= self.bit_depth <= 16:
            msg = f"bit_depth must be {MIN_BIT_DEPTH} to 16 (the bits 16-bit images use), got {self.bit_depth}"
            raise PreprocessError(msg)
        self.value_range = None if self.value_range is None else _value_range(self.value_range)
        if self.pixels not in tuple(PIXELS):
            msg = f"input spec 'pixels' has value {self.pixels!r}. Needs one of {list(PIXELS)}."
            raise PreprocessError(msg)
        if self.pixels == "values" and self.value_range is None:
            msg = "input spec 'pixels' is 'values' without a 'value_range' to read them over"
            raise PreprocessError(msg)
        if self.kind == "image" and self.size is None:
            msg = "an image input spec needs 'size' (height, width)"
            raise PreprocessError(msg)

    @property
    def tensor_shape(self) -> tuple[int, ...]:
        """Shape of one preprocessed sample (no batch axis)."""
        if self.kind == "image":
            return (self.channels, *self.size)
        return self.shape

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            msg = f"input spec has unknown key {sorted(unknown)[0]!r}"
            raise PreprocessError(msg)
        return cls(**data)


def _positive_ints(key: str, value: Any, n: int | None = None, allow_zero: bool = False) -> tuple[int, ...] | None:
    """A shape-like value of the input spec, checked: a list of ``n`` whole numbers above 0."""
    if value is None or (isinstance(value, list | tuple) and not value):
        return None
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value
    ):
        msg = f"input spec '{key}' has value {value!r}. Not a list of whole numbers."
        raise PreprocessError(msg)
    if (n is not None and len(value) != n) or any(v < (0 if allow_zero else 1) for v in value):
        msg = f"input spec '{key}' has value {list(value)!r}. Needs {n or 'some'} numbers above 0."
        raise PreprocessError(msg)
    return tuple(int(v) for v in value)


def _value_range(value: Any) -> tuple[float, float]:
    ok = isinstance(value, list | tuple) and len(value) == 2
    ok = ok and all(isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in value)
    if not ok or not (np.isfinite(value).all() and value[0] < value[1]):
        msg = f"input spec 'value_range' has value {value!r}. Needs two finite numbers, low below high."
        raise PreprocessError(msg)
    return float(value[0]), float(value[1])


def value_range_of(low: float, high: float) -> tuple[float, float]:
    """The span images of measured values are read with: the good images' lowest and highest
    value (a flat image: a span of 1 above its value). Later values outside it are neither clipped
    nor refused: they go in below 0 or above 1, beyond anything in training, and score as anomalies."""
    return (float(low), float(high)) if high > low else (float(low), float(low) + 1.0)


def _to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        msg = f"image must be H×W or H×W×C with 1, 3 or 4 channels, got shape {image.shape}"
        raise PreprocessError(msg)
    c = image.shape[2]
    if c == 4:  # drop alpha (RGBA → RGB), never the whole image
        image, c = image[:, :, :3], 3
    if channels == 1 and c == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2GRAY)[:, :, None]
    elif channels == 3 and c == 1:
        image = np.repeat(image, 3, axis=2)
    return image


def _fill_missing(values: np.ndarray, low: float) -> np.ndarray:
    """Measured values with the missing readings (NaN or infinite: a 3-D sensor's shadows and
    glints) read as the span's low, black, in training and serving alike: where good parts always
    lack readings the detector learns it; a hole where they had them shows as a dark region."""
    readings = np.isfinite(values)
    if readings.all():
        return values
    if not readings.any():
        msg = "image holds no readings: every value is NaN or infinite"
        raise PreprocessError(msg)
    return np.where(readings, values, np.asarray(low, values.dtype))


def preprocess_image(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """H×W[×C] → float32 (C, H, W) as the network sees it: 8-bit counts times ``spec.scale``;
    16-bit ones read at ``spec.bit_depth``; measured values (float or signed integers) read over
    ``spec.value_range``."""
    image = np.asarray(image)
    offset = 0.0
    if image.dtype == np.uint8:
        scale = spec.scale
    elif image.dtype == np.uint16:
        scale = spec.scale * 255.0 / (2**spec.bit_depth - 1)
    elif np.issubdtype(image.dtype, np.floating) or image.dtype in (np.int8, np.int16, np.int32):
        if spec.value_range is None:
            scale = 1.0
        else:
            offset, high = spec.value_range
            scale = spec.scale * 255.0 / (high - offset)
    else:
        msg = (
            f"image dtype {image.dtype} is none that images are stored in: uint8 or uint16 counts, "
            "or float, int8, int16 or int32 measured values"
        )
        raise PreprocessError(msg)
    if image.size == 0:
        msg = "image is empty"
        raise PreprocessError(msg)
    pixels = pixel_kind(image.dtype)
    if spec.pixels not in (None, pixels):
        msg = (
            f"the image holds {PIXELS[pixels]} ({image.dtype}); the model was fitted on images of "
            f"{PIXELS[spec.pixels]} and reads no other kind: fit one on this camera's images"
        )
        raise PreprocessError(msg)
    if spec.roi is not None:
        x, y, w, h = spec.roi
        if spec.frame_size is not None and image.shape[:2] != spec.frame_size:
            msg = (
                f"the frame is {image.shape[1]}×{image.shape[0]}; the region of interest {list(spec.roi)} was drawn "
                f"on {spec.frame_size[1]}×{spec.frame_size[0]} frames (a new camera or resolution needs a new model)"
            )
            raise PreprocessError(msg)
        if y + h > image.shape[0] or x + w > image.shape[1]:
            msg = f"ROI {spec.roi} lies outside the {image.shape[1]}×{image.shape[0]} image"
            raise PreprocessError(msg)
        image = image[y : y + h, x : x + w]
    if spec.value_range is not None and image.dtype.kind == "f":
        image = _fill_missing(image, spec.value_range[0])
    image = _to_channels(image, spec.channels)
    h, w = spec.size
    if image.shape[:2] != (h, w):
        shrinking = image.shape[0] > h or image.shape[1] > w
        image = cv2.resize(
            image.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        )
        image = image.reshape(h, w, -1)
    out = image.astype(np.float32).transpose(2, 0, 1)
    out = (out - np.float32(offset)) * np.float32(scale) if offset else out * np.float32(scale)
    if not np.isfinite(out).all():
        msg = "image contains NaN or infinite values"
        raise PreprocessError(msg)
    return _normalise(out, spec, per_channel=True)


def preprocess_vector(vector: Sequence[float] | np.ndarray, spec: InputSpec) -> np.ndarray:
    """A sensor reading vector or window → float32 of ``spec.shape``; NaN is refused."""
    try:
        arr = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        msg = f"vector is not numeric: {exc}"
        raise PreprocessError(msg) from exc
    if arr.size != int(np.prod(spec.shape)):
        msg = f"vector has {arr.size} values ({arr.shape}), the model expects shape {spec.shape}"
        raise PreprocessError(msg)
    arr = arr.reshape(spec.shape)
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0].tolist()
        msg = f"vector contains NaN or infinite values (first at index {bad})"
        raise PreprocessError(msg)
    return _normalise(arr, spec, per_channel=False)


def _normalise(x: np.ndarray, spec: InputSpec, per_channel: bool) -> np.ndarray:
    if not spec.mean:
        return x
    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std or [1.0] * len(spec.mean), np.float32)
    if per_channel:
        mean, std = mean.reshape(-1, 1, 1), std.reshape(-1, 1, 1)
    else:
        mean, std = mean.reshape(x.shape), std.reshape(x.shape)
    return (x - mean) / std


def preprocess(sample: np.ndarray, spec: InputSpec) -> np.ndarray:
    return preprocess_image(sample, spec) if spec.kind == "image" else preprocess_vector(sample, spec)


def preprocess_batch(samples: Sequence[np.ndarray], spec: InputSpec) -> np.ndarray:
    return np.stack([preprocess(s, spec) for s in samples]).astype(np.float32, copy=False)
