"""Uploaded files: read with a size limit, decoded as images; each refusal names the file."""

from __future__ import annotations

import cv2
import numpy as np
from fastapi import UploadFile

from appliance.errors import TooLarge, Unreadable

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # one image
MAX_BUNDLE_BYTES = 200 * 1024 * 1024  # a model bundle or a zip of images


async def read_upload(file: UploadFile, limit: int) -> bytes:
    data = await file.read(limit + 1)
    if len(data) > limit:
        msg = f"upload larger than {limit // (1024 * 1024)} MiB"
        raise TooLarge(msg)
    return data


async def read_image(file: UploadFile) -> np.ndarray:
    """An uploaded image (PNG, JPEG, BMP, TIFF; 8 or 16 bit, grey or colour)."""
    data = await read_upload(file, MAX_UPLOAD_BYTES)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None:
        msg = f"{file.filename or 'upload'} is not a readable image"
        raise Unreadable(msg)
    return image
