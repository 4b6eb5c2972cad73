"""Uploaded files: read with a size limit, decoded as images; each refusal names the file."""

from __future__ import annotations

import io

import cv2
import numpy as np
from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from appliance.errors import TooLarge, Unreadable

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # one image
MAX_BUNDLE_BYTES = 200 * 1024 * 1024  # a model bundle or a zip of images
MAX_PIXELS = 64 * 1024 * 1024  # an image's width × height, checked from its header before decoding


def check_dimensions(data: bytes, name: str) -> None:
    """Refuse an image whose header declares more than MAX_PIXELS (a decompression bomb) before
    it is decoded; a header PIL cannot read is left for the decoder to refuse."""
    from PIL import Image

    limit = f"at most {MAX_PIXELS // 1024 // 1024} megapixels are inspected"
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError as exc:  # PIL's own, larger limit
        msg = f"{name} declares far too many pixels; {limit}"
        raise TooLarge(msg) from exc
    except Exception:  # noqa: BLE001  (not an image PIL knows: cv2 decides below)
        return
    if width * height > MAX_PIXELS:
        msg = f"{name} is {width}×{height} pixels; {limit}"
        raise TooLarge(msg)


async def read_upload(file: UploadFile, limit: int) -> bytes:
    data = await file.read(limit + 1)
    if len(data) > limit:
        msg = f"upload larger than {limit // (1024 * 1024)} MiB"
        raise TooLarge(msg)
    return data


async def read_image(file: UploadFile) -> np.ndarray:
    """An uploaded image (PNG, JPEG, BMP, TIFF; 8 or 16 bit, grey or colour)."""
    data = await read_upload(file, MAX_UPLOAD_BYTES)
    return await run_in_threadpool(decode_image, data, file.filename or "upload")  # off the event loop


def decode_image(data: bytes, name: str) -> np.ndarray:
    check_dimensions(data, name)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None:
        msg = f"{name} is not a readable image"
        raise Unreadable(msg)
    return image
